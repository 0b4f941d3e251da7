"""The bench run: for each concurrency value the pipeline, then the ceiling; then adaptive.

Phases run one after another against the same server(s), each with its own
:class:`~soc_async.gateway.ModelGateway` (so its own limit, fixed or adaptive) and a /metrics
reading before and after, whose difference is that phase's share of the server's
counters. The pure arithmetic lives in :mod:`soc_async.bench.metrics` and
:mod:`soc_async.bench.results`; this module does the I/O and the order.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from soc_async import config as config_mod
from soc_async.bench import load, sizing
from soc_async.bench.cast import bench_conversations, seed_experiences, seed_personas
from soc_async.bench.live import BenchView
from soc_async.bench.metrics import (
    TTFT_METRIC,
    Histogram,
    counter_delta,
    histogram_delta,
    merge_histograms,
    parse_histogram,
    time_weighted_mean,
)
from soc_async.bench.pipeline import ChatTally, run_chats
from soc_async.bench.recording import RecordingCompleter
from soc_async.bench.results import (
    BenchResult,
    BenchSettings,
    PhaseResult,
    phase_result,
    summarize,
)
from soc_async.config import CALL_KINDS, RunConfig
from soc_async.errors import ServerError
from soc_async.gateway import ModelGateway
from soc_async.llm.metrics import MetricsSnapshot, combine, parse_metrics
from soc_async.llm.readiness import wait_until_ready
from soc_async.llm.types import ChatRequest
from soc_async.progress import RunCounters
from soc_async.records import Experience, Persona

__all__ = ["ServerReading", "read_servers", "run_bench"]


class ServerReading(msgspec.Struct, kw_only=True):
    """/metrics of every endpoint at one moment; None parts could not be read."""

    snapshot: MetricsSnapshot | None = None
    ttft: Histogram | None = None


async def read_servers(session: aiohttp.ClientSession, endpoints: list[str]) -> ServerReading:
    """Every endpoint's /metrics, combined; an empty reading if any cannot be read.

    A bench figure from some servers only would be wrong, so it is all or nothing.
    """
    snaps: list[MetricsSnapshot] = []
    hists: list[Histogram | None] = []
    timeout = aiohttp.ClientTimeout(total=10)
    for url in endpoints:
        try:
            async with session.get(url.rstrip("/") + "/metrics", timeout=timeout) as resp:
                if resp.status != 200:
                    return ServerReading()
                text = await resp.text()
            snaps.append(parse_metrics(text, at=time.monotonic()))
            hists.append(parse_histogram(text, TTFT_METRIC))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return ServerReading()
    return ServerReading(snapshot=combine(snaps), ttft=merge_histograms(hists))


async def check_reachable(
    session: aiohttp.ClientSession, endpoints: list[str], timeout_s: float = 0.0
) -> None:
    """Waits up to ``timeout_s`` for every endpoint's /health and model list; ServerError
    naming the ones that never answered.

    Checked before anything else, so an unreachable server is one clear line rather than
    a failure half-way into the first phase; a bench measures every endpoint it is
    given, so one not ready is an error too.
    """
    not_ready = await wait_until_ready(session, endpoints, timeout_s)
    if not_ready:
        raise ServerError(
            f"not ready after {timeout_s:g} s: {', '.join(not_ready)}; start the server or "
            "check --endpoint (--ready-timeout)"
        )


async def _server_version(session: aiohttp.ClientSession, url: str) -> str | None:
    """vLLM's version from GET /version, None when the server does not say."""
    try:
        async with session.get(url.rstrip("/") + "/version", timeout=aiohttp.ClientTimeout(5)) as r:
            if r.status != 200:
                return None
            data = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def _endpoints(config: RunConfig) -> list[str]:
    urls = list(config.endpoints)
    for kind in CALL_KINDS:
        urls += [u for u in config.call(kind).endpoints if u not in urls]
    return urls


def environment(
    config: RunConfig, model: str, vllm_version: str | None, fit: load.TokenFit | None
) -> dict[str, Any]:
    """Where the figures were measured, for bench.json."""
    try:
        version = importlib.metadata.version("soc-async")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "soc_async": version,
        "server_model": model,
        "server_urls": _endpoints(config),
        "vllm_version": vllm_version,
        "prompt_token_fit": msgspec.to_builtins(fit) if fit else None,
    }


class _Sweep:
    """The state one bench run carries from phase to phase."""

    def __init__(
        self,
        config: RunConfig,
        settings: BenchSettings,
        session: aiohttp.ClientSession,
        view: BenchView,
    ) -> None:
        self.config = config
        self.settings = settings
        self.session = session
        self.view = view
        self.endpoints = _endpoints(config)
        self.personas: list[Persona] = seed_personas(config.seed)
        self.seeds = seed_experiences(self.personas, config)
        self.next_conversation = 0

    def experiences(self, n: int) -> list[Experience]:
        """The next ``n`` conversations: each phase gets its own, so none of them finds
        the prompts of an earlier phase in the prefix cache."""
        out = bench_conversations(
            n, self.personas, self.seeds, self.config, start=self.next_conversation
        )
        self.next_conversation += n
        return out

    async def measure(
        self,
        phase: str,
        concurrency: int | None,
        config: RunConfig,
        label: str,
        total: int,
        work: Callable[[RecordingCompleter, ModelGateway], Awaitable[None]],
        tally: ChatTally | None = None,
        prepare: ChatRequest | None = None,
    ) -> PhaseResult:
        """Runs ``work`` under a fresh ModelGateway for ``config`` between two /metrics readings.

        ``tally``: the conversations ``work`` fills in, when it rolls out chats.
        ``prepare``: a request sent first, outside the measurement.
        """
        async with ModelGateway(config, RunCounters()) as gateway:
            recorder = RecordingCompleter(gateway)
            if prepare is not None:
                await gateway.complete("turn", prepare)

            def probe() -> tuple[int, int, int, int]:
                done = tally.done + tally.failed if tally else len(recorder.samples)
                return done, recorder.output_tokens, recorder.live, gateway.limiter.capacity

            before = await read_servers(self.session, self.endpoints)
            started = time.monotonic()
            async with self.view.phase(label, total, probe):
                await work(recorder, gateway)
            duration = time.monotonic() - started
            after = await read_servers(self.session, self.endpoints)
            history = gateway.controller.history if gateway.controller else []
        # A reading that failed leaves the phase's server figures unknown, never a total
        # since the server started passed off as the phase's share.
        server, ttft = None, None
        if before.snapshot is not None and after.snapshot is not None:
            server = counter_delta(before.snapshot, after.snapshot)
            ttft = histogram_delta(before.ttft, after.ttft)
        extra: dict[str, Any] = {}
        if tally is not None:
            extra.update(
                conversations=tally.total,
                conversations_failed=tally.failed,
                failure_reasons=dict(tally.reasons),
            )
        if phase == "adaptive":
            steps = changes(
                [(0.0, config.concurrency.initial)]
                + [(max(0.0, t - started), cap) for t, cap, _ in history]
            )
            extra.update(
                capacity_history=steps,
                mean_capacity=time_weighted_mean(steps, duration),
            )
        return phase_result(
            phase,  # type: ignore[arg-type]
            concurrency,
            recorder.samples,
            errors=recorder.errors,
            duration_s=duration,
            server=server,
            ttft=ttft,
            **extra,
        )

    async def pipeline(self, concurrency: int | None, config: RunConfig, label: str) -> PhaseResult:
        limit = concurrency or config.concurrency.max or config.concurrency.initial
        n = self.settings.conversations_for(limit)
        experiences = self.experiences(n)

        tally = ChatTally(n)

        async def work(recorder: RecordingCompleter, gateway: ModelGateway) -> None:
            await run_chats(
                recorder,
                config,
                experiences,
                self.personas,
                model_name=gateway.model,
                send_priority=config.client.send_priority,
                tally=tally,
            )

        phase = "pipeline" if concurrency else "adaptive"
        return await self.measure(phase, concurrency, config, label, n, work, tally)

    async def ceiling(
        self, concurrency: int, config: RunConfig, shape: load.LoadShape, fit: load.TokenFit
    ) -> PhaseResult:
        seed = self.config.seed + concurrency
        requests = load.build_requests(shape, fit, seed)
        # The pipeline finds most of each prompt cached by the conversation's previous
        # turn; the load's shared prefix is cached before the clock starts, likewise.
        # Otherwise the first C requests, all sent at once, would each compute it.
        warm = load.prefix_request(shape, fit, seed)

        async def work(recorder: RecordingCompleter, gateway: ModelGateway) -> None:
            await load.run_load(recorder, requests)

        label = f"ceiling  C={concurrency}"
        return await self.measure(
            "ceiling", concurrency, config, label, len(requests), work, prepare=warm
        )


def changes(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The points of a step function where its value changes (the first always kept)."""
    out: list[tuple[float, int]] = []
    for t, value in steps:
        if not out or value != out[-1][1]:
            out.append((t, value))
    return out


def ceiling_shape(
    pipeline: PhaseResult, concurrency: int, shared_prefix: bool
) -> load.LoadShape | None:
    """The synthetic load that imitates a pipeline phase; None when it had no turns."""
    if pipeline.mean_prompt_tokens is None or pipeline.mean_completion_tokens is None:
        return None
    share = pipeline.prefix_hit_rate
    if share is None:
        share = pipeline.cached_share
    shared = (share or 0.0) * pipeline.mean_prompt_tokens if shared_prefix else 0.0
    return load.LoadShape(
        requests=max(pipeline.requests, concurrency),
        prompt_tokens=pipeline.mean_prompt_tokens,
        output_tokens=max(1, round(pipeline.mean_completion_tokens)),
        shared_tokens=shared,
    )


async def run_bench(
    config: RunConfig, settings: BenchSettings, view: BenchView | None = None
) -> BenchResult:
    """The whole sweep against ``config.endpoints``; see the module docstring.

    Raises ServerError when the server cannot be reached at all, SeedError when the
    seed files are unusable.
    """
    view = view or BenchView(enabled=False)
    # The key, when the server wants one, guards /v1 (and /metrics on some deployments).
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else None
    async with aiohttp.ClientSession(headers=headers) as session:
        sweep = _Sweep(config, settings, session, view)
        await check_reachable(session, sweep.endpoints, config.client.ready_timeout_s)
        facts = await sizing.read_server_facts(session, sweep.endpoints[0])
        if not settings.concurrency:
            # The batch soc-async serve started the engines with (its endpoints file, or
            # managed engines), where the server itself does not say it.
            started = config.concurrency.per_engine
            if facts.max_num_seqs is None and started:
                facts = msgspec.structs.replace(facts, max_num_seqs=started)
            plan = sizing.plan_sweep(facts)
            source = plan.source
            if started and facts.max_num_seqs == started:
                source = f"up to {started}, concurrency.per_engine (the engines' batch)"
            settings = msgspec.structs.replace(
                settings, concurrency=plan.concurrency, sweep_source=source
            )
            sweep.settings = settings
        view.note("sweep", concurrency=settings.concurrency, source=settings.sweep_source)
        fixed = [
            config_mod.override(config, {"concurrency.fixed": c}) for c in settings.concurrency
        ]
        # Warm-up and calibration: model name, vLLM version, words -> tokens.
        async with ModelGateway(fixed[0], RunCounters()) as gateway:
            model = gateway.model
            try:
                fit = await load.probe_fit(gateway, config.seed)
            except ValueError as exc:
                raise ServerError(
                    f"{sweep.endpoints[0]}: cannot size the synthetic load ({exc}); does the "
                    "server report usage.prompt_tokens?"
                ) from exc
        vllm_version = await _server_version(session, sweep.endpoints[0])
        view.note("calibrated", model=model, tokens_per_word=round(fit.per_word, 3))
        phases: list[PhaseResult] = []
        for c, cfg in zip(settings.concurrency, fixed, strict=True):
            result = await sweep.pipeline(c, cfg, f"pipeline C={c}")
            phases.append(result)
            shape = ceiling_shape(result, c, settings.shared_prefix)
            if shape is None:
                view.note("no turns answered: no ceiling to compare with", concurrency=c)
                continue
            phases.append(await sweep.ceiling(c, cfg, shape, fit))
        if settings.adaptive:
            lo, hi = min(settings.concurrency), max(settings.concurrency)
            initial = min(hi, max(lo, config.concurrency.initial))
            # A simulated server runs faster than real time: so does its controller.
            interval = config.concurrency.interval_s / (facts.time_scale or 1.0)
            limits = msgspec.structs.replace(
                config.concurrency,
                fixed=None,
                min=lo,
                max=hi,
                initial=initial,
                interval_s=max(0.01, interval),
            )
            adaptive = msgspec.structs.replace(config, concurrency=limits)
            phases.append(await sweep.pipeline(None, adaptive, "adaptive"))
    data = msgspec.to_builtins(config)
    data.pop("api_key", None)
    return BenchResult(
        settings=settings,
        config=data,
        environment={
            **environment(config, model, vllm_version, fit),
            "server_facts": msgspec.to_builtins(facts),
        },
        phases=phases,
        summary=summarize(phases, settings.tolerance),
    )
