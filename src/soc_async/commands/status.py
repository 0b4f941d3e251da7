"""``soc-async status DIR``: what a run directory holds, how fast it was written, and the
live view of a run another process is writing (``--watch``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from soc_async.errors import EXIT_FAILED, EXIT_OK, InputError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="counts, failures, faults and throughput of a run directory; --watch follows it",
        description="Summarize a run directory: records per stage, failures and rejections "
        "by reason, transport faults by cause and endpoint, throughput. Reads without "
        "locking, so it works on a directory a run (on this or another machine) is writing.",
    )
    p.add_argument("dir", metavar="DIR", help="a run directory")
    p.add_argument(
        "--watch",
        action="store_true",
        help="follow the run until it ends: the live panel on a terminal, JSON lines "
        "otherwise; exit 0 when it finished done, 1 when it ended otherwise",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the status as JSON (docs/status-schema.json); with --watch, one line "
        "per change",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between reads with --watch (default: 2)",
    )
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="draw tokens/s, requests in flight, the limit and per-engine load over the "
        "run's metrics.jsonl into this PNG",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from soc_async.monitor import status

    if args.interval <= 0:
        raise InputError(f"--interval: expected seconds > 0, got {args.interval}")
    path = Path(args.dir)
    if args.plot:
        from soc_async.monitor.plot import plot_run

        written = plot_run(path, Path(args.plot))
        print(f"soc-async: wrote {written}", file=sys.stderr)
        if not (args.watch or args.json):
            return EXIT_OK
    if args.watch:
        final = status.watch(
            path, console=Console(stderr=False), interval_s=args.interval, as_json=args.json
        )
        return EXIT_OK if final.state == "finished" and final.outcome == "done" else EXIT_FAILED
    result = status.collect(path)
    if args.json:
        sys.stdout.buffer.write(status.encode(result) + b"\n")
        sys.stdout.flush()
    else:
        Console().print(status.render(result))
    return EXIT_OK


__all__ = ["handle", "register"]
