"""``python -m soc_async.testing.simulator``: simulated vLLM engines over HTTP.

    python -m soc_async.testing.simulator --profile h100-8b --engines 8 --time-scale 20 \\
        --slow 7:2.0 --reply soc_async.testing.scripted:reply

prints ``listening on URL`` once per engine (consecutive ports from ``--port``, or free
ones) and serves until SIGINT or SIGTERM. docs/simulator.md describes the model.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal

from soc_async.testing.simulator.profiles import PROFILES, profile
from soc_async.testing.simulator.server import Reply, SimServer, serve_forever


def _reply(spec: str) -> Reply:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--reply: expected module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def _slowdowns(specs: list[str], engines: int) -> list[float]:
    out = [1.0] * engines
    for spec in specs:
        index, _, factor = spec.partition(":")
        try:
            i, f = int(index), float(factor)
        except ValueError:
            raise SystemExit(f"--slow: expected ENGINE:FACTOR like 7:2.0, got {spec!r}") from None
        if not 0 <= i < engines or f <= 0:
            raise SystemExit(f"--slow {spec}: engine 0..{engines - 1}, factor > 0")
        out[i] = f
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m soc_async.testing.simulator",
        description="Simulated vLLM engines (continuous batching, KV cache, prefix cache).",
    )
    p.add_argument("--profile", default="h100-8b", choices=sorted(PROFILES))
    p.add_argument("--engines", type=int, default=1, help="engines, one port each")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated s per real s")
    p.add_argument("--slow", action="append", default=[], metavar="ENGINE:FACTOR")
    p.add_argument("--noise", type=float, default=0.0, help="sigma of a per-step factor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="served model name (default: the profile's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="first engine's port; 0: free ports")
    p.add_argument("--reply", default=None, help="module:function writing the answer")
    p.add_argument(
        "--grammar-s", type=float, default=0.0, help="simulated s to compile a request's grammar"
    )
    p.add_argument("--grammar-workers", type=int, default=4, help="grammar compile threads")
    p.add_argument(
        "--mask-s", type=float, default=0.0, help="simulated s of grammar mask per request a step"
    )
    p.add_argument(
        "--warmup-s", type=float, default=0.0, help="simulated s before the first step runs"
    )
    a = p.parse_args(argv)
    if a.engines < 1 or a.time_scale <= 0:
        raise SystemExit("--engines must be >= 1 and --time-scale > 0")
    if min(a.grammar_s, a.mask_s, a.warmup_s) < 0 or a.grammar_workers < 1:
        raise SystemExit("--grammar-s, --mask-s, --warmup-s must be >= 0, --grammar-workers >= 1")
    server = SimServer(
        [profile(a.profile)] * a.engines,
        time_scale=a.time_scale,
        slowdowns=_slowdowns(a.slow, a.engines),
        noise=a.noise,
        seed=a.seed,
        model=a.model,
        host=a.host,
        port=a.port,
        reply=_reply(a.reply) if a.reply else None,
        grammar_s=a.grammar_s,
        grammar_workers=a.grammar_workers,
        mask_s=a.mask_s,
        warmup_s=a.warmup_s,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_forever(server, stop)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(run())
    else:
        uvloop.run(run())


if __name__ == "__main__":
    main()
