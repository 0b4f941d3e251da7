"""The run's own gateway, a limit per engine, against eight simulated engines over HTTP.

SIMULATED: eight `tiny` engines (docs/simulator.md), each in a process of its own behind
vLLM's HTTP API, one of them twice as slow, driven through `soc_async.run.gateway.
ModelGateway` exactly as `run` and `bench` wire it (a limiter and a controller per
engine, each on its own engine's /metrics). Throughput is each engine's generated
tokens per simulated second (its /metrics against its own clock, /server_info), so the
client machine's load does not scale the figures, though a client that cannot keep up
lowers them all.

    python benchmarks/sim_gateway.py                 # 3 runs, the table of docs/performance.md
    python benchmarks/sim_gateway.py --runs 1 --json out.json

Each run: fixed limits of 16 and 20 per engine (the knee and past it; the seven fast
engines' best is the limit best for them together, the slow engine's its own), then
adaptive from 8 per engine; the same phases as tests/test_gateway_sim.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from typing import Any

import aiohttp
import anyio
import structlog

from soc_async import config as config_mod
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters
from soc_async.testing.simulator.chats import engine_processes, measure_load, wait_idle
from soc_async.testing.simulator.workload import ChatShape

ENGINES, SLOW, SCALE = 8, 7, 1.0
WARM_S, MEASURE_S = 7.0, 6.0  # every phase alike, so none is favoured by a longer warm-up
SHAPE = ChatShape(system_tokens=400, fixed_tokens=600, reply_tokens=100, tail_tokens=40, turns=6)
LIVE = 32
SWEEP = (16, 20)


async def phase(
    urls: list[str], concurrency: dict[str, Any], warm_s: float, measure_s: float, tag: str
) -> tuple[list[float], list[int]]:
    config = config_mod.from_dict(
        {
            "endpoints": urls,
            "concurrency": {"interval_s": 2.0 / SCALE, **concurrency},
            "client": {"ready_timeout_s": 30.0},
        }
    )
    async with aiohttp.ClientSession() as session:
        await wait_idle(session, urls)
        async with ModelGateway(config, RunCounters()) as gateway:
            each = await measure_load(
                gateway, session, urls, SHAPE, LIVE * ENGINES,
                warm_s=warm_s, measure_s=measure_s, tag=tag,
            )  # fmt: skip
            limits = [lim.capacity for lim in gateway.limiters.values()]
    return each, limits


async def one_run(urls: list[str], run: int) -> dict[str, Any]:
    fixed: dict[int, list[float]] = {}
    for limit in SWEEP:
        fixed[limit], _ = await phase(
            urls, {"fixed": limit * ENGINES}, WARM_S, MEASURE_S, f"r{run}f{limit}"
        )
    adaptive, limits = await phase(
        urls, {"initial": 8 * ENGINES, "min": ENGINES}, WARM_S, MEASURE_S, f"r{run}a"
    )
    fast = [i for i in range(ENGINES) if i != SLOW]
    top = max(SWEEP, key=lambda c: sum(fixed[c][i] for i in fast))
    best_limit = [top] * ENGINES
    best_limit[SLOW] = max(SWEEP, key=lambda c: fixed[c][SLOW])
    best = [fixed[best_limit[i]][i] for i in range(ENGINES)]
    return {
        "fixed": {str(c): v for c, v in fixed.items()},
        "best": best,
        "best_limit": best_limit,
        "adaptive": adaptive,
        "final_limits": limits,
        "ratio": sum(adaptive) / sum(best),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--time-scale", type=float, default=SCALE, help="simulated s per real s")
    args = p.parse_args(argv)
    globals()["SCALE"] = args.time_scale
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runs = []
    with engine_processes(ENGINES, time_scale=args.time_scale, slow={SLOW: 2.0}) as urls:
        for r in range(args.runs):
            runs.append(anyio.run(one_run, urls, r))
            print(f"run {r + 1}: adaptive / best fixed = {runs[-1]['ratio']:.3f}", flush=True)
    print("\n| engine | best fixed limit | its tok/s | adaptive tok/s | adaptive / best | "
          "limit at the end |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|")
    for i in range(ENGINES):
        name = f"{i} (2x slower)" if i == SLOW else str(i)
        limits = "/".join(str(run["best_limit"][i]) for run in runs)
        best = statistics.median(run["best"][i] for run in runs)
        got = statistics.median(run["adaptive"][i] for run in runs)
        ends = ", ".join(str(run["final_limits"][i]) for run in runs)
        print(f"| {name} | {limits} | {best:,.0f} | {got:,.0f} | {got / best:.2f} | {ends} |")
    ratios = [run["ratio"] for run in runs]
    total_best = statistics.median(sum(run["best"]) for run in runs)
    total = statistics.median(sum(run["adaptive"]) for run in runs)
    print(f"| all | | {total_best:,.0f} | {total:,.0f} | {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}) | |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"runs": runs, "engines": ENGINES, "time_scale": args.time_scale}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
