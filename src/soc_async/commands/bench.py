"""``soc-async bench``: tokens/s of the chat stage against the server's ceiling."""

from __future__ import annotations

import argparse
from typing import Any

from soc_async.bench.session import DEFAULT_CONVERSATIONS, DEFAULT_TURNS
from soc_async.commands.options import add_server_options, add_verbose


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="tokens/s of the chat stage against the server's ceiling, over a concurrency sweep",
        description=(
            "For each concurrency value: the chat stage alone (pipeline), then a synthetic "
            "load with the same prompt and output lengths (ceiling); then the adaptive "
            "controller. Writes bench.csv, bench.json and bench.png to --out."
        ),
    )
    add_server_options(p)
    p.add_argument(
        "--concurrency",
        default=None,
        metavar="N,N,...",
        help=(
            "fixed limits to sweep (default: sized from the server, up to its engine's "
            "batch size; 2,8 on the embedded CPU server)"
        ),
    )
    p.add_argument(
        "--conversations",
        type=int,
        default=None,
        metavar="N",
        help=(
            "conversations per value; at least the value itself are used "
            f"(default: {DEFAULT_CONVERSATIONS}; 2 on the embedded CPU server)"
        ),
    )
    p.add_argument(
        "--max-turns",
        type=int,
        default=None,
        metavar="N",
        help=f"turns per conversation (default: {DEFAULT_TURNS}; 2 on the embedded CPU server)",
    )
    p.add_argument(
        "--out",
        default="runs/bench",
        metavar="DIR",
        help="the directory for the CSV, JSON and PNG (default: runs/bench)",
    )
    p.add_argument("--no-grammar", action="store_true", help="send no grammars with the turns")
    p.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the adaptive controller over [min, max] of the sweep (default: yes)",
    )
    p.add_argument(
        "--shared-prefix",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the ceiling's prompts the pipeline's prefix-cached share (default: yes)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help=(
            "also run vLLM's own serving benchmark (vllm bench serve, from the installed "
            "vLLM) with the ceiling's shape at each value, and report pipeline / reference"
        ),
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help=(
            "also run the phases that size each loss of the pipeline (no turn grammar, no "
            "summaries, the pipeline's length spread) and print the loss breakdown"
        ),
    )
    p.add_argument("--seed", type=int, metavar="N", help="seed of the conversations (default: 0)")
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.bench.session import run

    return run(args)


__all__ = ["handle", "register"]
