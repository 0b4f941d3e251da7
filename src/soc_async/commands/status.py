"""``soc-async status DIR``: what a run directory holds, and how fast it was written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from soc_async.errors import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="counts, failures by reason, throughput of a run directory",
        description="Summarize a run directory: records per stage, failures by reason, "
        "tokens and throughput from its metrics.",
    )
    p.add_argument("dir", metavar="DIR", help="a run directory")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from soc_async import status

    Console().print(status.render(status.collect(Path(args.dir))))
    return EXIT_OK


__all__ = ["handle", "register"]
