"""``soc-async view``: a static conversation viewer of a run directory, optionally served."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from soc_async.errors import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "view",
        help="write a static conversation viewer of a run directory (opens from file://)",
        description="Write a static site to browse a run directory's conversations as chats, "
        "with their personas, experience and failures. It needs no network: open "
        "OUT/index.html, or --serve it on 127.0.0.1.",
    )
    p.add_argument("dir", metavar="DIR", help="a run directory")
    p.add_argument("--out", metavar="OUT", help="the site directory to write (default: DIR/site)")
    p.add_argument("--serve", action="store_true", help="serve the site on 127.0.0.1 until Ctrl-C")
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        metavar="PORT",
        help="the port of --serve (0: any free one; default: 8000)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.view import build_site, serve

    out = Path(args.out) if args.out else Path(args.dir) / "site"
    summary = build_site(args.dir, out)
    print(summary.line())
    if args.serve:
        serve(out, port=args.port)
    return EXIT_OK


__all__ = ["handle", "register"]
