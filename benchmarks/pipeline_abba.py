"""The pipeline against vLLM's own serving benchmark in ABBA order, on one server.

`soc-async bench --reference` runs the pipeline and vLLM's benchmark once each, minutes
apart; on a machine shared with other work a single pair says as much about the
machine's load as about the two. This script runs the bench's pipeline phase (P: the
real chat stage, staggered starts, the limit fixed at C) and vLLM's benchmark module
(R: imported from the installed vLLM, shaped like the first P phase's mean prompt,
cached share and output, as the bench's ``--reference`` does) in the order P,R,R,P
repeated ``--repeat`` times, so that a load drifting linearly over each group of four
cancels out of its two means. It prints one JSON line per phase (tokens/s, steady
tokens/s, the load average before and after, the server's CPU seconds when it started
the server) and a last line with pipeline / reference per group of four (steady
windows) and their median and range.

    python benchmarks/pipeline_abba.py                      # embedded CPU server, C=8
    python benchmarks/pipeline_abba.py --concurrency 8 --conversations 16 --max-turns 2
    python benchmarks/pipeline_abba.py --endpoint http://127.0.0.1:8000 --repeat 3
    python benchmarks/pipeline_abba.py --against no-priority   # B: one switch thrown

With ``--against`` B is the pipeline with one of `bench --breakdown`'s switches thrown
(no priority field, lockstep starts, the run's monitoring, the run's journal) instead
of vLLM's benchmark: a single breakdown run puts each variant at a different point of
the machine's drift, and alternating sizes one switch at a time.

Started without --endpoint it runs the embedded server with the config `soc-async run`
gives it (the embedded-cpu profile: turns of at most three 200-character messages);
`--profile default` measures the real-model defaults instead, whose 400-token turn cap
a 135M model often runs into (cut replies are retried).

Each phase rolls out its own conversations (none finds another's prompts cached) and
each reference draws fresh prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import aiohttp

# The server helpers of the ceiling's ABBA script: one way to start and measure it.
from calibrate_abba import _server, _tree_cpu  # type: ignore[import-not-found]

from soc_async import config as config_mod
from soc_async.bench import reference, sizing
from soc_async.bench.live import BenchView
from soc_async.bench.results import BenchSettings, PhaseResult

# The bench's own sweep state: the same pipeline and reference phases as `soc-async bench`.
from soc_async.bench.runner import _calibrate, ceiling_shape
from soc_async.bench.sweep import Sweep
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters


def _row(
    kind: str, result: PhaseResult, t0: float, load0: float, cpu: float | None
) -> dict[str, Any]:
    return {
        "phase": kind,
        "tokens_per_s": round(result.tokens_per_s, 2),
        "steady_tokens_per_s": round(result.steady_tokens_per_s or 0.0, 2),
        "occupancy": result.occupancy,
        "requests": result.requests,
        "mean_prompt_tokens": result.mean_prompt_tokens,
        "mean_completion_tokens": result.mean_completion_tokens,
        "prefix_hit_rate": result.prefix_hit_rate,
        "seconds": round(time.monotonic() - t0, 1),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "server_cpu_s": round(cpu, 1) if cpu else None,
    }


def ratios(rows: list[dict[str, Any]]) -> list[float]:
    """Pipeline / B per group of four phases (steady tokens/s, mean of each); B is the
    reference or the pipeline variant alternated with it."""
    out = []
    for i in range(0, len(rows) - 3, 4):
        group = rows[i : i + 4]
        p = [r["steady_tokens_per_s"] for r in group if r["phase"] == "pipeline"]
        r = [r["steady_tokens_per_s"] for r in group if r["phase"] != "pipeline"]
        if p and r and statistics.mean(r) > 0:
            out.append(round(statistics.mean(p) / statistics.mean(r), 3))
    return out


async def _run(args: argparse.Namespace, url: str, pid: int | None, priority: bool) -> None:
    c = args.concurrency
    config = config_mod.override(
        config_mod.load(None, profile=args.profile),
        {
            "endpoints": [url],
            "concurrency.fixed": c,
            "client.send_priority": priority,
            "chat.max_turns": args.max_turns,
        },
    )
    settings = BenchSettings(concurrency=[c], conversations=args.conversations)
    async with aiohttp.ClientSession() as session:
        sweep = Sweep(config, settings, session, BenchView(enabled=False))
        async with ModelGateway(config, RunCounters()) as gateway:
            await _calibrate(  # the warm-up; the fit serves no load here
                sweep, gateway, gateway.model
            )
        block = (await sizing.read_server_facts(session, url)).block_size
        module = reference.load_benchmark()
        if isinstance(module, str):
            raise SystemExit(module)
        shape = None
        rows: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            for kind in ("P", "R", "R", "P"):
                load0, cpu0, t0 = os.getloadavg()[0], _tree_cpu(pid), time.monotonic()
                if kind == "P":
                    result: PhaseResult | None = await sweep.pipeline(c, config, f"pipeline C={c}")
                    if shape is None and result is not None:
                        shape = ceiling_shape(result, c, True, block)
                    name = "pipeline"
                elif args.against != "reference":
                    # B is the pipeline with one switch thrown (bench --breakdown's
                    # variant), alternated with A so the machine's drift cancels.
                    label = f"pipeline C={c} {args.against}"
                    result = await sweep.pipeline(c, config, label, args.against)
                    name = args.against
                else:
                    if shape is None:
                        raise SystemExit("the first pipeline phase answered no turn")
                    result = await sweep.reference(module, c, shape)
                    name = "reference"
                if result is None:
                    raise SystemExit("\n".join(sweep.notes))
                cpu1 = _tree_cpu(pid)
                cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                rows.append(_row(name, result, t0, load0, cpu))
                print(json.dumps(rows[-1]), flush=True)
        found = ratios(rows)
        summary = {
            "concurrency": c,
            "against": args.against,
            "pipeline_over_reference": found,
            "median": statistics.median(found) if found else None,
            "range": [min(found), max(found)] if found else None,
            "shape": {
                "requests": shape.requests if shape else None,
                "prompt_tokens": shape.prompt_tokens if shape else None,
                "shared_tokens": shape.shared_tokens if shape else None,
                "output_tokens": shape.output_tokens if shape else None,
            },
        }
        print(json.dumps(summary), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", help="a running server (default: start the embedded one)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--conversations", type=int, default=16, help="per pipeline phase")
    p.add_argument("--max-turns", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="groups of P,R,R,P")
    p.add_argument(
        "--against",
        choices=["reference", "no-priority", "lockstep", "monitored", "journaled"],
        default="reference",
        help="B: vLLM's own benchmark (default), or the pipeline with one bench "
        "--breakdown switch thrown; the last line is then pipeline / that variant",
    )
    p.add_argument(
        "--profile",
        choices=config_mod.PROFILES,
        help="the config's layer of defaults (default: embedded-cpu when the script starts "
        "the embedded server, as `soc-async run` does, else default)",
    )
    args = p.parse_args()
    if args.profile is None:
        args.profile = "default" if args.endpoint else config_mod.EMBEDDED_PROFILE
    with _server(args.endpoint) as (url, pid, priority):
        asyncio.run(_run(args, url, pid, priority))


if __name__ == "__main__":
    main()
