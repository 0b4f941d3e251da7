"""The run: personas, then experiences streaming into chats, under one concurrency limit.

This module wires the parts together and holds no domain rules: stages decide what a
valid item is, the store makes it durable, the scheduler bounds how much runs at once.

Item indices are the run's unit of work. Stage ``s`` covers indices ``range(target_s)``
(only those of this shard, ``index % n == i``); chat ``j`` is rolled out from the
experience with index ``j``, so a chat never waits on an unrelated experience and a
resumed or sharded run maps the same chat to the same experience. Experiences need the
whole persona pool for pairing, so they start once the persona stage is done; chats start
as soon as their experience is accepted, through a bounded stream.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from soc_async import logs
from soc_async.chat.rollout import ChatStage, StartEvent, decode_event, encode_event
from soc_async.config import RunConfig, RunFacts
from soc_async.errors import InputError
from soc_async.fewshot import FewShotRing, RingSnapshot
from soc_async.llm.types import Completer
from soc_async.neardup import NearDuplicateIndex
from soc_async.records import (
    STAGES,
    Conversation,
    Experience,
    Failure,
    Persona,
    id_index,
    make_id,
)
from soc_async.run.progress import RunCounters
from soc_async.scheduler.runner import Pipe, StopSignal, feed, stream_map
from soc_async.seeds import persona_cards
from soc_async.stages.archetype_monitor import archetype_monitor
from soc_async.stages.experiences import ExperienceStage, seed_experiences
from soc_async.stages.pairing import PersonaPool, pair_for
from soc_async.stages.personas import PersonaStage
from soc_async.stages.style_monitor import StyleMonitor
from soc_async.stats import load_stats_engine
from soc_async.store import DATA_FILES, RunDir, Writers

log = logs.get("pipeline")

RecordT = TypeVar("RecordT", Persona, Experience, Conversation, Failure, Any)


def rebuilt_index(
    threshold: float, items: list[tuple[str, str, list[str]]]
) -> NearDuplicateIndex | None:
    """The dataset-wide near-duplicate index of the accepted ``(id, text, names)`` items,
    as a resumed run must have it; None when ``threshold`` is 0 (the check is off)."""
    return NearDuplicateIndex.rebuilt(threshold, items) if threshold > 0 else None


@dataclass
class Finished:
    """What the run directory already holds, read once before the stages start."""

    personas: list[Persona]  # in index order
    experiences: list[Experience]  # in index order
    conversations: int  # finished conversations
    finished: dict[str, set[str]]  # ids done or failed, per stage
    pending: dict[str, list[bytes]]  # journaled steps of chats in progress
    todo: dict[str, list[int]] = field(default_factory=dict)  # this shard's indices left

    @functools.cached_property
    def experience_by_index(self) -> dict[int, Experience]:
        return {id_index(r.id): r for r in self.experiences}


def read_finished(run_dir: RunDir) -> Finished:
    """Reads the run directory for a (re)start; blocking file work, so the pipeline runs
    it in a worker thread: a resume of 100,000 records must not freeze the event loop.
    Opening the journal (which compacts it) and every writer (which scans its file's ids)
    happen here too, for the same reason."""
    personas = [r for r in run_dir.iter_records("personas") if isinstance(r, Persona)]
    experiences = [r for r in run_dir.iter_records("experiences") if isinstance(r, Experience)]
    conversations = sum(1 for h in run_dir.scan("conversations") if h.kind == "conversation")
    finished = {stage: run_dir.finished_ids(stage) for stage in STAGES}
    pending = run_dir.journal_pending()
    for name in DATA_FILES:
        run_dir.writer(name)
    return Finished(
        personas=sorted(personas, key=lambda p: id_index(p.id)),
        experiences=sorted(experiences, key=lambda e: id_index(e.id)),
        conversations=conversations,
        finished=finished,
        pending=pending,
    )


def shard_indices(target: int, shard: tuple[int, int]) -> list[int]:
    """The indices of ``range(target)`` that belong to shard ``i`` of ``n``."""
    i, n = shard
    return list(range(i, target, n))


async def rebuilt_ring(
    seeds: list[str], accepted: list[str], *, capacity: int, reset_every: int
) -> FewShotRing[str]:
    """The ring an interrupted run had: its seeds, then the items accepted since the last
    reset (``accepted`` oldest first), the oldest aging out past ``capacity``."""
    ring: FewShotRing[str] = FewShotRing(seeds, capacity=capacity, reset_every=reset_every)
    since = len(accepted) % reset_every
    recent = accepted[len(accepted) - since :] if since else []
    items = (list(seeds) + recent)[-capacity:]
    await ring.restore(RingSnapshot(items=items, accepted=len(accepted), since_reset=since))
    return ring


class Pipeline:
    """One run over one run directory."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: RunDir,
        completer: Completer,
        *,
        facts: RunFacts,
        stop: StopSignal,
        counters: RunCounters,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.completer = completer
        self.facts = facts
        self.stop = stop
        self.counters = counters
        # The run's bound on requests in flight, as the gateway sized it from the engines.
        self.max_active = (
            config.concurrency.max or facts.max_in_flight or config.concurrency.max_active_chats
        )
        self.shard = config.shard_parts()
        self.pipes: list[Pipe[Any]] = []  # the streams between stages, for the live panel

    async def run(self) -> None:
        """Runs every stage to its target, or until a stop is requested."""
        async with self.run_dir.writers() as out:
            done = await anyio.to_thread.run_sync(self._read_and_plan)
            personas = await self._personas(out, done)
            if not self.stop.requested:
                await self._experiences_and_chats(out, personas, done)

    # --- personas ---------------------------------------------------------------------

    async def _personas(self, out: Writers, done: Finished) -> list[Persona]:
        cfg = self.config
        existing = list(done.personas)
        todo = done.todo["personas"]
        if todo:
            ring = await rebuilt_ring(
                persona_cards(),
                [p.persona_text for p in existing],
                capacity=cfg.persona.ring_capacity,
                reset_every=cfg.persona.reset_every,
            )
            sampler = load_stats_engine(cfg.persona, cfg.archetypes, cfg.seed)
            monitor = archetype_monitor(cfg.archetypes, existing)
            dedup = await anyio.to_thread.run_sync(
                rebuilt_index,
                cfg.persona.dedup_threshold,
                [(p.id, p.persona_text, [p.meta.name]) for p in existing],
            )
            stage = PersonaStage(
                cfg, self.completer, sampler, ring, self.facts, dedup=dedup, archetypes=monitor
            )

            async def one(i: int) -> None:
                record = await self._counted(
                    "personas", stage.write(i, make_id(cfg.seed, "personas", i)), out
                )
                if isinstance(record, Persona):
                    existing.append(record)

            await self._stream(
                "personas",
                todo,
                one,
                max_active=self.max_active,
            )
        return sorted(existing, key=lambda p: p.id)

    # --- experiences and chats ----------------------------------------------------------

    async def _experiences_and_chats(
        self, out: Writers, personas: list[Persona], done: Finished
    ) -> None:
        cfg = self.config
        experiences = done.experience_by_index
        exp_todo = done.todo["experiences"]
        chat_todo = set(done.todo["chats"])
        if exp_todo and len(personas) < 2:
            raise InputError(
                f"{self.run_dir.path}: experiences need at least 2 personas, found "
                f"{len(personas)}; generate personas first (--personas N)"
            )
        pending = {
            chat_id: [decode_event(e) for e in events] for chat_id, events in done.pending.items()
        }
        # Chats whose experience exists go first, those already mid-way before the rest:
        # they are closest to done.
        ready = sorted(
            (experiences[j] for j in chat_todo if j in experiences),
            key=lambda e: make_id(cfg.seed, "chats", id_index(e.id)) not in pending,
        )
        new_experiences = await self._experience_stage(
            personas, done.experiences, index=bool(exp_todo)
        )
        chat_stage = ChatStage(
            cfg,
            self.completer,
            facts=self.facts,
            journal=lambda cid, ev: self.run_dir.journal_append(cid, encode_event(ev)),
        )
        by_id = {p.id: p for p in personas}

        async def make_experience(i: int) -> Experience | None:
            record = await self._counted("experiences", new_experiences(i), out)
            if isinstance(record, Failure) and i in chat_todo:
                self.counters.stages["chats"].skipped += 1  # chat i has no experience
            wanted = isinstance(record, Experience) and id_index(record.id) in chat_todo
            return record if wanted else None

        async def make_chat(experience: Experience) -> None:
            chat_id = make_id(cfg.seed, "chats", id_index(experience.id))
            events = pending.get(chat_id, [])
            first = events[0] if events else None
            if isinstance(first, StartEvent) and first.experience_id != experience.id:
                events = []  # journaled against another experience (an import replaced it)
            rollout = chat_stage.roll_out(chat_id, experience, by_id, events)
            await self._counted("chats", rollout, out)
            await self.run_dir.journal_done(chat_id)

        exp_pipe: Pipe[int] = Pipe("experiences", cfg.concurrency.queue_depth)
        chat_pipe: Pipe[Experience] = Pipe("chats", cfg.concurrency.queue_depth)
        self.pipes = [exp_pipe, chat_pipe]
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(feed, stop=self.stop), ready, chat_pipe.send.clone())
            tg.start_soon(functools.partial(feed, stop=self.stop), exp_todo, exp_pipe.send)
            tg.start_soon(
                functools.partial(
                    stream_map,
                    max_active=self.max_active,
                    stop=self.stop,
                ),
                make_experience,
                exp_pipe.receive,
                chat_pipe.send,
            )
            tg.start_soon(
                functools.partial(
                    stream_map, max_active=cfg.concurrency.max_active_chats, stop=self.stop
                ),
                make_chat,
                chat_pipe.receive,
                None,
            )

    async def _experience_stage(
        self, personas: list[Persona], earlier: list[Experience], *, index: bool = True
    ) -> Callable[[int], Awaitable[Experience | Failure]]:
        """The experience of index ``i``, written by a stage whose ring, style monitor and
        near-duplicate index are rebuilt as the interrupted run left them (``earlier``: in
        index order; ``index`` False: no experience is left to write, so no index)."""
        cfg = self.config
        ring = await rebuilt_ring(
            seed_experiences(),
            [r.experience_text for r in earlier],
            capacity=cfg.experience.ring_capacity,
            reset_every=cfg.experience.reset_every,
        )
        monitor = StyleMonitor(cfg.experience.style_window, cfg.experience.style_min_pool)
        for r in earlier[-cfg.experience.style_window :]:
            monitor.observe(r.style)
        by_id = {p.id: p for p in personas}
        # Signatures of 100,000 accepted experiences take a minute and a half to compute,
        # and grouping as many personas by region a while: not on the event loop.
        dedup = await anyio.to_thread.run_sync(
            rebuilt_index,
            cfg.experience.dedup_threshold if index else 0.0,
            [
                (r.id, r.experience_text, [by_id[p].meta.name for p in r.persona_ids if p in by_id])
                for r in earlier
            ],
        )
        stage = ExperienceStage(cfg, self.completer, ring, monitor, self.facts, dedup=dedup)
        pool = await anyio.to_thread.run_sync(PersonaPool, personas) if len(personas) >= 2 else None

        async def write(i: int) -> Experience | Failure:
            assert pool is not None
            pair = pair_for(i, cfg.seed, pool, cfg.experience.region_match)
            return await stage.write(
                i,
                make_id(cfg.seed, "experiences", i),
                (by_id[pair.a], by_id[pair.b]),
                pair.region_matched,
            )

        return write

    # --- shared machinery ---------------------------------------------------------------

    def _read_and_plan(self) -> Finished:
        """What is finished and what is left to do; blocking (a worker thread runs it):
        at 100,000 records the ids alone take a second to compute."""
        # The cyclic collector would run full passes over the records while they are being
        # read, each holding the GIL (and so the event loop) for half a second at 100,000
        # records: it waits, and what was read, which lives as long as the run, is then
        # moved out of its reach (gc.freeze).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            done = read_finished(self.run_dir)
            done.experience_by_index  # noqa: B018 - computed here, in the worker thread
            targets = self.config.targets
            done.todo = {
                "personas": self._todo("personas", targets.personas, len(done.personas), done),
                "experiences": self._todo(
                    "experiences", targets.experiences, len(done.experiences), done
                ),
                "chats": self._todo(
                    "chats", self.facts.chat_target(self.config), done.conversations, done
                ),
            }
            gc.freeze()
        finally:
            if was_enabled:
                gc.enable()
        return done

    def _todo(self, stage: str, target: int, done: int, state: Finished) -> list[int]:
        """This shard's indices of ``stage`` not yet finished; sets the stage's counters."""
        cfg = self.config
        finished = state.finished[stage]
        mine = shard_indices(target, self.shard)
        count = self.counters.stages[stage]
        count.target = len(mine)
        count.done = done
        count.failed = len(finished) - done
        return [i for i in mine if make_id(cfg.seed, stage, i) not in finished]

    async def _counted(self, stage: str, work: Awaitable[RecordT], out: Writers) -> RecordT:
        """Awaits one item's record, writes it and counts it as done or failed."""
        count = self.counters.stages[stage]
        count.active += 1
        try:
            record = await work
        finally:
            count.active -= 1
        await out.put(record)
        self.counters.on_record(record)
        if isinstance(record, Failure):
            count.failed += 1
        else:
            count.done += 1
        return record

    async def _stream(self, name: str, items: list[int], fn, *, max_active: int) -> None:
        pipe: Pipe[int] = Pipe(name, self.config.concurrency.queue_depth)
        self.pipes = [pipe]
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(feed, stop=self.stop), items, pipe.send)
            tg.start_soon(
                functools.partial(stream_map, max_active=max_active, stop=self.stop),
                fn,
                pipe.receive,
                None,
            )
