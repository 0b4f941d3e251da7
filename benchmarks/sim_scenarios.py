"""The adaptive controller against the best fixed limit, scenario by scenario (SIMULATED).

Each scenario of soc_async.testing.simulator.scenarios (metric noise, client time between
turns, mixed conversation shapes, grammar masks on the CPU, grammar compiles in the
waiting queue, an engine warming up) on the `tiny` profile, on a virtual clock: the
fixed limits of the sweep, then the controller from its start. Every figure is
simulated tokens per simulated second; seeded, so a rerun gives the same table.

    python benchmarks/sim_scenarios.py                  # the table of docs/performance.md
    python benchmarks/sim_scenarios.py --json out.json plain warm-up

tests/scheduler/test_controller_scenarios.py asserts each ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import msgspec
import structlog

from soc_async.testing.simulator.scenarios import SCENARIOS, compare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"scenarios (default all: {', '.join(SCENARIOS)})")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rows = [compare(name) for name in args.names or SCENARIOS]
    print("| scenario (simulated) | best fixed limit | its tok/s | adaptive tok/s | "
          "adaptive / best | preemptions, adaptive / best fixed | limit at the end |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.scenario}: {r.what} | {r.best_limit} | {r.best_tokens_per_s:,.0f} | "
              f"{r.adaptive_tokens_per_s:,.0f} | {r.ratio:.3f} | "
              f"{r.adaptive_preemptions} / {r.best_preemptions} | {r.final_limit} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(msgspec.to_builtins(rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
