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

from collections.abc import AsyncIterator

import anyio

from soc_async import logs
from soc_async.config import RunConfig
from soc_async.errors import InputError
from soc_async.fewshot import FewShotRing, RingSnapshot
from soc_async.llm.types import Completer
from soc_async.progress import LiveView, RunStats
from soc_async.records import (
    Conversation,
    Experience,
    Failure,
    Persona,
    Record,
    id_index,
    make_id,
)
from soc_async.scheduler.runner import StopSignal
from soc_async.seeds import persona_cards
from soc_async.stages.chats import ChatEvent, ChatStage, StartEvent, decode_event, encode_event
from soc_async.stages.experiences import ExperienceStage, seed_experiences
from soc_async.stages.pairing import PersonaPool, pair_for
from soc_async.stages.personas import PersonaStage
from soc_async.stages.style_monitor import StyleMonitor
from soc_async.stats import StatsEngine, load_stats_engine
from soc_async.store import RunDir

log = logs.get("pipeline")


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
        model_name: str,
        stop: StopSignal,
        stats: RunStats,
        send_priority: bool = False,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.completer = completer
        self.model_name = model_name
        self.stop = stop
        self.stats = stats
        self.send_priority = send_priority
        self.shard = config.shard_parts()

    async def run_with_view(self, view: LiveView) -> None:
        """:meth:`run`, refreshing ``view`` while it goes."""
        async with anyio.create_task_group() as tg:

            async def refresh() -> None:
                while True:
                    view.refresh()
                    await anyio.sleep(0.5)

            tg.start_soon(refresh)
            await self.run()
            tg.cancel_scope.cancel()

    async def run(self) -> None:
        """Runs every stage to its target, or until a stop is requested."""
        async with self.run_dir.writers() as out, anyio.create_task_group() as tg:
            tg.start_soon(self._report_loop)
            try:
                personas = await self._personas(out)
                if not self.stop.requested:
                    await self._experiences_and_chats(out, personas)
            finally:
                tg.cancel_scope.cancel()

    # --- personas ---------------------------------------------------------------------

    async def _personas(self, out) -> list[Persona]:
        cfg = self.config
        existing = [r for r in self.run_dir.load("personas") if isinstance(r, Persona)]
        done = self.run_dir.finished_ids("personas")
        todo = [
            i
            for i in shard_indices(cfg.targets.personas, self.shard)
            if make_id(cfg.seed, "personas", i) not in done
        ]
        count = self.stats.stages["personas"]
        count.target = len(shard_indices(cfg.targets.personas, self.shard))
        count.done = len(existing)
        count.failed = len(done) - len(existing)
        if todo:
            ring = await rebuilt_ring(
                persona_cards(),
                [p.persona_text for p in sorted(existing, key=lambda p: id_index(p.id))],
                capacity=cfg.persona.ring_capacity,
                reset_every=cfg.persona.reset_every,
            )
            stage = PersonaStage(cfg, self.completer, self._stats_engine(), ring, self.model_name)
            fresh = await self._map(
                "personas",
                todo,
                lambda i: stage.write(i, make_id(cfg.seed, "personas", i)),
                out,
            )
            existing += [r for r in fresh if isinstance(r, Persona)]
        return sorted(existing, key=lambda p: p.id)

    def _stats_engine(self) -> StatsEngine:
        return load_stats_engine(self.config.persona)

    # --- experiences and chats ----------------------------------------------------------

    async def _experiences_and_chats(self, out, personas: list[Persona]) -> None:
        cfg = self.config
        by_id = {p.id: p for p in personas}
        experiences = {
            id_index(r.id): r for r in self.run_dir.load("experiences") if isinstance(r, Experience)
        }
        exp_done = self.run_dir.finished_ids("experiences")
        exp_todo = [
            i
            for i in shard_indices(cfg.targets.experiences, self.shard)
            if make_id(cfg.seed, "experiences", i) not in exp_done
        ]
        ec = self.stats.stages["experiences"]
        ec.target = len(shard_indices(cfg.targets.experiences, self.shard))
        ec.done = len(experiences)
        ec.failed = len(exp_done) - len(experiences)

        chat_done = self.run_dir.finished_ids("chats")
        pending = {
            chat_id: [decode_event(e) for e in events]
            for chat_id, events in self.run_dir.journal_pending().items()
        }
        chat_indices = [
            j
            for j in shard_indices(cfg.targets.chats, self.shard)
            if make_id(cfg.seed, "chats", j) not in chat_done
        ]
        cc = self.stats.stages["chats"]
        cc.target = len(shard_indices(cfg.targets.chats, self.shard))
        cc.done = sum(1 for r in self.run_dir.load("conversations") if isinstance(r, Conversation))
        cc.failed = len(chat_done) - cc.done
        wanted = set(chat_indices)
        if exp_todo and len(personas) < 2:
            raise InputError(
                f"{self.run_dir.path}: experiences need at least 2 personas, found "
                f"{len(personas)}; generate personas first (--personas N)"
            )

        send, receive = anyio.create_memory_object_stream[Experience](cfg.concurrency.queue_depth)
        chat_stage = ChatStage(
            cfg,
            self.completer,
            model_name=self.model_name,
            journal=lambda cid, ev: self.run_dir.journal_append(cid, encode_event(ev)),
            send_priority=self.send_priority,
        )

        async def produce() -> None:
            async with send:
                # Chats that were mid-way first: they are closest to done.
                ready = sorted(
                    (j for j in chat_indices if j in experiences),
                    key=lambda j: make_id(cfg.seed, "chats", j) not in pending,
                )
                for j in ready:
                    if self.stop.requested:
                        return
                    await send.send(experiences[j])
                if exp_todo:
                    await self._experience_stage(out, personas, exp_todo, send, wanted)

        async def consume() -> None:
            async with receive:
                await self._map(
                    "chats",
                    receive,
                    lambda e: self._chat(chat_stage, e, by_id, pending),
                    out,
                    max_active=cfg.concurrency.max_active_chats,
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            tg.start_soon(consume)

    async def _experience_stage(self, out, personas, todo, send, wanted: set[int]) -> None:
        cfg = self.config
        # Rebuild the ring and the style monitor as the interrupted run left them.
        earlier = sorted(
            (r for r in self.run_dir.load("experiences") if isinstance(r, Experience)),
            key=lambda r: id_index(r.id),
        )
        ring = await rebuilt_ring(
            seed_experiences(),
            [r.experience_text for r in earlier],
            capacity=cfg.experience.ring_capacity,
            reset_every=cfg.experience.reset_every,
        )
        monitor = StyleMonitor(cfg.experience.style_window, cfg.experience.style_min_pool)
        for r in earlier[-cfg.experience.style_window :]:
            monitor.observe(r.style)
        stage = ExperienceStage(cfg, self.completer, ring, monitor, self.model_name)
        by_id = {p.id: p for p in personas}
        pool = PersonaPool(personas)

        async def one(i: int) -> Experience | Failure:
            pair = pair_for(i, cfg.seed, pool, cfg.experience.region_match)
            record = await stage.write(
                i,
                make_id(cfg.seed, "experiences", i),
                (by_id[pair.a], by_id[pair.b]),
                pair.region_matched,
            )
            return record

        async def forward(record: Record) -> None:
            if isinstance(record, Experience) and id_index(record.id) in wanted:
                await send.send(record)

        await self._map("experiences", todo, one, out, after=forward)

    async def _chat(
        self,
        stage: ChatStage,
        experience: Experience,
        personas: dict[str, Persona],
        pending: dict[str, list[ChatEvent]],
    ) -> Conversation | Failure:
        j = id_index(experience.id)
        chat_id = make_id(self.config.seed, "chats", j)
        events = pending.get(chat_id, [])
        if (
            events
            and isinstance(events[0], StartEvent)
            and events[0].experience_id != experience.id
        ):
            events = []  # journaled against another experience (another run's seed): start over
        return await stage.roll_out(chat_id, experience, personas, events)

    # --- shared machinery ---------------------------------------------------------------

    async def _map(self, stage: str, items, fn, out, *, max_active: int | None = None, after=None):
        """Runs ``fn`` over ``items`` with at most ``max_active`` in progress; writes each result.

        The loop takes a slot before it takes the next item, so a slow stage holds back
        the stream that feeds it instead of piling up waiting tasks.
        """
        count = self.stats.stages[stage]
        results: list[Record] = []
        slots = anyio.Semaphore(max_active or self.config.concurrency.max)

        async def one(item) -> None:
            try:
                count.active += 1
                try:
                    record = await fn(item)
                finally:
                    count.active -= 1
                await out.put(record)
                if isinstance(record, Failure):
                    count.failed += 1
                else:
                    count.done += 1
                if stage == "chats":
                    await self.run_dir.journal_done(
                        record.chat_id if isinstance(record, Conversation) else record.id
                    )
                results.append(record)
                if after is not None:
                    await after(record)
            finally:
                slots.release()

        async with anyio.create_task_group() as tg:
            async for item in _aiter(items):
                await slots.acquire()
                if self.stop.requested:
                    slots.release()
                    break
                tg.start_soon(one, item)
        return results

    async def _report_loop(self) -> None:
        while True:
            await anyio.sleep(5.0)
            self.run_dir.append_metrics(self.stats.snapshot())


async def _aiter(items) -> AsyncIterator:
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
