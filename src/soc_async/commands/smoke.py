"""``soc-async smoke``: the preflight, one engine on one GPU, 50 conversations, a short sweep
around the KV cache's capacity, the figures, within a time budget."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from soc_async.commands.options import add_verbose


def register(sub: Any) -> None:
    p = sub.add_parser(
        "smoke",
        help="try a model on one GPU: a short run and sweep, tokens/s and concurrency",
        description="Check this machine (as soc-async doctor does), start one vLLM engine for "
        "--model on one GPU, run a small generation against it and a short bench sweep "
        "around the requests its KV cache holds, then print tokens/s, the prefix-cache hit "
        "rate and the recommended concurrency, within --budget-s (a phase that would not "
        "fit is stopped or left out; smoke.json is rewritten after each). Arguments after "
        "-- go to vLLM.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="a Hugging Face name (in the HF cache) or a checkpoint directory",
    )
    p.add_argument(
        "--out",
        default="runs/smoke",
        metavar="DIR",
        help="the directory for the run, the sweep and smoke.json (default: runs/smoke)",
    )
    p.add_argument(
        "--gpus", metavar="IDS", help="the GPUs to use, e.g. 0,1 (default: the first visible GPU)"
    )
    p.add_argument(
        "--tp",
        type=int,
        metavar="N",
        help="tensor-parallel size (default: from the model's config.json)",
    )
    p.add_argument(
        "--chats",
        type=int,
        default=50,
        metavar="N",
        help="conversations of the short run (default: 50)",
    )
    p.add_argument(
        "--max-turns",
        type=int,
        default=12,
        metavar="N",
        help="at most N turns per conversation of the short run (default: 12)",
    )
    p.add_argument(
        "--sweep",
        metavar="N,N,...",
        help="the concurrency levels of the sweep (default: around the requests the KV cache "
        "holds)",
    )
    p.add_argument(
        "--bench-turns",
        type=int,
        default=4,
        metavar="N",
        help="turns per conversation of the sweep (default: 4)",
    )
    p.add_argument(
        "--vllm-cmd",
        metavar="CMD",
        help='the command that starts vLLM, e.g. "vllm serve" (default: vllm serve)',
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds the whole smoke may take, the engine's start included; phases that "
        "would not fit are left out (default: 600)",
    )
    p.add_argument(
        "vllm_args",
        nargs=argparse.REMAINDER,
        help="after --: more vLLM flags, passed to the engine after soc-async's own",
    )
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.bench.session import parse_concurrency
    from soc_async.errors import EXIT_OK, InputError
    from soc_async.run.smoke import render, run_smoke

    if args.budget_s <= 0:
        raise InputError(f"--budget-s: expected a positive number of seconds, got {args.budget_s}")

    report = run_smoke(
        args.model,
        Path(args.out),
        gpus=args.gpus,
        tp=args.tp,
        conversations=args.chats,
        max_turns=args.max_turns,
        sweep=parse_concurrency(args.sweep) if args.sweep else None,
        bench_turns=args.bench_turns,
        extra_args=[a for a in args.vllm_args if a != "--"],
        command=shlex.split(args.vllm_cmd) if args.vllm_cmd else None,
        budget_s=args.budget_s,
    )
    print(render(report), flush=True)
    print(f"wrote {Path(args.out) / 'smoke.json'}", flush=True)
    return EXIT_OK


__all__ = ["handle", "register"]
