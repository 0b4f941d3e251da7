"""Live conversations against simulated GPU engines: client CPU and memory, whether the
engines stay busy, and how many engines one client process can feed.

The simulated vLLM engines (docs/simulator.md) run in their own process, one port each,
answering every turn with a valid scripted reply (``soc_async.testing.scripted:reply``),
so this process's CPU time is the client's alone: the real chat stage (prompts, turn
grammars, parser, state machine), the gateway with its limiter (fixed at
``--limit-per-engine`` x engines) and the HTTP client, as in a run. Every conversation
starts at once and the run stops after ``--duration-s`` (0: when every conversation is
done).

Measured over the steady window (from the moment every conversation has started and had
about one turn to the end, so neither the start-up nor a tail of finishing chats is in
it): the client's CPU
per request and as a share of one core (``time.process_time``), requests/s in real and
in simulated time, and what the engines' /metrics say (requests running against the
limit, waiting, KV usage, output tokens/s). Peak RSS (``ru_maxrss``) covers the whole
run. From CPU per request and the simulated request rate per engine:

    engines one process feeds at 50% of a core = 0.5 / (CPU s per request
                                                          x simulated requests/s per engine)

This machine's speed changes with its neighbours' load: the same code measures up to
half as much CPU again in a busy hour. The simulator's process does a fixed amount of
work per request in the same window on the same machine, so the client's CPU over the
simulator's (``client_cpu_per_simulator_cpu``) moves far less between runs: it is the
figure to compare code changes by, next to the absolute one.

``--time-scale S`` makes every engine S times faster, so 8 engines at S = 4 ask as many
requests per second of the client as 32 engines at real speed: a direct check of that
extrapolation.

    python benchmarks/scale_sim.py [--conversations 50000] [--engines 8]
        [--profile h100-8b] [--time-scale 1] [--limit-per-engine 96] [--max-turns 4]
        [--duration-s 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from typing import Any

import anyio
import msgspec
from scale_fake import raise_fd_limit, rss_mib, write_figures

from soc_async import config as config_mod
from soc_async import loop
from soc_async.bench.cast import bench_conversations, cast_experiences, seed_personas
from soc_async.bench.metrics import percentiles, time_weighted_mean
from soc_async.bench.pipeline import ChatTally, run_chats
from soc_async.bench.recording import RecordingCompleter
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters


def start_simulator(args: argparse.Namespace) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [
        sys.executable, "-m", "soc_async.testing.simulator", "--profile", args.profile,
        "--engines", str(args.engines), "--time-scale", str(args.time_scale),
        "--reply", "soc_async.testing.scripted:reply",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    urls = []
    for _ in range(args.engines):
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            proc.kill()
            raise SystemExit(f"the simulator did not start: {line!r}")
        urls.append(line.split()[-1])
    return proc, urls


class CollectorClock:
    """CPU seconds the cyclic garbage collector took, and how many collections ran."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.longest = 0.0  # wall seconds of the longest one (the loop stands still)
        self.full = 0  # collections of the oldest generation
        self._t0 = self._w0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0, self._w0 = time.process_time(), time.monotonic()
        else:
            self.seconds += time.process_time() - self._t0
            self.longest = max(self.longest, time.monotonic() - self._w0)
            self.collections += 1
            self.full += info.get("generation") == 2


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Window:
    """The steady window: opened once every conversation has started and as many replies
    have come back as there are conversations (about one turn each), so the start of the
    conversations (their fixed prompt parts, their first turns) is not in it."""

    def __init__(self) -> None:
        self.open = False
        self.t0 = self.cpu0 = 0.0
        self.requests0 = 0
        self.sim_cpu0 = 0.0
        self.samples: list[dict[str, float]] = []  # per engine-second readings, summed
        self.lags: list[float] = []  # seconds a 50 ms sleep overslept
        self.gc0 = 0.0
        self.full0 = 0


async def rollout(args: argparse.Namespace, urls: list[str], sim_pid: int) -> dict[str, Any]:
    limit = args.limit_per_engine * args.engines
    changes: dict[str, Any] = {
        "endpoints": urls,
        "concurrency.fixed": limit,
        "concurrency.max_active_chats": args.conversations,
        "chat.max_turns": args.max_turns,
    }
    config = config_mod.override(config_mod.RunConfig(), changes)
    rss_before = rss_mib()
    personas = seed_personas(config.seed)
    experiences = bench_conversations(
        args.conversations, personas, cast_experiences(personas, config), config
    )
    tally = ChatTally(len(experiences))
    live: list[tuple[float, float]] = []
    window = Window()
    collector = CollectorClock()
    gc.callbacks.append(collector)
    async with ModelGateway(config, RunCounters()) as gateway:
        recorder = RecordingCompleter(gateway)
        cpu_start, t_start = time.process_time(), time.monotonic()

        async def watch() -> None:
            while True:
                now = time.monotonic()
                live.append((now - t_start, float(tally.active)))
                started = tally.peak_active >= args.conversations
                if not window.open and started and len(recorder.samples) >= args.conversations:
                    window.open = True
                    window.t0, window.cpu0 = now, time.process_time()
                    window.requests0 = len(recorder.samples)
                    window.sim_cpu0 = cpu_seconds(sim_pid)
                    window.gc0 = collector.seconds
                    window.full0 = collector.full
                    collector.longest = 0.0
                elif window.open:
                    engines = gateway.engine_figures()
                    window.samples.append(
                        {
                            "running": sum(e.running or 0.0 for e in engines),
                            "waiting": sum(e.waiting or 0.0 for e in engines),
                            "kv": max((e.kv_cache_usage or 0.0) for e in engines),
                            "tokens_per_s": sum(e.tokens_per_s or 0.0 for e in engines),
                            "in_flight": gateway.in_flight,
                            "queued": gateway.queued,
                        }
                    )
                await anyio.sleep(1.0)

        async def lag() -> None:
            # How late a 50 ms sleep wakes: the client's own stalls (GC, long callbacks).
            # (A shorter probe would itself cost a share of the CPU measured here.)
            while True:
                t = time.monotonic()
                await anyio.sleep(0.05)
                if window.open and not end:
                    window.lags.append(time.monotonic() - t - 0.05)

        end: dict[str, float] = {}

        def read_end() -> None:
            end.update(
                t=time.monotonic(),
                cpu=time.process_time(),
                sim_cpu=cpu_seconds(sim_pid),
                requests=len(recorder.samples),
                gc_s=collector.seconds,
                gc_longest=collector.longest,
                gc_full=collector.full,
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            tg.start_soon(lag)
            with anyio.CancelScope() as run:

                async def stop() -> None:
                    # The figures are read at the deadline, before the live conversations
                    # are cancelled: cancelling 50,000 of them takes seconds of CPU.
                    await anyio.sleep(args.duration_s)
                    read_end()
                    run.cancel()

                if args.duration_s:
                    tg.start_soon(stop)
                await run_chats(
                    recorder,
                    config,
                    experiences,
                    personas,
                    facts=gateway.facts,
                    max_active=args.conversations,
                    tally=tally,
                )
            if not end:
                read_end()
            tg.cancel_scope.cancel()
    t_end, cpu_end, sim_cpu_end = end["t"], end["cpu"], end["sim_cpu"]
    gc.callbacks.remove(collector)
    requests = int(end["requests"])
    wall = t_end - t_start
    figures: dict[str, Any] = {
        "conversations": args.conversations,
        "finished": tally.done,
        "failed": tally.failed,
        "failure_reasons": dict(tally.reasons),
        "requests": requests,
        "request_errors": recorder.errors,
        "wall_s": round(wall, 1),
        "client_cpu_s": round(cpu_end - cpu_start, 2),
        "peak_live_conversations": tally.peak_active,
        "mean_live_conversations": round(time_weighted_mean(live, wall) or 0.0, 1),
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(rss_mib(), 1),
    }
    if not window.open or not window.samples:
        figures["window"] = None
        return figures
    span = t_end - window.t0
    cpu = cpu_end - window.cpu0
    sim_cpu = sim_cpu_end - window.sim_cpu0
    n = requests - window.requests0
    per_engine_sim_rps = n / span / args.time_scale / args.engines if span else 0.0
    cpu_per_request = cpu / n if n else float("nan")
    mean = {k: sum(s[k] for s in window.samples) / len(window.samples) for k in window.samples[0]}
    figures["window"] = {
        "seconds": round(span, 1),
        "requests": n,
        "client_cpu_ms_per_request": round(1000 * cpu_per_request, 3),
        "client_cpu_share_of_a_core": round(cpu / span, 3),
        "collector_cpu_ms_per_request": round(1000 * (end["gc_s"] - window.gc0) / n, 3)
        if n
        else None,
        "collector_longest_ms": round(1000 * end["gc_longest"], 1),
        "collector_full_collections": int(end["gc_full"]) - window.full0,
        "simulator_cpu_share_of_a_core": round(sim_cpu / span, 3),
        "simulator_cpu_ms_per_request": round(1000 * sim_cpu / n, 3) if n else None,
        "client_cpu_per_simulator_cpu": round(cpu / sim_cpu, 3) if sim_cpu else None,
        "requests_per_s": round(n / span, 1),
        "simulated_requests_per_s_per_engine": round(per_engine_sim_rps, 2),
        "mean_running_per_engine": round(mean["running"] / args.engines, 1),
        "limit_per_engine": args.limit_per_engine,
        "mean_waiting_in_engines": round(mean["waiting"], 1),
        "mean_in_flight": round(mean["in_flight"], 1),
        "mean_queued_in_client": round(mean["queued"], 1),
        "max_kv_cache_usage": round(mean["kv"], 3),
        "loop_lag_ms": {
            k: None if v is None else round(1000 * v, 1)
            for k, v in msgspec.structs.asdict(percentiles(window.lags)).items()
        }
        | {"max": round(1000 * max(window.lags, default=0.0), 1)},
        "simulated_output_tokens_per_s_per_engine": round(
            mean["tokens_per_s"] / args.time_scale / args.engines, 1
        ),
        "engines_fed_at_half_a_core": round(0.5 / (cpu_per_request * per_engine_sim_rps), 1)
        if n and per_engine_sim_rps
        else None,
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=50_000)
    p.add_argument("--engines", type=int, default=8)
    p.add_argument("--profile", default="h100-8b")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--limit-per-engine", type=int, default=96, help="requests in flight")
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--duration-s", type=float, default=120.0, help="0: until all are done")
    p.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = p.parse_args(argv)
    raise_fd_limit()
    proc, urls = start_simulator(args)
    try:
        figures = loop.run(rollout(args, urls, proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    write_figures(figures, args)
    return 0 if figures["failed"] == 0 and figures["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
