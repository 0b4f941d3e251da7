"""``soc-async smoke``: one GPU, one model, ten minutes: does the whole path work, how fast.

In order: start one vLLM engine for the model on one GPU (the layout and flags of
``soc-async serve``), run a small generation (50 conversations by default) against it, a
short bench sweep up to the engine's batch size, and print what a user needs before a
long job: tokens/s of the generation, the prefix-cache hit rate, and the recommended
concurrency (per engine, and for a node of such engines). Figures come from the
server's own /metrics, before and after each part. ``smoke.json`` in the output
directory keeps them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import msgspec

from soc_async import config as config_mod
from soc_async import logs
from soc_async.config import RunFacts, ServerConfig
from soc_async.errors import ServerError
from soc_async.llm.metrics import MetricsSnapshot, fetch_metrics

__all__ = ["SmokeReport", "default_sweep", "render", "run_smoke"]

log = logs.get("smoke")


class SmokeReport(msgspec.Struct, kw_only=True):
    """What ``soc-async smoke`` measured."""

    model: str
    layout: str
    ready_s: float  # from the start of the engine to its /health answering
    conversations: int  # finished
    failures: int
    run_s: float
    tokens_per_s: float  # generated tokens per second over the run (server's count)
    prefix_cache_hit_rate: float | None  # hits / queries over the run
    batch_size: int | None  # the engine's max_num_seqs
    sweep: list[int]
    best_concurrency: int | None
    best_tokens_per_s: float | None
    recommended_concurrency: int | None  # the smallest within 5% of the best
    total_s: float
    summary: str  # soc-async run's own one line


def default_sweep(batch: int | None) -> list[int]:
    """Concurrency values for a short sweep: 16, 64, 256, ... up to the engine's batch."""
    top = batch or 256
    values = [c for c in (16, 64, 256) if c < top]
    return [*values, top]


def _delta(before: MetricsSnapshot, after: MetricsSnapshot) -> tuple[float, float, float]:
    return (
        after.generation_tokens - before.generation_tokens,
        after.prefix_cache_hits - before.prefix_cache_hits,
        after.prefix_cache_queries - before.prefix_cache_queries,
    )


async def _read(url: str) -> MetricsSnapshot:
    async with aiohttp.ClientSession() as session:
        return await fetch_metrics(session, url)


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
) -> SmokeReport:
    """The smoke run; raises the project's errors (a layout that cannot start is an
    InputError before anything runs)."""
    from soc_async.bench.results import BenchSettings
    from soc_async.bench.runner import run_bench
    from soc_async.llm.engines import EngineGroup
    from soc_async.llm.node import visible_gpus
    from soc_async.llm.plan import plan_engines
    from soc_async.llm.server import has_gpu
    from soc_async.run.app import execute

    t0 = time.monotonic()
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
    log.info("smoke: starting the engine", layout=plan.describe())
    with EngineGroup(plan, max_restarts=0) as group:
        ready_s = time.monotonic() - t0
        (url,) = group.urls
        batch = group.max_num_seqs
        # The engine's batch and scheduling are facts of its start, not the user's config.
        found = RunFacts(
            endpoints=[url], per_engine=batch, priority_scheduling=group.priority_scheduling
        )
        run_changes = {
            "endpoints": [url],
            "out": str(out / "run"),
            "targets.personas": max(4, conversations // 2),
            "targets.experiences": conversations,
            "targets.chats": conversations,
            "chat.max_turns": max_turns,
        }
        config = config_mod.resolve(None, run_changes, "smoke")
        before = asyncio.run(_read(url))
        started = time.monotonic()
        summary = execute(config, found=found)
        run_s = time.monotonic() - started
        after = asyncio.run(_read(url))
        generated, hits, queries = _delta(before, after)
        counts = _counts(Path(config.out))
        values = sweep or default_sweep(batch)
        settings = BenchSettings(
            concurrency=sorted(set(values)),
            conversations=bench_conversations,
            max_turns=bench_turns,
            adaptive=False,
        )
        bench_config = config_mod.resolve(
            None, {**run_changes, "chat.max_turns": bench_turns}, "smoke"
        )
        result = asyncio.run(run_bench(bench_config, settings, found=found))
    from soc_async.bench.report import write_reports

    write_reports(result, out / "bench")
    s = result.summary
    report = SmokeReport(
        model=model,
        layout=plan.describe(),
        ready_s=round(ready_s, 1),
        conversations=counts[0],
        failures=counts[1],
        run_s=round(run_s, 1),
        tokens_per_s=round(generated / run_s, 1) if run_s > 0 else 0.0,
        prefix_cache_hit_rate=round(hits / queries, 4) if queries else None,
        batch_size=batch,
        sweep=settings.concurrency,
        best_concurrency=s.best_concurrency,
        best_tokens_per_s=round(s.best_tokens_per_s, 1) if s.best_tokens_per_s else None,
        recommended_concurrency=s.recommended,
        total_s=round(time.monotonic() - t0, 1),
        summary=summary,
    )
    (out / "smoke.json").write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    if report.conversations == 0:
        raise ServerError(f"the smoke run finished no conversation: {summary}")
    return report


def _counts(run_dir: Path) -> tuple[int, int]:
    def lines(name: str) -> int:
        path = run_dir / name
        return path.read_bytes().count(b"\n") if path.exists() else 0

    return lines("conversations.jsonl"), lines("failures.jsonl")


def render(report: SmokeReport, *, budget_s: float = 600.0) -> str:
    """The figures as a few lines for the terminal."""
    rate = report.prefix_cache_hit_rate
    hit = "n/a" if rate is None else f"{rate:.1%}"
    rec = report.recommended_concurrency
    lines = [
        f"model            {report.model}",
        f"layout           {report.layout}",
        f"engine ready in  {report.ready_s:.0f} s",
        f"generation       {report.conversations} conversations, {report.failures} failures "
        f"in {report.run_s:.0f} s",
        f"tokens/s         {report.tokens_per_s:.1f} (generated, the server's count)",
        f"prefix cache     {hit} of prompt tokens served from cache",
        f"bench sweep      {', '.join(map(str, report.sweep))}: best "
        f"{report.best_tokens_per_s or 0:.1f} tok/s at {report.best_concurrency}",
    ]
    if rec is None:
        lines.append("recommended      none: no sweep point produced tokens")
    else:
        lines.append(
            f"recommended      concurrency {rec} per engine "
            f"(concurrency.per_engine = {rec}; for 8 such engines, {8 * rec} in flight)"
        )
    within = "within" if report.total_s <= budget_s else "OVER"
    lines.append(f"total            {report.total_s:.0f} s ({within} the {budget_s:.0f} s budget)")
    return "\n".join(lines)
