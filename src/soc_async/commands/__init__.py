"""The subcommands of ``soc-async``, one module each.

Every module here has ``register(sub)``: it adds its parser(s) to the subparsers ``sub``
and sets ``handler`` (a function of the parsed arguments returning an exit code) on each.
The work itself lives in the domain modules; a command module only turns arguments into
calls and results into lines for the person at the terminal. ``cli.py`` builds the parser
from :data:`ALL` and turns errors into exit codes.
"""

from __future__ import annotations

from types import ModuleType

from soc_async.commands import (
    annotate,
    bench,
    doctor,
    export,
    generate,
    merge,
    report,
    serve,
    smoke,
    status,
    view,
)

ALL: tuple[ModuleType, ...] = (
    generate,
    status,
    serve,
    bench,
    merge,
    view,
    export,
    report,
    annotate,
    smoke,
    doctor,
)

__all__ = ["ALL"]
