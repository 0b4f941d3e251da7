"""The KV levers on the simulated engines: an fp8 KV cache, and more of the GPU for vLLM.

The knee of the chat-turn curve is where the running requests fill the KV cache
(docs/performance.md, "Simulated GPU engines"), so the two settings that grow the cache
move it: ``--kv-cache-dtype fp8`` (each token's K and V in half the bytes, so about twice
the tokens, and half the bytes read per token of context in every decode step) and
``--gpu-memory-utilization 0.95`` instead of vLLM's 0.9 (the extra 5% of the GPUs'
memory goes to the cache). For each profile and each lever this sweeps fixed limits
around the knee the cache predicts and prints the knee (the best fixed limit) and its
tokens/s. SIMULATED figures (soc_async.testing.simulator, virtual clock), the same
load and windows as benchmarks/sim_controller.py, not measurements of a GPU.

    python benchmarks/sim_kv_levers.py                   # h100-8b and h200-8b
    python benchmarks/sim_kv_levers.py --profile h100-8b --json kv.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import structlog

from soc_async.testing.simulator import PROFILES
from soc_async.testing.simulator.profiles import SimProfile, with_kv_levers
from soc_async.testing.simulator.workload import run_scenario
from soc_async.testing.virtual_clock import run_virtual

# The base profiles' knees (sim_controller.py's curves): the sweep for a lever is this
# knee scaled by the lever's KV tokens, at these fractions of it.
KNEES = {"h100-8b": 96, "h200-8b": 176}
FRACTIONS = (0.75, 0.875, 0.9375, 1.0, 1.0625, 1.125, 1.25)
LEVERS = (("auto", 0.9), ("auto", 0.95), ("fp8", 0.9), ("fp8", 0.95))


def limits_for(base: SimProfile, lever: SimProfile, knee: int) -> list[int]:
    """Fixed limits around the knee the lever's cache predicts, multiples of 4."""
    scale = lever.kv_tokens / base.kv_tokens
    return sorted({max(4, round(knee * scale * f / 4) * 4) for f in FRACTIONS})


def point(profile: SimProfile, limit: int, common: dict[str, Any]) -> dict[str, Any]:
    r = run_virtual(run_scenario([profile], limits=limit, **common))
    e = r.engines[0]
    return {
        "limit": limit,
        "tokens_per_s": r.tokens_per_s,
        "preemptions": r.preemptions,
        "prefix_hit_rate": e.prefix_hit_rate,
        "mean_running": e.mean_running,
        "mean_kv_usage": e.mean_kv_usage,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", action="append", choices=sorted(KNEES), help="default: all")
    p.add_argument("--json", help="write every point here")
    a = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    common = {"conversations": 4096, "duration_s": 900.0, "measure_from_s": 450.0, "seed": 1}
    t0 = time.process_time()
    out: list[dict[str, Any]] = []
    for name in a.profile or sorted(KNEES):
        base = PROFILES[name]
        for dtype, share in LEVERS:
            lever = with_kv_levers(base, kv_cache_dtype=dtype, gpu_memory_utilization=share)
            points = []
            for limit in limits_for(base, lever, KNEES[name]):
                points.append(point(lever, limit, common))
                print(f"  {lever.name} C={limit}: {points[-1]['tokens_per_s']:,.0f} tok/s",
                      file=sys.stderr)  # fmt: skip
            top = max(points, key=lambda q: q["tokens_per_s"])
            out.append({
                "profile": name, "kv_cache_dtype": dtype, "gpu_memory_utilization": share,
                "kv_tokens": lever.kv_tokens, "knee": top["limit"],
                "tokens_per_s": top["tokens_per_s"], "points": points,
            })  # fmt: skip
    print("\n| profile (SIMULATED) | KV cache dtype | gpu_memory_utilization | KV tokens "
          "| knee (best fixed limit) | tok/s there | vs the defaults |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in out:
        base_rate = next(
            r["tokens_per_s"] for r in out
            if r["profile"] == row["profile"] and r["kv_cache_dtype"] == "auto"
            and r["gpu_memory_utilization"] == 0.9
        )  # fmt: skip
        print(
            f"| {row['profile']} | {row['kv_cache_dtype']} | {row['gpu_memory_utilization']:g} "
            f"| {row['kv_tokens']:,} | {row['knee']} | {row['tokens_per_s']:,.0f} "
            f"| {row['tokens_per_s'] / base_rate:.2f}x |"
        )
    print(f"\n({time.process_time() - t0:.0f} s of CPU)", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
