"""``soc-async annotate DIR``: people rate a run's conversations, or compare two runs blind."""

from __future__ import annotations

import argparse
from typing import Any

from soc_async.commands.options import add_verbose
from soc_async.errors import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "annotate",
        help="rate a run's conversations in the browser (or two runs side by side, blind)",
        description=(
            "Serve a page where people rate a stratified sample of DIR's conversations on a "
            "rubric, keyboard first; with --compare, pairs of conversations of DIR and B, "
            "sides hidden. Answers are appended to DIR/annotations.jsonl; the plan is kept "
            "in DIR, so every rater (and a restarted server) rates the same sample. "
            "`soc-async report DIR` measures them. docs/annotate.md explains the rubric, "
            "the plan, blind comparison and agreement."
        ),
    )
    p.add_argument("dir", metavar="DIR", help="a run directory")
    p.add_argument("--compare", metavar="B", help="blind A/B: pair DIR's conversations with B's")
    p.add_argument("--rubric", metavar="FILE", help="rubric TOML (default: the built-in one)")
    p.add_argument(
        "--sample", type=int, metavar="N", help="conversations (or pairs) in the plan (default: 40)"
    )
    p.add_argument(
        "--overlap",
        type=float,
        metavar="F",
        help="fraction of the sample shown to every rater, for agreement (default: 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="the plan's seed (default: 0)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; elsewhere the URL carries a token)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8010,
        metavar="PORT",
        help="the port (0: any free one; default: 8010)",
    )
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.annotate.rubric import load_rubric
    from soc_async.annotate.server import open_session, run_server

    rubric = load_rubric(args.rubric)
    session = open_session(
        args.dir,
        rubric=rubric,
        compare=args.compare,
        sample=args.sample,
        overlap=args.overlap,
        seed=args.seed,
    )
    plan = session.plan
    shared = sum(i.shared for i in plan.items)
    what = "pairs" if plan.mode == "ab" else "conversations"

    def ready(url: str) -> None:
        print(
            f"annotate: {len(plan.items)} {what} ({shared} shown to every rater), rubric "
            f"{rubric.version}, {len(session.answers)} answers so far; {session.plan_note}",
            flush=True,
        )
        print(f"annotate: open {url} (Ctrl-C stops)", flush=True)

    run_server(session, host=args.host, port=args.port, on_ready=ready)
    return EXIT_OK


__all__ = ["handle", "register"]
