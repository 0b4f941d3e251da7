"""10,000 live conversations through the real chat stage: client CPU, memory, requests/s.

The fake vLLM server runs in its own process with a latency model (time to first token
plus time per output token; the defaults, 0.5 s + 0.04 s a token, make a scripted turn of
about 50 tokens take 2.5 s, like a GPU server deep in a large batch) and answers every
turn with a valid scripted reply, so the
whole client path runs as in a real run: the prompt is rendered, the turn grammar built,
the reply parsed and checked by the state machine, the next turn asked. Every
conversation is started at once (``max_active_chats`` = their number) and the request
limit stays fixed, so the process holds all of them live while requests queue.

Reported: this process's CPU time per request (``time.process_time``, the server's CPU
is in the other process; user and system time apart), peak RSS (``ru_maxrss``) and what
it grew by from before the conversations were built, requests/s, and the number of
conversations live at once (peak, and time-averaged). The loop runs as a run's does
(``soc_async.loop``: uvloop, the collector's thresholds raised); ``--default-gc`` keeps
CPython's thresholds, for comparison.

    python benchmarks/scale_fake.py [--conversations 10000] [--max-turns 4]
        [--concurrency 1024] [--ttft-s 0.5] [--tpot-s 0.04] [--no-grammar]
        [--default-gc] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import anyio

from soc_async import config as config_mod
from soc_async import loop
from soc_async.bench.cast import bench_conversations, cast_experiences, seed_personas
from soc_async.bench.metrics import percentiles, time_weighted_mean
from soc_async.bench.pipeline import ChatTally, run_chats
from soc_async.bench.recording import RecordingCompleter
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters


def raise_fd_limit() -> None:
    """A thousand sockets need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable, "-m", "soc_async.testing.fake_server", "--port", "0",
        "--reply", "soc_async.testing.scripted:reply",
        "--ttft-s", str(args.ttft_s), "--tpot-s", str(args.tpot_s),
        "--max-num-seqs", str(args.concurrency), "--no-record", "--no-prefix-cache",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the fake server did not start: {line!r}")
    return proc, line.split()[-1]


async def rollout(args: argparse.Namespace, url: str) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "endpoints": [url],
        "concurrency.fixed": args.concurrency,
        "concurrency.max_active_chats": args.conversations,
        "chat.max_turns": args.max_turns,
    }
    if args.no_grammar:
        changes["calls.turn.grammar"] = False
    config = config_mod.override(config_mod.RunConfig(), changes)
    rss_before = rss_mib()
    personas = seed_personas(config.seed)
    experiences = bench_conversations(
        args.conversations, personas, cast_experiences(personas, config), config
    )
    tally = ChatTally(len(experiences))
    live: list[tuple[float, float]] = []
    async with ModelGateway(config, RunCounters()) as gateway:
        recorder = RecordingCompleter(gateway)
        cpu0, t0 = time.process_time(), time.monotonic()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)

        async def sample() -> None:
            while True:
                live.append((time.monotonic() - t0, float(tally.active)))
                await anyio.sleep(0.5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            await run_chats(
                recorder,
                config,
                experiences,
                personas,
                facts=gateway.facts,
                max_active=args.conversations,
                tally=tally,
            )
            tg.cancel_scope.cancel()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
    requests = len(recorder.samples)
    latency = percentiles([s.latency_s for s in recorder.samples])
    queue = percentiles([s.queue_s for s in recorder.samples])
    return {
        "conversations": args.conversations,
        "finished": tally.done,
        "failed": tally.failed,
        "failure_reasons": dict(tally.reasons),
        "turns": tally.turns,
        "requests": requests,
        "request_errors": recorder.errors,
        "wall_s": round(wall, 2),
        "client_cpu_s": round(cpu, 2),
        "client_cpu_ms_per_request": round(1000 * cpu / requests, 3) if requests else None,
        "client_user_s": round(usage.ru_utime - usage0.ru_utime, 2),
        "client_system_s": round(usage.ru_stime - usage0.ru_stime, 2),
        "requests_per_s": round(requests / wall, 1) if wall else None,
        "peak_live_conversations": tally.peak_active,
        "mean_live_conversations": round(time_weighted_mean(live, wall) or 0.0, 1),
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(rss_mib(), 1),
        "latency_p50_s": latency.p50,
        "latency_p99_s": latency.p99,
        "queue_p50_s": queue.p50,
        "queue_p99_s": queue.p99,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=10_000)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=1024, help="fixed requests in flight")
    p.add_argument("--ttft-s", type=float, default=0.5, help="fake time to first token")
    p.add_argument("--tpot-s", type=float, default=0.04, help="fake time per output token")
    p.add_argument("--no-grammar", action="store_true", help="skip building turn grammars")
    p.add_argument("--json", metavar="PATH", help="also write the figures here")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument(
        "--default-gc",
        action="store_true",
        help="CPython's collector thresholds instead of the run's (soc_async.loop)",
    )
    args = p.parse_args(argv)
    raise_fd_limit()
    proc, url = start_server(args)
    try:
        with loop.tuned_collector(gc.get_threshold() if args.default_gc else loop.GC_THRESHOLDS):
            if args.no_uvloop:
                import asyncio

                figures = asyncio.run(rollout(args, url))
            else:
                import uvloop

                figures = uvloop.run(rollout(args, url))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    write_figures(figures, args)
    return 0 if figures["failed"] == 0 and figures["requests"] else 1


def write_figures(figures: dict[str, Any], args: argparse.Namespace) -> None:
    """The figures with the settings and the machine, printed and (``--json``) written."""
    figures["settings"] = {k: v for k, v in vars(args).items() if k != "json"}
    figures["environment"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
