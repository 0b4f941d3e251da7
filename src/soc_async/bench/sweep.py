"""One bench run's state from phase to phase, and the phases it measures.

:class:`Sweep` carries what a bench run keeps between its phases (the personas and
seed experiences, the conversations handed out so far, the nonce that keeps one run's
synthetic prompts out of another's prefix cache, the notes) and runs each phase: a
pipeline of chats, a ceiling load, vLLM's own benchmark, the breakdown's variants.
Each phase runs under a fresh :class:`~soc_async.run.gateway.ModelGateway` between two
/metrics readings (:func:`read_servers`), whose difference is its share of the servers'
counters. :func:`soc_async.bench.runner.run_bench` decides the order.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from soc_async import config as config_mod
from soc_async.bench import load, reference
from soc_async.bench.cast import bench_conversations, cast_experiences, seed_personas
from soc_async.bench.live import BenchView
from soc_async.bench.metrics import (
    TTFT_METRIC,
    MetricHistogram,
    counter_delta,
    histogram_delta,
    merge_histograms,
    parse_histogram,
    time_weighted_mean,
)
from soc_async.bench.pipeline import ChatTally, run_chats
from soc_async.bench.recording import RecordingCompleter
from soc_async.bench.results import BenchSettings, PhaseResult, Variant, phase_result
from soc_async.config import CALL_KINDS, RunConfig, RunFacts
from soc_async.llm.metrics import MetricsSnapshot, combine, parse_metrics
from soc_async.llm.types import ChatRequest
from soc_async.records import Experience, Persona
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters

__all__ = ["ServerReading", "Sweep", "bench_endpoints", "changes", "read_servers"]


class ServerReading(msgspec.Struct, kw_only=True):
    """/metrics of every endpoint at one moment; None parts could not be read."""

    snapshot: MetricsSnapshot | None = None
    ttft: MetricHistogram | None = None


async def read_servers(session: aiohttp.ClientSession, endpoints: list[str]) -> ServerReading:
    """Every endpoint's /metrics, combined; an empty reading if any cannot be read.

    A bench figure from some servers only would be wrong, so it is all or nothing.
    """
    snaps: list[MetricsSnapshot] = []
    hists: list[MetricHistogram | None] = []
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


def bench_endpoints(config: RunConfig, found: RunFacts) -> list[str]:
    """Every server the bench measures, each once: the run's (an endpoints file's or
    managed engines', else the config's), then each call kind's."""
    urls = list(found.endpoints or config.endpoints)
    for kind in CALL_KINDS:
        urls += [u for u in config.call(kind).endpoints if u not in urls]
    return urls


class Sweep:
    """The state one bench run carries from phase to phase."""

    def __init__(
        self,
        config: RunConfig,
        settings: BenchSettings,
        session: aiohttp.ClientSession,
        view: BenchView,
        found: RunFacts | None = None,
    ) -> None:
        self.config = config
        self.found = found if found is not None else RunFacts.of(config)
        self.settings = settings
        self.session = session
        self.view = view
        self.endpoints = bench_endpoints(config, self.found)
        self.personas: list[Persona] = seed_personas(config.seed)
        self.seeds = cast_experiences(self.personas, config)
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
        async with ModelGateway(config, RunCounters(), self.found) as gateway:
            recorder = RecordingCompleter(gateway)
            if prepare is not None:
                await gateway.complete("turn", prepare)

            def probe() -> tuple[int, int, int, int]:
                done = tally.done + tally.failed if tally else len(recorder.samples)
                return done, recorder.output_tokens, recorder.live, gateway.capacity

            before = await read_servers(self.session, self.endpoints)
            started = time.monotonic()
            async with self.view.phase(label, total, probe):
                await work(recorder, gateway)
            duration = time.monotonic() - started
            after = await read_servers(self.session, self.endpoints)
            history = gateway.capacity_history()  # the engines' limits summed
            start_capacity = sum(gateway.starts.values()) or gateway.capacity
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
                [(0.0, start_capacity)] + [(max(0.0, t - started), cap) for t, cap in history]
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
                facts=gateway.facts,
                tally=tally,
            )

        phase = "pipeline" if concurrency else "adaptive"
        return await self.measure(
            phase, concurrency, config, label, n, work, tally, variant=variant
        )

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
        """The phases that each switch one thing off (bench/breakdown.py): the pipeline's
        own lengths as a load ("ceiling", "spread"); the pipeline without the turn
        grammar, and without summary calls when it made any, each followed by a load of
        its own lengths (a variant writes other lengths: a small model without a grammar
        writes longer turns), so that each is read against the work it did."""
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


def changes(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The points of a step function where its value changes (the first always kept)."""
    out: list[tuple[float, int]] = []
    for t, value in steps:
        if not out or value != out[-1][1]:
            out.append((t, value))
    return out
