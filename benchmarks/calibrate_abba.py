"""The ceiling against vLLM's own benchmark in alternating order, on one server.

`soc-async bench --reference` runs the ceiling and then vLLM's benchmark once each; on a
machine shared with other work the two phases can see different loads, and a single pair
then says more about the machine than about the two methods. This script runs the same
two, shaped alike, in the order given (default C,R,R,C: a drift in the machine's load
that is linear in time cancels out of the two means), each with fresh prompts, and prints
one JSON line per phase: output tokens/s (whole and steady window), the prefix-cache hit
rate, the load average before and after, and, for the embedded server it starts itself,
the CPU seconds of the server's process tree (so tokens per server CPU-second).

    python benchmarks/calibrate_abba.py                     # embedded CPU server, C=8
    python benchmarks/calibrate_abba.py --endpoint http://127.0.0.1:8000 --order C,R,C,R
    python benchmarks/calibrate_abba.py --prompt 2600 --cached 2048 --output 191 \\
        --requests 52 --concurrency 8

The default shape is the C=8 pipeline phase of docs/performance.md (2,600-token prompts
of which 16 blocks of 128 cached, 191 output tokens, 52 requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from soc_async import config as config_mod
from soc_async.bench import load, reference, sizing
from soc_async.bench.live import BenchView
from soc_async.bench.results import BenchSettings

# The bench's own sweep state: the same ceiling and reference phases as `soc-async bench`.
from soc_async.bench.runner import _calibrate
from soc_async.bench.sweep import Sweep
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters


def _tree_cpu(pid: int | None) -> float | None:
    """CPU seconds of process ``pid`` and its descendants (psutil); None without either."""
    if pid is None:
        return None
    try:
        import psutil
    except ImportError:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


@contextlib.contextmanager
def _server(endpoint: str | None) -> Iterator[tuple[str, int | None, bool]]:
    """(base URL, server pid or None, priority scheduling) of the server to measure."""
    if endpoint:
        yield endpoint, None, False
        return
    from soc_async.run.app import managed_engines

    config = config_mod.RunConfig()
    with managed_engines(config, config_mod.RunFacts.of(config)) as (facts, group):
        server = group.slots[0].server if group is not None else None
        pid = server.pid if server is not None else None
        yield facts.endpoints[0], pid, facts.send_priority(config)


async def _run(args: argparse.Namespace, url: str, pid: int | None, priority: bool) -> None:
    c = args.concurrency
    config = config_mod.override(
        config_mod.RunConfig(),
        {"endpoints": [url], "concurrency.fixed": c, "client.send_priority": priority},
    )
    async with aiohttp.ClientSession() as session:
        sweep = Sweep(config, BenchSettings(concurrency=[c]), session, BenchView(enabled=False))
        async with ModelGateway(config, RunCounters()) as gateway:
            fit = await _calibrate(sweep, gateway, gateway.model)
        block = (await sizing.read_server_facts(session, url)).block_size
        prompt, shared = load.place_prefix(args.prompt, args.cached, block)
        shape = load.LoadShape(
            requests=args.requests, prompt_tokens=prompt, output_tokens=args.output,
            shared_tokens=shared,
        )  # fmt: skip
        module = reference.load_benchmark()
        if isinstance(module, str):
            raise SystemExit(module)
        for kind in args.order.split(","):
            load0, cpu0, t0 = os.getloadavg()[0], _tree_cpu(pid), time.monotonic()
            if kind == "C":
                result = await sweep.ceiling(c, config, shape.items(), fit)
            else:
                result = await sweep.reference(module, c, shape)
            if result is None:
                raise SystemExit("\n".join(sweep.notes))
            cpu1 = _tree_cpu(pid)
            server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
            row: dict[str, Any] = {
                "phase": "ceiling" if kind == "C" else "reference",
                "tokens_per_s": round(result.tokens_per_s, 2),
                "steady_tokens_per_s": round(result.steady_tokens_per_s or 0.0, 2),
                "seconds": round(time.monotonic() - t0, 1),
                "prefix_hit_rate": result.prefix_hit_rate,
                "mean_prompt_tokens": result.mean_prompt_tokens,
                "output_tokens": result.output_tokens,
                "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
                "server_cpu_s": round(server_cpu, 1) if server_cpu else None,
                "tokens_per_server_cpu_s": (
                    round(result.output_tokens / server_cpu, 2) if server_cpu else None
                ),
            }
            print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="a running server (default: start the embedded one)")
    p.add_argument("--order", default="C,R,R,C", help="C: the ceiling, R: vLLM's benchmark")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=52)
    p.add_argument("--prompt", type=float, default=2600.0, help="mean prompt tokens")
    p.add_argument("--cached", type=float, default=2048.0, help="of which prefix-cached")
    p.add_argument("--output", type=int, default=191, help="output tokens per request")
    args = p.parse_args()
    with _server(args.endpoint) as (url, pid, priority):
        asyncio.run(_run(args, url, pid, priority))


if __name__ == "__main__":
    main()
