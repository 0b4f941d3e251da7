"""``soc-async merge``: the shard directories of one run joined into one dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from soc_async.errors import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="join the shard directories of one run into one dataset",
        description="Join the shard directories of one run (a job array) into one dataset.",
    )
    p.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="the shard run directories of one run (each written with --shard I/N)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the merged run directory to write (new or empty)",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="merge even if some shards of the run are not given (they are listed as missing)",
    )
    p.add_argument(
        "--near-duplicates",
        choices=("drop", "flag", "off"),
        default=None,
        help="what to do with a card or experience that nearly copies one in another shard "
        "(default: the run config's merge.near_duplicates, drop)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """The ``merge`` command; errors are raised as :class:`RunDirError` (exit code 2)."""
    from soc_async.merge import merge

    summary = merge(
        args.dirs,
        args.out,
        allow_partial=args.allow_partial,
        near_duplicates_action=getattr(args, "near_duplicates", None),
    )
    for where in summary.torn:
        print(f"soc-async merge: warning: left out a torn last line at {where}", file=sys.stderr)
    if summary.missing:
        print(
            f"soc-async merge: warning: shard(s) {', '.join(summary.missing)} missing",
            file=sys.stderr,
        )
    print(summary.line(Path(args.out)))
    return EXIT_OK


__all__ = ["handle", "register"]
