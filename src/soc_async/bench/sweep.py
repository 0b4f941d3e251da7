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

import contextlib
import io
import random
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
from rich.console import Console

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
from soc_async.bench.pipeline import ChatTally, Stagger, run_chats
from soc_async.bench.recording import RecordingCompleter
from soc_async.bench.results import BenchSettings, PhaseResult, Variant, phase_result
from soc_async.chat.rollout import ChatEvent, encode_event
from soc_async.config import CALL_KINDS, RunConfig, RunFacts
from soc_async.llm.metrics import MetricsSnapshot, combine, parse_metrics
from soc_async.llm.types import ChatRequest
from soc_async.records import Experience, Persona
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import LiveView, RunCounters
from soc_async.store.journal import Journal

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


# The adaptive controller's decisions a phase's settled window leaves out (bench/
# steady.py): from the lower end of a sweep it has reached its level and, past a knee,
# found the edge and come back within about four (tests/test_gateway_sim.py's engines).
SETTLE_DECISIONS = 5


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
                limits=[(started + t, cap) for t, cap in steps],
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
            warm_s=self.settings.settle_s if phase in ("pipeline", "adaptive") else None,
            **extra,
        )

    async def pipeline(
        self, concurrency: int | None, config: RunConfig, label: str, variant: Variant = ""
    ) -> PhaseResult:
        """The chat stage under a fixed limit (``concurrency``) or the adaptive one (None).

        Starts are staggered (bench/pipeline.py) except in the "lockstep" variant;
        "no-priority" sends no priority field whatever the engines schedule by;
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

            facts = gateway.facts
            if variant == "no-priority":
                facts = msgspec.structs.replace(facts, priority_scheduling=False)
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
                    facts=facts,
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
        if self.found.send_priority(config):
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


def changes(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The points of a step function where its value changes (the first always kept)."""
    out: list[tuple[float, int]] = []
    for t, value in steps:
        if not out or value != out[-1][1]:
            out.append((t, value))
    return out


class _Discard(io.TextIOBase):
    """A terminal that keeps nothing: the panel is drawn in full, its output dropped."""

    def write(self, text: str) -> int:
        return len(text)

    def isatty(self) -> bool:
        return True
