"""``soc-async serve``: vLLM engines in the foreground until a signal, laid out over the GPUs."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from soc_async.commands.options import add_verbose
from soc_async.config import KV_CACHE_DTYPES


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="vLLM engines on this machine, in the foreground",
        description="Start vLLM on this machine and keep it up until Ctrl-C. With GPUs the "
        "layout comes from the model's config.json unless --tp says otherwise: one engine "
        "per GPU when the model fits one, else the smallest tensor-parallel size that "
        "fits, and as many engines as the GPUs allow, on ports PORT, PORT+10, ... An "
        "engine that dies is restarted (--max-restarts). Arguments after -- go to vLLM.",
    )
    p.add_argument(
        "--model",
        default="",
        help="a Hugging Face name (in the HF cache) or a checkpoint directory (default: the "
        "embedded CPU model)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="the first engine's port; the next engines take PORT+10, PORT+20, ... (default: 8000)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address the engines listen on (default: 127.0.0.1; 0.0.0.0 to reach them "
        "from other machines)",
    )
    p.add_argument(
        "--tp",
        type=int,
        metavar="N",
        help="tensor-parallel size of each engine (default: from the model's config.json)",
    )
    p.add_argument(
        "--engines",
        type=int,
        metavar="N",
        help="start at most N engines (default: as many as the GPUs hold)",
    )
    p.add_argument(
        "--dp-mode",
        choices=["engines", "vllm"],
        default="engines",
        help="engines: one server per engine, the client routes (default); "
        "vllm: one server with --data-parallel-size",
    )
    p.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPES,
        default="auto",
        help="vLLM's KV cache dtype (auto: the model's); fp8 holds about twice the tokens, "
        "at some accuracy (docs/deploy.md; default: auto)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu"],
        default="auto",
        help="auto: the GPUs when there are any, else the CPU; cpu: vLLM's CPU build, even "
        "beside GPUs (the same planner, endpoints file, readiness and restarts; default: auto)",
    )
    p.add_argument(
        "--gpus", metavar="IDS", help="the GPUs to use, e.g. 0,1 (default: every visible GPU)"
    )
    p.add_argument(
        "--gpu-memory-gib",
        type=float,
        metavar="G",
        help="memory per GPU in GiB, instead of what nvidia-smi reports",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        metavar="N",
        help="restarts of an engine that dies before it is given up (default: 3)",
    )
    p.add_argument(
        "--stagger-s",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds between engine starts while one is loading (default: 15)",
    )
    p.add_argument(
        "--restart-delay",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds before an engine that died is started again (default: 10)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="seconds an engine may take to load its model and answer /health (default: 1800)",
    )
    p.add_argument(
        "--endpoints-file",
        metavar="FILE",
        help="write the engines' URLs and batch sizes to FILE for `run`/`bench --endpoints-file`",
    )
    p.add_argument(
        "--log-dir", metavar="DIR", help="write each engine's log to DIR (default: temporary files)"
    )
    p.add_argument(
        "--vllm-cmd",
        metavar="CMD",
        help='the command that starts vLLM, e.g. "vllm serve" (default: vllm serve, or '
        "python -m vllm.entrypoints.openai.api_server on the CPU build)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the layout and the engines' command lines and exit; starts nothing",
    )
    p.add_argument(
        "vllm_args",
        nargs=argparse.REMAINDER,
        help="after --: more vLLM flags, passed to every engine after soc-async's own",
    )
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from soc_async.config import ServerConfig
    from soc_async.errors import InputError
    from soc_async.run.app import serve

    extra = [a for a in args.vllm_args if a != "--"]
    if args.device == "cpu" and (args.gpus or args.tp):
        raise InputError("--device cpu: --gpus and --tp are for GPUs; leave them out")
    if args.tp is not None and args.tp < 1:
        raise InputError(f"--tp: expected a positive tensor-parallel size, got {args.tp}")
    server = ServerConfig(
        model=args.model,
        port=args.port,
        extra_args=extra,
        kv_cache_dtype=args.kv_cache_dtype,
        startup_timeout_s=args.startup_timeout,
        tensor_parallel=args.tp,
        engines=args.engines,
        max_restarts=args.max_restarts,
        command=shlex.split(args.vllm_cmd) if args.vllm_cmd else [],
    )
    return serve(
        server,
        host=args.host,
        api_key=os.environ.get("SOC_ASYNC_API_KEY"),
        dp_mode=args.dp_mode,
        device=args.device,
        gpus=args.gpus,
        gpu_memory_gib=args.gpu_memory_gib,
        endpoints_file=args.endpoints_file,
        log_dir=args.log_dir,
        stagger_s=args.stagger_s,
        restart_delay_s=args.restart_delay,
        dry_run=args.dry_run,
    )


__all__ = ["handle", "register"]
