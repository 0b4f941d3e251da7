"""`soc-async bench` through the per-engine wiring against eight simulated engines, one 2x slower.

SIMULATED engines (eight `tiny` ones, docs/simulator.md, each a process of its own behind
vLLM's HTTP API, at real time), the real `soc-async bench` command line: its fixed
phases at 8 and 16 per engine (totals of 64 and 128), its adaptive phase a controller per
engine over [8, 16]. Unlike benchmarks/sim_gateway.py, which reads each engine's counters
against its own simulated clock, the bench reads real seconds, as it does against vLLM:
the machine's load is in every figure, alike for every phase of a run.

    python benchmarks/sim_bench.py                       # 3 runs, the table of docs/performance.md
    python benchmarks/sim_bench.py --runs 1 --conversations 128 --max-turns 4   # the test's size

Each run prints the adaptive phase against the best fixed one three ways: whole phases
(the slow engine's conversations finish last, alone, in every phase), steady windows
(the limit full, no tail) and settled windows (the steady ones less the controller's
first decisions, the same seconds left out of every phase).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from soc_async.testing.simulator.chats import engine_processes

ENGINES, SLOW = 8, 7
PER_ENGINE = (8, 16)


def one_run(urls: list[str], out: Path, conversations: int, max_turns: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "soc_async.cli", "bench"]
    argv += [a for url in urls for a in ("--endpoint", url)]
    argv += ["--concurrency", ",".join(str(c * ENGINES) for c in PER_ENGINE),
             "--conversations", str(conversations), "--max-turns", str(max_turns),
             "--out", str(out)]  # fmt: skip
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench.log"
    with log.open("w") as f:
        done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"soc-async bench exited {done.returncode}: {tail}")
    data = json.loads((out / "bench.json").read_text())
    s = data["summary"]
    adaptive = next(p for p in data["phases"] if p["phase"] == "adaptive")
    fixed = {p["concurrency"]: p for p in data["phases"] if p["phase"] == "pipeline"}
    return {
        "seconds": time.monotonic() - started,
        "whole": s["adaptive_vs_best"],
        "steady": s["adaptive_steady_vs_best"],
        "settled": s["adaptive_settled_vs_best"],
        "settle_s": data["settings"]["settle_s"],
        "best": {
            "whole": s["best_concurrency"],
            "steady": s["best_steady_concurrency"],
            "settled": s["best_settled_concurrency"],
        },
        "tokens_per_s": {
            str(c): [p["tokens_per_s"], p["steady_tokens_per_s"], p["settled_tokens_per_s"]]
            for c, p in [*fixed.items(), ("adaptive", adaptive)]
        },
        "windows_s": {str(c): [p["steady_s"], p["settled_s"]] for c, p in fixed.items()}
        | {"adaptive": [adaptive["steady_s"], adaptive["settled_s"]]},
        "preemptions": {str(c): p["preemptions"] for c, p in fixed.items()}
        | {"adaptive": adaptive["preemptions"]},
        "mean_limit": adaptive["mean_capacity"],
        "notes": data["notes"],
    }


def _fmt(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    spread = f" ({min(known):.2f}-{max(known):.2f})" if len(known) > 1 else ""
    return f"{statistics.median(known):.2f}{spread}" + ("" if len(known) == len(values) else "*")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--conversations", type=int, default=64 * ENGINES)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    runs = []
    with (
        engine_processes(ENGINES, slow={SLOW: 2.0}) as urls,
        tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp,
    ):
        for r in range(args.runs):
            run = one_run(urls, Path(tmp) / f"run{r}", args.conversations, args.max_turns)
            runs.append(run)
            rates = ", ".join(
                f"{k} {v[0]:,.0f}/{v[1] or 0:,.0f}/{v[2] or 0:,.0f}"
                for k, v in run["tokens_per_s"].items()
            )
            print(
                f"run {r + 1} ({run['seconds']:.0f} s): adaptive / best fixed: whole "
                f"{run['whole']:.3f}, steady {run['steady'] or float('nan'):.3f}, settled "
                f"{run['settled'] or float('nan'):.3f} (settle {run['settle_s']:g} s); tok/s "
                f"whole/steady/settled: {rates}; mean limit {run['mean_limit']:.1f}; "
                f"preemptions {run['preemptions']}",
                flush=True,
            )
    print("\n| adaptive / best fixed | whole phases | steady windows | settled windows |")
    print("|---|---:|---:|---:|")
    print(
        f"| {args.runs} runs, median (range) | {_fmt([r['whole'] for r in runs])} | "
        f"{_fmt([r['steady'] for r in runs])} | {_fmt([r['settled'] for r in runs])} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
