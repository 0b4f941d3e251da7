"""``soc-async smoke``: one GPU, one model, a time budget: does the whole path work, how fast.

In order: the preflight (llm/preflight.py), one vLLM engine for the model on one GPU (the
layout and flags of ``soc-async serve``), a small generation (50 conversations by
default) against it, then a short bench sweep, and what a user needs before a long job:
tokens/s of the generation, the prefix-cache hit rate, and the recommended concurrency
(per engine, and for a node of such engines). Figures come from the server's own
/metrics, before and after each part.

The sweep is sized from the engine itself: its KV cache in tokens (``vllm:cache_config_info``)
over the generation's mean prompt is how many requests the cache holds at once, the
knee of the throughput curve; the sweep takes a few points around it
(:func:`sweep_around`), not the engine's batch size (1,024 on an H100, ten times past
the knee of an 8B model). The budget (``budget_s``, from the smoke's start) is kept:
the generation is stopped at its share (as Ctrl-C stops a run: finished conversations
kept), and a sweep point that would not fit in what is left is skipped and said so.
``smoke.json`` is rewritten after every phase, so a job killed at its time limit keeps
what was measured.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from soc_async import config as config_mod
from soc_async import logs
from soc_async.config import RunFacts, ServerConfig
from soc_async.errors import Interrupted, ServerError
from soc_async.llm.http import open_session
from soc_async.llm.metrics import MetricsSnapshot, fetch_engine_info, fetch_metrics

__all__ = ["SmokeReport", "default_sweep", "render", "run_smoke", "sweep_around"]

log = logs.get("smoke")

GENERATION_SHARE = 0.4  # of the budget left once the engine is ready
MIN_GENERATION_S = 20.0  # the generation always gets this, whatever the budget says
WRAP_UP_S = 10.0  # writing the reports, stopping the engine


class SmokeReport(msgspec.Struct, kw_only=True):
    """What ``soc-async smoke`` measured so far (``complete`` False: it was cut short)."""

    model: str
    layout: str
    budget_s: float
    phases: list[str] = []  # done, in order: "engine", "generation", "sweep C=..."
    complete: bool = False
    ready_s: float | None = None  # from the start of the engine to its /health answering
    conversations: int = 0  # finished
    failures: int = 0
    generation_stopped: bool = False  # stopped at its share of the budget
    run_s: float | None = None
    tokens_per_s: float | None = None  # generated tokens per second over the run
    prefix_cache_hit_rate: float | None = None  # hits / queries over the run
    batch_size: int | None = None  # the engine's max_num_seqs
    kv_cache_tokens: int | None = None  # the engine's KV cache (vllm:cache_config_info)
    mean_prompt_tokens: float | None = None  # of the generation's requests
    sweep_source: str = ""  # where the sweep's values came from
    sweep: list[int] = []  # the points measured
    skipped: list[int] = []  # the points left out to keep the budget
    best_concurrency: int | None = None
    best_tokens_per_s: float | None = None
    recommended_concurrency: int | None = None  # the smallest within 5% of the best
    total_s: float = 0.0
    summary: str = ""  # soc-async run's own one line


def default_sweep(batch: int | None) -> list[int]:
    """Without a KV-cache figure: 16, 64, 256, ... up to the engine's batch."""
    top = batch or 256
    values = [c for c in (16, 64, 256) if c < top]
    return [*values, top]


def sweep_around(
    kv_tokens: int | None, mean_prompt_tokens: float | None, batch: int | None
) -> tuple[list[int], str]:
    """A few points around the requests the KV cache holds at once (its tokens over the
    mean prompt): a quarter, a half, all, twice; none above the batch. Without the two
    figures, :func:`default_sweep`. Returns the points and one line saying why."""
    if not kv_tokens or not mean_prompt_tokens or mean_prompt_tokens <= 0:
        return default_sweep(batch), "no KV-cache or prompt figure: up to the batch size"
    fit = kv_tokens / mean_prompt_tokens
    points = {max(1, round(fit * f)) for f in (0.25, 0.5, 1.0, 2.0)}
    if batch:
        points = {min(p, batch) for p in points}
    why = (
        f"around {fit:.0f} requests: the KV cache's {kv_tokens:,} tokens over the "
        f"generation's mean prompt of {mean_prompt_tokens:.0f}"
    )
    return sorted(points), why


def _delta(before: MetricsSnapshot, after: MetricsSnapshot) -> tuple[float, float, float, float]:
    return (
        after.generation_tokens - before.generation_tokens,
        after.prefix_cache_hits - before.prefix_cache_hits,
        after.prefix_cache_queries - before.prefix_cache_queries,
        after.prompt_tokens - before.prompt_tokens,
    )


async def _read(url: str) -> MetricsSnapshot:
    async with open_session(None) as session:  # the smoke's own engine: no API key
        return await fetch_metrics(session, url)


async def _kv_tokens(url: str) -> int | None:
    async with open_session(None) as session:
        try:
            return (await fetch_engine_info(session, url)).kv_cache_tokens
        except ServerError:
            return None


def _write(out: Path, report: SmokeReport, t0: float) -> None:
    """smoke.json, whole (written beside and renamed over: a reader never sees half)."""
    report.total_s = round(time.monotonic() - t0, 1)
    tmp = out / "smoke.json.tmp"
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    os.replace(tmp, out / "smoke.json")


@contextmanager
def _stop_at(deadline: float) -> Iterator[threading.Event]:
    """SIGINT to this process at ``deadline`` (monotonic): the run stops as on Ctrl-C,
    keeping what finished. The event tells that it was the deadline, not the user."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _mean_prompt(run_dir: Path, prompt_tokens: float) -> float | None:
    """Prompt tokens per request of the run (its last metrics line counts requests)."""
    path = run_dir / "metrics.jsonl"
    try:
        last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        requests = msgspec.json.decode(last).get("requests", 0)
    except (OSError, msgspec.DecodeError, AttributeError):
        return None
    return prompt_tokens / requests if requests and prompt_tokens > 0 else None


def run_smoke(
    model: str,
    out: Path,
    *,
    gpus: str | None = None,
    tp: int | None = None,
    conversations: int = 50,
    max_turns: int = 12,
    sweep: list[int] | None = None,
    bench_conversations: int = 8,
    bench_turns: int = 4,
    extra_args: list[str] | None = None,
    command: list[str] | None = None,
    startup_timeout_s: float = 1800.0,
    budget_s: float = 600.0,
) -> SmokeReport:
    """The smoke run; raises the project's errors (a layout that cannot start, a failed
    preflight: InputError before anything runs)."""
    from soc_async.bench.report import write_reports
    from soc_async.bench.results import BenchSettings, summarize
    from soc_async.bench.runner import run_bench
    from soc_async.llm import preflight
    from soc_async.llm.engines import EngineGroup
    from soc_async.llm.node import visible_gpus
    from soc_async.llm.plan import plan_engines
    from soc_async.llm.server import has_gpu
    from soc_async.run.app import execute

    t0 = time.monotonic()
    deadline = t0 + budget_s
    facts = preflight.gather(command=command or ())
    preflight.enforce(
        preflight.run_checks(facts, model=model, in_flight=None, run_dir=out), "smoke"
    )
    server = ServerConfig(
        model=model,
        tensor_parallel=tp,
        engines=1,
        extra_args=list(extra_args or []),
        command=list(command or []),
        startup_timeout_s=startup_timeout_s,
        max_restarts=0,
    )
    chosen = visible_gpus(gpus) if (gpus is not None or has_gpu()) else None
    if chosen is not None and gpus is None and chosen.ids:
        chosen = visible_gpus(chosen.ids[0])  # one GPU unless told otherwise
    plan = plan_engines(server, gpus=chosen, log_dir=out / "logs")
    out.mkdir(parents=True, exist_ok=True)
    report = SmokeReport(model=model, layout=plan.describe(), budget_s=budget_s)
    _write(out, report, t0)
    log.info("smoke: starting the engine", layout=plan.describe())
    with EngineGroup(plan, max_restarts=0) as group:
        report.ready_s = round(time.monotonic() - t0, 1)
        (url,) = group.urls
        report.batch_size = group.max_num_seqs
        report.kv_cache_tokens = asyncio.run(_kv_tokens(url))
        report.phases.append("engine")
        _write(out, report, t0)

        # The engine's batch and scheduling are facts of its start, not the user's config.
        found = RunFacts(
            endpoints=[url],
            per_engine=group.max_num_seqs,
            priority_scheduling=group.priority_scheduling,
        )
        config = config_mod.resolve(
            None,
            {
                "endpoints": [url],
                "out": str(out / "run"),
                "targets.personas": max(4, conversations // 2),
                "targets.experiences": conversations,
                "targets.chats": conversations,
                "chat.max_turns": max_turns,
                "client.shutdown_grace_s": 5.0,
            },
            "smoke",
        )
        left = deadline - time.monotonic() - WRAP_UP_S
        share = max(MIN_GENERATION_S, GENERATION_SHARE * left)
        before = asyncio.run(_read(url))
        started = time.monotonic()
        with _stop_at(started + share) as fired:
            try:
                report.summary = execute(config, found=found)
            except (Interrupted, KeyboardInterrupt):
                if not fired.is_set():
                    raise
                report.generation_stopped = True
                report.summary = f"stopped at its share of the budget ({share:.0f} s)"
        run_s = time.monotonic() - started
        after = asyncio.run(_read(url))
        generated, hits, queries, prompt = _delta(before, after)
        report.conversations, report.failures = _counts(Path(config.out))
        report.run_s = round(run_s, 1)
        report.tokens_per_s = round(generated / run_s, 1) if run_s > 0 else 0.0
        report.prefix_cache_hit_rate = round(hits / queries, 4) if queries else None
        mean = _mean_prompt(Path(config.out), prompt)
        report.mean_prompt_tokens = round(mean, 1) if mean else None
        report.phases.append("generation")
        _write(out, report, t0)

        if sweep:
            values, report.sweep_source = sorted(set(sweep)), "given (--sweep)"
        else:
            # From the figure the report states, so smoke.json reproduces its own sweep
            # (the unrounded mean can format one token apart: 2438.53 -> 2439, 2438.5 -> 2438).
            values, report.sweep_source = sweep_around(
                report.kv_cache_tokens, report.mean_prompt_tokens, group.max_num_seqs
            )
        bench_config = config_mod.override(config, {"chat.max_turns": bench_turns}, "smoke")
        phases = []
        result = None
        last: tuple[int, float] | None = None  # the previous point and its seconds
        for c in values:
            settings = BenchSettings(
                concurrency=[c],
                conversations=bench_conversations,
                max_turns=bench_turns,
                adaptive=False,
                sweep_source=report.sweep_source,
            )
            if last is not None:
                # Past the knee time grows with the conversations a point needs.
                work = settings.conversations_for(c) / settings.conversations_for(last[0])
                if time.monotonic() + last[1] * max(1.0, work) > deadline - WRAP_UP_S:
                    report.skipped = [v for v in values if v >= c]
                    log.warning(
                        "smoke: sweep points left out for the budget", skipped=report.skipped
                    )
                    break
            elif time.monotonic() > deadline - WRAP_UP_S:
                report.skipped = list(values)
                break
            point_t0 = time.monotonic()
            result = asyncio.run(run_bench(bench_config, settings, found=found))
            last = (c, time.monotonic() - point_t0)
            phases.extend(result.phases)
            summary = summarize(phases)
            report.sweep.append(c)
            report.best_concurrency = summary.best_concurrency
            best = summary.best_tokens_per_s
            report.best_tokens_per_s = round(best, 1) if best else None
            report.recommended_concurrency = summary.recommended
            report.phases.append(f"sweep C={c}")
            _write(out, report, t0)
    if result is not None:
        settings = msgspec.structs.replace(
            result.settings, concurrency=list(report.sweep), sweep_source=report.sweep_source
        )
        whole = msgspec.structs.replace(
            result, settings=settings, phases=phases, summary=summarize(phases)
        )
        write_reports(whole, out / "bench")
    report.complete = True
    _write(out, report, t0)
    if report.conversations == 0:
        raise ServerError(f"the smoke run finished no conversation: {report.summary}")
    return report


def _counts(run_dir: Path) -> tuple[int, int]:
    def lines(name: str) -> int:
        path = run_dir / name
        return path.read_bytes().count(b"\n") if path.exists() else 0

    return lines("conversations.jsonl"), lines("failures.jsonl")


def render(report: SmokeReport) -> str:
    """The figures as a few lines for the terminal."""
    rate = report.prefix_cache_hit_rate
    hit = "n/a" if rate is None else f"{rate:.1%}"
    rec = report.recommended_concurrency
    stopped = " (stopped at its share of the budget)" if report.generation_stopped else ""
    lines = [
        f"model            {report.model}",
        f"layout           {report.layout}",
        f"engine ready in  {report.ready_s or 0:.0f} s",
        f"generation       {report.conversations} conversations, {report.failures} failures "
        f"in {report.run_s or 0:.0f} s{stopped}",
        f"tokens/s         {report.tokens_per_s or 0:.1f} (generated, the server's count)",
        f"prefix cache     {hit} of prompt tokens served from cache",
        f"sweep            {report.sweep_source}",
        f"bench sweep      {', '.join(map(str, report.sweep)) or 'none'}: best "
        f"{report.best_tokens_per_s or 0:.1f} tok/s at {report.best_concurrency}",
    ]
    if report.skipped:
        lines.append(f"left out         {', '.join(map(str, report.skipped))} (the budget)")
    if rec is None:
        lines.append("recommended      none: no sweep point produced tokens")
    else:
        lines.append(
            f"recommended      concurrency {rec} per engine "
            f"(concurrency.per_engine = {rec}; for 8 such engines, {8 * rec} in flight)"
        )
    within = "within" if report.total_s <= report.budget_s else "OVER"
    lines.append(
        f"total            {report.total_s:.0f} s ({within} the {report.budget_s:.0f} s budget)"
    )
    return "\n".join(lines)
