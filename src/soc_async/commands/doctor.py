"""``soc-async doctor``: the preflight checks of a GPU job, on a login node or in the job."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from soc_async.commands.options import add_verbose


def register(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine for a job: driver, CUDA, vLLM, open files, cache, disk, ports",
        description="Check what stops a GPU job in its first minute: the NVIDIA driver "
        "against the CUDA the installed torch is built for, torch.cuda.is_available(), "
        "the vLLM version, the open-file limits against the concurrency, the model in "
        "the Hugging Face cache when HF_HUB_OFFLINE is set, free disk for the run "
        "directory and the cache, the engines' ports, flock in the run directory. One "
        "line per problem and exit 2; a table and exit 0 when all is well.",
    )
    p.add_argument("--model", default="", help="the model the job serves (name or path)")
    p.add_argument("--out", default="runs", metavar="DIR", help="the run directory (runs)")
    p.add_argument("--port", type=int, default=8000, help="the first engine's port (8000)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--engines", type=int, metavar="N", help="engines (default: one per GPU)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1024,
        metavar="N",
        help="requests in flight the client will hold (1024: 8 engines x 128)",
    )
    add_verbose(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console
    from rich.table import Table

    from soc_async.errors import EXIT_OK, InputError
    from soc_async.llm import preflight
    from soc_async.llm.node import visible_gpus
    from soc_async.llm.plan import PORT_STEP

    if args.concurrency < 1:
        raise InputError(f"--concurrency: expected a positive number, got {args.concurrency}")
    facts = preflight.gather()
    if not facts.gpu:
        print("no NVIDIA GPU on this machine: driver and CUDA checks skipped", flush=True)
    engines = args.engines or (len(visible_gpus().ids) if facts.gpu else 0) or 1
    ports = [args.port + k * PORT_STEP for k in range(engines)] if args.port else []
    findings = preflight.run_checks(
        facts,
        model=args.model,
        in_flight=args.concurrency,
        run_dir=Path(args.out),
        host=args.host,
        ports=ports,
        env=os.environ,
    )
    table = Table(title="soc-async doctor", title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(f.check, f.status, f.detail)
    if not any(f.status == "problem" for f in findings):
        Console(width=max(100, Console().width), soft_wrap=False).print(table)
        return EXIT_OK
    for f in findings:
        if f.status == "warning":
            print(f"soc-async: {f.check} (warning): {f.detail}", flush=True)
    preflight.enforce(findings, "doctor", log_warnings=False)
    return EXIT_OK  # enforce raised


__all__ = ["handle", "register"]
