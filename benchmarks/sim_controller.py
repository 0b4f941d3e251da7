"""Simulated throughput curves and the adaptive controller's convergence (docs/performance.md).

Everything here runs on the simulated vLLM engine (soc_async.testing.simulator) on a
virtual clock: chat-turn load shaped like the chat stage's, through the project's
PriorityLimiter and AdaptiveController, one limiter and controller per engine. The
figures are simulated GPU time and simulated tokens, not measurements of a GPU.

    python benchmarks/sim_controller.py                  # all of it, ~10 min on 2 cores
    python benchmarks/sim_controller.py --quick          # fewer points, shorter runs
    python benchmarks/sim_controller.py --json out.json --plot docs/sim-curves.png

Prints two markdown tables: tokens/s against a fixed limit per profile (the curves),
and the controller against the best fixed limit per scenario.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import msgspec
import structlog

from soc_async.scheduler import Bounds
from soc_async.testing.simulator import PROFILES
from soc_async.testing.simulator.workload import ScenarioResult, run_scenario
from soc_async.testing.virtual_clock import run_virtual

BOUNDS = Bounds(min=4, max=4096)
CURVES = {
    "h100-8b": (16, 32, 48, 64, 80, 88, 96, 112, 128, 192, 256, 512),
    "h200-8b": (32, 64, 96, 128, 144, 160, 176, 192, 224, 256, 512),
    "4xh100-70b": (16, 32, 64, 80, 96, 104, 112, 128, 192, 256),
}
QUICK = {
    "h100-8b": (32, 64, 88, 96, 128, 256),
    "h200-8b": (64, 128, 160, 192, 256),
    "4xh100-70b": (32, 64, 96, 112, 128),
}


def run(profile: str, limit: int, *, adaptive: bool, engines: int = 1, **kw: Any) -> ScenarioResult:
    return run_virtual(
        run_scenario(
            [PROFILES[profile]] * engines,
            limits=limit,
            adaptive=BOUNDS if adaptive else None,
            **kw,
        )
    )


def curve(profile: str, limits: tuple[int, ...], *, slowdown: float, **kw: Any) -> dict[int, Any]:
    out = {}
    for c in limits:
        r = run(profile, c, adaptive=False, slowdowns=[slowdown], **kw)
        e = r.engines[0]
        out[c] = {
            "tokens_per_s": r.tokens_per_s,
            "preemptions": r.preemptions,
            "prefix_hit_rate": e.prefix_hit_rate,
            "mean_running": e.mean_running,
            "mean_kv_usage": e.mean_kv_usage,
        }
        print(f"  {profile} x{slowdown:g} C={c}: {r.tokens_per_s:,.0f} tok/s", file=sys.stderr)
    return out


def best(points: dict[int, Any]) -> tuple[int, dict[str, Any]]:
    return max(points.items(), key=lambda kv: kv[1]["tokens_per_s"])


def scenario_row(
    name: str, result: ScenarioResult, best_limit: str, best_rate: float, best_pre: float
) -> dict[str, Any]:
    reached = result.reached_s(0.9 * best_rate, 30.0, span=3)
    caps = [c for e in result.engines for _, c in e.capacity[-1:]]
    return {
        "scenario": name,
        "best_fixed": best_limit,
        "best_tokens_per_s": best_rate,
        "adaptive_tokens_per_s": result.tokens_per_s,
        "ratio": result.tokens_per_s / best_rate,
        "reached_90pct_s": reached,
        "preemptions_adaptive": result.preemptions,
        "preemptions_best_fixed": best_pre,
        "final_limits": caps,
        "engines": [msgspec.to_builtins(e) | {"windows": None} for e in result.engines],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer points, shorter runs")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--plot", help="write the curves as a PNG here")
    a = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    grid = QUICK if a.quick else CURVES
    dur, frm = (600.0, 300.0) if a.quick else (900.0, 450.0)
    common = {"conversations": 4096, "duration_s": dur, "measure_from_s": frm, "seed": 1}
    t0 = time.process_time()

    curves = {name: curve(name, grid[name], slowdown=1.0, **common) for name in grid}
    slow = curve("h100-8b", (64, 80, 88, 96), slowdown=2.0, **common)

    rows = []
    b_limit, b = best(curves["h100-8b"])
    for start in (4, 4096):
        r = run("h100-8b", start, adaptive=True, **common)
        rows.append(
            scenario_row(
                f"h100-8b from {start}", r, str(b_limit), b["tokens_per_s"], b["preemptions"]
            )
        )
    for name in ("h200-8b", "4xh100-70b"):
        limit, top = best(curves[name])
        r = run(name, 32, adaptive=True, **common)
        rows.append(
            scenario_row(f"{name} from 32", r, str(limit), top["tokens_per_s"], top["preemptions"])
        )
    s_limit, s = best(slow)
    ideal = 7 * b["tokens_per_s"] + s["tokens_per_s"]
    eight = {"conversations": 256, "duration_s": 600.0, "measure_from_s": 300.0, "seed": 2}
    for shared in (False, True):
        r = run(
            "h100-8b",
            32,
            adaptive=True,
            engines=8,
            slowdowns=[1.0] * 7 + [2.0],
            shared_limit=shared,
            **eight,
        )
        label = "one limit for all" if shared else "a limit per engine"
        rows.append(
            scenario_row(
                f"8 x h100-8b, one 2x slower, {label}",
                r,
                f"{b_limit} (x7), {s_limit} (slow)",
                ideal,
                7 * b["preemptions"] + s["preemptions"],
            )
        )

    print("\n## Simulated tokens/s against a fixed limit\n")
    for name, points in curves.items():
        prof = PROFILES[name]
        print(f"{name}: {prof.description}; {prof.kv_tokens:,} KV tokens\n")
        print("| limit | tok/s | preemptions | prefix hits | running | KV usage |")
        print("|---:|---:|---:|---:|---:|---:|")
        for c, v in points.items():
            hit = v["prefix_hit_rate"] or 0.0
            print(
                f"| {c} | {v['tokens_per_s']:,.0f} | {v['preemptions']} | {hit:.0%} | "
                f"{v['mean_running']:.0f} | {v['mean_kv_usage']:.0%} |"
            )
        print()
    print("## The adaptive controller against the best fixed limit\n")
    print("| scenario | best fixed | its tok/s | adaptive tok/s | ratio | 90% held by | "
          "preemptions (adaptive / best fixed) | final limits |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        reached = f"{row['reached_90pct_s']:.0f} s" if row["reached_90pct_s"] is not None else "-"
        finals = ", ".join(str(c) for c in row["final_limits"])
        print(
            f"| {row['scenario']} | {row['best_fixed']} | {row['best_tokens_per_s']:,.0f} | "
            f"{row['adaptive_tokens_per_s']:,.0f} | {row['ratio']:.2f} | {reached} | "
            f"{row['preemptions_adaptive']} / {row['preemptions_best_fixed']} | {finals} |"
        )
    print(f"\n({time.process_time() - t0:.0f} s of CPU)", file=sys.stderr)

    if a.json:
        data = {"curves": curves, "slow_curve": slow, "scenarios": rows, "settings": common}
        with open(a.json, "w") as f:
            json.dump(data, f, indent=1, default=str)
    if a.plot:
        plot(curves, a.plot)
    return 0


def plot(curves: dict[str, dict[int, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        xs = list(points)
        ax.plot(xs, [points[c]["tokens_per_s"] for c in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("requests in flight (fixed limit)")
    ax.set_ylabel("output tokens/s (simulated)")
    ax.set_title("SIMULATED engines, chat-turn load (benchmarks/sim_controller.py)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
