"""The bench run: for each concurrency value the pipeline, then the ceiling; then adaptive.

With ``--reference`` vLLM's own benchmark follows each ceiling (bench/reference.py);
with ``--breakdown`` the phases that switch one thing off follow (bench/breakdown.py).
Phases run one after another against the same server(s), each with its own
:class:`~soc_async.run.gateway.ModelGateway` (so its own limit, fixed or adaptive) and a /metrics
reading before and after, whose difference is that phase's share of the server's
counters. The pure arithmetic lives in :mod:`soc_async.bench.metrics` and
:mod:`soc_async.bench.results`; this module does the I/O and the order.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import platform
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
from rich.console import Console

from soc_async import config as config_mod
from soc_async.bench import calibrate, load, reference, sizing
from soc_async.bench.breakdown import loss_steps
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
from soc_async.bench.pipeline import ChatTally, Stagger, run_chats
from soc_async.bench.recording import RecordingCompleter
from soc_async.bench.results import (
    BenchResult,
    BenchSettings,
    PhaseResult,
    Variant,
    phase_result,
    summarize,
)
from soc_async.chat.rollout import ChatEvent, encode_event
from soc_async.config import CALL_KINDS, RunConfig
from soc_async.errors import ServerError
from soc_async.llm.metrics import MetricsSnapshot, combine, parse_metrics
from soc_async.llm.readiness import wait_until_ready
from soc_async.llm.types import ChatRequest
from soc_async.records import Experience, Persona
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import LiveView, RunCounters
from soc_async.store.journal import Journal

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
    config: RunConfig,
    model: str,
    vllm_version: str | None,
    fit: load.TokenFit | None,
    **more: Any,
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
        **more,
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
        # Drawn afresh for every bench run: the synthetic prompts (ceiling, reference) of
        # an earlier run against the same server must not be found in its prefix cache.
        self.nonce = secrets.randbits(31)
        self.draws = 0
        self.notes: list[str] = []
        self.last_turns: list[tuple[int, int, int]] = []  # the last pipeline's turns

    def fresh_seed(self, tag: str) -> int:
        """A seed of this bench run's own for the load called ``tag``, another at every
        call: a load repeated in one run must not find its own prompts cached either."""
        self.draws += 1
        return random.Random(f"{self.nonce}:{tag}:{self.draws}").randrange(2**31)

    def note(self, line: str) -> None:
        """A line for the table's notes and bench.json, shown at once too."""
        self.notes.append(line)
        self.view.note(line)

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
        variant: Variant = "",
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
        if phase == "pipeline":
            self.last_turns = [
                (s.prompt, s.cached, s.completion) for s in recorder.samples if s.kind == "turn"
            ]
        return phase_result(
            phase,  # type: ignore[arg-type]
            concurrency,
            recorder.samples,
            errors=recorder.errors,
            duration_s=duration,
            server=server,
            ttft=ttft,
            variant=variant,
            **extra,
        )

    async def pipeline(
        self, concurrency: int | None, config: RunConfig, label: str, variant: Variant = ""
    ) -> PhaseResult:
        """The chat stage under a fixed limit (``concurrency``) or the adaptive one (None).

        Starts are staggered (bench/pipeline.py) except in the "lockstep" variant;
        "monitored" adds what a run does beside its chats on the same machine (a /metrics
        reading every ``concurrency.interval_s``, the controller's, and the live panel
        drawn once a second to a terminal that discards it); "journaled" writes every
        accepted turn to a journal in a temporary directory, fsynced as a run's is.
        """
        limit = concurrency or config.concurrency.max or config.concurrency.initial
        n = self.settings.conversations_for(limit)
        experiences = self.experiences(n)

        tally = ChatTally(n)

        async def work(recorder: RecordingCompleter, gateway: ModelGateway) -> None:
            def first_turn_s() -> float | None:
                return recorder.samples[0].latency_s if recorder.samples else None

            stagger = None if variant == "lockstep" else Stagger(limit, first_turn_s)
            async with contextlib.AsyncExitStack() as stack:
                journal, finished = None, None
                if variant == "journaled":
                    where = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
                    book = Journal.open(Path(where) / "journal.jsonl")
                    await stack.enter_async_context(book)

                    async def journal(chat_id: str, event: ChatEvent) -> None:
                        await book.append(chat_id, encode_event(event))

                    finished = book.done
                tg = await stack.enter_async_context(anyio.create_task_group())
                if variant == "monitored":
                    tg.start_soon(self._monitor, gateway, config.concurrency.interval_s)
                await run_chats(
                    recorder,
                    config,
                    experiences,
                    self.personas,
                    model_name=gateway.model,
                    send_priority=config.client.send_priority,
                    tally=tally,
                    stagger=stagger,
                    journal=journal,
                    finished=finished,
                )
                tg.cancel_scope.cancel()

        phase = "pipeline" if concurrency else "adaptive"
        return await self.measure(
            phase, concurrency, config, label, n, work, tally, variant=variant
        )

    async def _monitor(self, gateway: ModelGateway, every_s: float) -> None:
        """What a run does beside its chats: /metrics read every ``every_s`` and the
        live panel drawn once a second, to a terminal whose output is discarded."""
        console = Console(file=_Discard(), force_terminal=True, width=160)
        with LiveView(gateway.counters, enabled=True, console=console) as view:
            async with anyio.create_task_group() as tg:
                tg.start_soon(view.run)
                while True:
                    await read_servers(self.session, self.endpoints)
                    await anyio.sleep(every_s)

    async def ceiling(
        self,
        concurrency: int,
        config: RunConfig,
        items: list[load.RequestShape],
        fit: load.TokenFit,
        variant: Variant = "",
    ) -> PhaseResult:
        seed = self.fresh_seed(f"ceiling:{concurrency}:{variant}")
        requests = load.build_requests(items, fit, seed)
        # The pipeline finds most of each prompt cached by the conversation's previous
        # turn; the load's shared prefix is cached before the clock starts, likewise (as
        # vLLM's benchmark does, by sending its first prompt once). Otherwise the first C
        # requests, all sent at once, would each compute it.
        warm = load.warm_request(items, requests)

        async def work(recorder: RecordingCompleter, gateway: ModelGateway) -> None:
            await load.run_load(recorder, requests)

        label = f"ceiling  C={concurrency}" + (f" {variant}" if variant else "")
        result = await self.measure(
            "ceiling", concurrency, config, label, len(requests), work, prepare=warm,
            variant=variant,
        )  # fmt: skip
        result.method = {"seed": seed, "warm_up": "the prompt sharing most, 1 token"}
        return result

    async def reference(
        self, module: Any, concurrency: int, shape: load.LoadShape
    ) -> PhaseResult | None:
        """vLLM's own benchmark shaped like the ceiling ``shape``; None (and a note) when it
        fails, so the sweep goes on without it."""
        plan = reference.plan_reference(
            shape, concurrency, self.fresh_seed(f"reference:{concurrency}")
        )
        argv = reference.reference_argv(plan, self.endpoints[0], self.config.api_key)
        before = await read_servers(self.session, self.endpoints)

        def probe() -> tuple[int, int, int, int]:
            return 0, 0, 0, concurrency

        try:
            async with self.view.phase(f"vLLM bench C={concurrency}", plan.requests, probe):
                data = await reference.run_benchmark(module, argv)
        except reference.ReferenceFailed as exc:
            self.note(f"no reference at C={concurrency}: {exc}")
            return None
        after = await read_servers(self.session, self.endpoints)
        server, ttft = None, None
        if before.snapshot is not None and after.snapshot is not None:
            server = counter_delta(before.snapshot, after.snapshot)
            ttft = histogram_delta(before.ttft, after.ttft)
        return reference.reference_result(data, plan, server=server, ttft=ttft, argv=argv)

    async def breakdown(
        self,
        concurrency: int,
        config: RunConfig,
        pipeline: PhaseResult,
        fit: load.TokenFit,
        block: int | None,
    ) -> list[PhaseResult]:
        """The phases that each switch one thing (bench/breakdown.py): the pipeline's
        own lengths as a load ("ceiling", "spread"); the pipeline without the turn
        grammar, and without summary calls when it made any, each followed by a load of
        its own lengths (a variant writes other lengths: a small model without a grammar
        writes longer turns), so that each is read against the work it did; then the
        pipeline without the priority field (when it sends one), without seeds (when it
        sends them), started in lockstep, monitored as a run is, and journaling."""
        own = await self.spread(concurrency, config, pipeline, fit, block, "spread")
        out: list[PhaseResult | None] = [own]
        variants: list[tuple[Variant, dict[str, Any], str]] = []
        if config.call("turn").grammar:
            variants.append(("no-grammar", {"calls.turn.grammar": False}, "no grammar"))
        if pipeline.requests_by_kind.get("summary"):
            window = max(config.chat.max_turns + 1, config.chat.active_window)  # no fold
            variants.append(("no-summaries", {"chat.active_window": window}, "no summaries"))
        for variant, changes, words in variants:
            off = config_mod.override(config, changes)
            label = f"pipeline C={concurrency} {words}"
            result = await self.pipeline(concurrency, off, label, variant)
            out += [result, await self.spread(concurrency, config, result, fit, block, variant)]
        # Switches read straight against the pipeline: they change how the same work is
        # sent, not what the model writes.
        switches: list[tuple[Variant, dict[str, Any], str]] = []
        if config.client.send_priority:
            switches.append(("no-priority", {"client.send_priority": False}, "no priority"))
        if config.client.send_seed:
            switches.append(("no-seeds", {"client.send_seed": False}, "no seeds"))
        switches += [
            ("lockstep", {}, "lockstep"),
            ("monitored", {}, "monitored"),
            ("journaled", {}, "journaled"),
        ]
        for variant, changes, words in switches:
            off = config_mod.override(config, changes) if changes else config
            label = f"pipeline C={concurrency} {words}"
            out.append(await self.pipeline(concurrency, off, label, variant))
        return [p for p in out if p is not None]

    async def spread(
        self,
        concurrency: int,
        config: RunConfig,
        pipeline: PhaseResult,
        fit: load.TokenFit,
        block: int | None,
        variant: Variant,
    ) -> PhaseResult | None:
        """A load replaying the last pipeline phase's own turn lengths (``pipeline``'s);
        None when it answered no turn."""
        turns = self.last_turns
        if not turns:
            return None
        share = pipeline.prefix_hit_rate
        if not any(c for _, c, _ in turns) and share is not None:
            # No per-request cached counts (the server's usage lacks them): the phase's share.
            turns = [(p, round(p * share), o) for p, _, o in turns]
        if not self.settings.shared_prefix:
            turns = [(p, 0, o) for p, _, o in turns]
        n = max(pipeline.requests, concurrency)
        items = load.spread_items(turns, n, block, self.fresh_seed(f"spread:{concurrency}"))
        return await self.ceiling(concurrency, config, items, fit, variant)


class _Discard(io.TextIOBase):
    """A terminal that keeps nothing: the panel is drawn in full, its output dropped."""

    def write(self, text: str) -> int:
        return len(text)

    def isatty(self) -> bool:
        return True


def changes(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The points of a step function where its value changes (the first always kept)."""
    out: list[tuple[float, int]] = []
    for t, value in steps:
        if not out or value != out[-1][1]:
            out.append((t, value))
    return out


def ceiling_shape(
    pipeline: PhaseResult, concurrency: int, shared_prefix: bool, block: int | None = None
) -> load.LoadShape | None:
    """The synthetic load that imitates a pipeline phase; None when it had no turns.

    Its shared prefix is the pipeline's prefix-cached share of the mean prompt, placed on
    the server's cache blocks (``block`` tokens each, when known) so that each request
    computes as many new tokens as the pipeline's did on average (load.place_prefix).
    """
    if pipeline.mean_prompt_tokens is None or pipeline.mean_completion_tokens is None:
        return None
    share = pipeline.prefix_hit_rate
    if share is None:
        share = pipeline.cached_share
    prompt, shared = pipeline.mean_prompt_tokens, 0.0
    if shared_prefix:
        prompt, shared = load.place_prefix(prompt, (share or 0.0) * prompt, block)
    return load.LoadShape(
        requests=max(pipeline.requests, concurrency),
        prompt_tokens=prompt,
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
        # Warm-up and calibration: model name, vLLM version, words -> tokens, cache blocks.
        async with ModelGateway(fixed[0], RunCounters()) as gateway:
            model = gateway.model
            fit = await _calibrate(sweep, gateway, model)
        block = facts.block_size  # vllm:cache_config_info, read by sizing
        if block is None and settings.shared_prefix:
            sweep.note(
                "the server reports no prefix-cache block size (vllm:cache_config_info): "
                "the ceiling's shared prefix is not placed on its blocks"
            )
        vllm_version = await _server_version(session, sweep.endpoints[0])
        view.note(
            "calibrated",
            model=model,
            tokens_per_word=round(fit.per_word, 3),
            exact=fit.exact,
            block_size=block,
        )
        benchmark = _reference_module(sweep) if settings.reference else None
        phases: list[PhaseResult] = []
        for c, cfg in zip(settings.concurrency, fixed, strict=True):
            result = await sweep.pipeline(c, cfg, f"pipeline C={c}")
            phases.append(result)
            shape = ceiling_shape(result, c, settings.shared_prefix, block)
            if shape is None:
                view.note("no turns answered: no ceiling to compare with", concurrency=c)
                continue
            phases.append(await sweep.ceiling(c, cfg, shape.items(), fit))
            if benchmark is not None:
                ref = await sweep.reference(benchmark, c, shape)
                phases += [ref] if ref is not None else []
            if settings.breakdown:
                phases += await sweep.breakdown(c, cfg, result, fit, block)
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
            **environment(config, model, vllm_version, fit, load_nonce=sweep.nonce),
            "server_facts": msgspec.to_builtins(facts),
        },
        phases=phases,
        summary=summarize(phases, settings.tolerance),
        breakdown=loss_steps(phases, grammar=settings.grammar) if settings.breakdown else [],
        notes=sweep.notes,
    )


async def _calibrate(sweep: _Sweep, gateway: ModelGateway, model: str) -> load.TokenFit:
    """Words to the server's tokens: exact by its /tokenize, else fitted from probes."""
    url = sweep.endpoints[0]
    tokenizer = await calibrate.read_tokenizer(sweep.session, url, model)
    words = tokenizer.words if isinstance(tokenizer, calibrate.Tokenizer) else load.WORDS
    try:
        fit = await load.probe_fit(gateway, sweep.config.seed, vocabulary=words)
    except ValueError as exc:
        raise ServerError(
            f"{url}: cannot size the synthetic load ({exc}); does the server report "
            "usage.prompt_tokens?"
        ) from exc
    if isinstance(tokenizer, str):
        sweep.note(f"synthetic prompt lengths are fitted, not exact ({tokenizer})")
        return fit
    return calibrate.exact_fit(fit, tokenizer)


def _reference_module(sweep: _Sweep) -> Any:
    """vLLM's benchmark module for the reference phases, or None (and a note) without one.

    Imported here, before anything is measured: importing vLLM takes seconds of CPU.
    """
    if len(sweep.endpoints) > 1:
        sweep.note(
            "no reference phase: vLLM's benchmark measures one server, the bench uses several"
        )
        return None
    loaded = reference.load_benchmark()
    if isinstance(loaded, str):
        sweep.note(loaded)
        return None
    return loaded
