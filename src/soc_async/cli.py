"""The ``soc-async`` command: the parser built from ``soc_async.commands``, and every
error turned into one line and an exit code, here and nowhere else.

Exit codes: 0 done, 1 the run failed, 2 bad usage or bad input, 130 interrupted after a
clean flush.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from soc_async import commands, logs
from soc_async.errors import EXIT_INTERRUPTED, InputError, SocError, first_error

DESCRIPTION = (
    "Write the Synthetic Online Conversations dataset against a vLLM server: personas, "
    "then experiences, then chats written turn by turn."
)
EPILOG = (
    "Exit codes: 0 done, 1 the run failed, 2 bad usage or bad input, "
    "130 interrupted after a clean flush (resume with: soc-async run --resume DIR)."
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2, like every input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="soc-async", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    for command in commands.ALL:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
    except SocError as exc:
        code = _report(exc)
    except BaseExceptionGroup as group:
        # Task groups wrap what their tasks raised: report our own error, if one is there.
        error = first_error(group)
        if isinstance(error, KeyboardInterrupt):
            code = _interrupted()
        elif isinstance(error, SocError):
            code = _report(error)
        else:
            raise
    except KeyboardInterrupt:
        code = _interrupted()
    sys.exit(code)


def _report(exc: SocError) -> int:
    print(f"soc-async: error: {exc}", file=sys.stderr)
    return exc.exit_code


def _interrupted() -> int:
    print("soc-async: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(verbose=getattr(args, "verbose", False))
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["build_parser", "main"]
