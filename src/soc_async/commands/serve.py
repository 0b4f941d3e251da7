"""``soc-async serve``: a local vLLM server in the foreground until a signal."""

from __future__ import annotations

import argparse
import os
from typing import Any

from soc_async.commands.options import add_verbose


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="a local vLLM server in the foreground",
        description="Start a vLLM server on this machine and keep it up until Ctrl-C. "
        "Arguments after -- go to vLLM unchanged.",
    )
    p.add_argument("--model", default="", help="name or path; default: the embedded CPU model")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- extra vLLM arguments")
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.app import serve

    extra = [a for a in args.vllm_args if a != "--"]
    return serve(
        model=args.model,
        host=args.host,
        port=args.port,
        extra=extra,
        api_key=os.environ.get("SOC_ASYNC_API_KEY"),
    )


__all__ = ["handle", "register"]
