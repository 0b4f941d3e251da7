"""The pipeline phase: the real chat stage rolling out conversations, nothing else.

Personas and experiences come from the seeds (:mod:`soc_async.bench.cast`), so every
request of the phase is a chat turn (or a summary) built by the same code as in a run:
the prompt layout, the grammar, the parser, the state machine and the retries. Nothing is
journaled or written: the bench measures throughput, not durability.
"""

from __future__ import annotations

from collections import Counter

import anyio

from soc_async.chat.rollout import ChatEvent, ChatStage
from soc_async.config import RunConfig, RunFacts
from soc_async.llm.types import Completer
from soc_async.records import Conversation, Experience, Persona, make_id

__all__ = ["ChatTally", "run_chats"]


class ChatTally:
    """Conversations of one phase: finished, failed (by reason), and how many live at once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.active = 0
        self.peak_active = 0
        self.turns = 0
        self.reasons: Counter[str] = Counter()

    def started(self) -> None:
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)


async def _no_journal(chat_id: str, event: ChatEvent) -> None:
    """The bench resumes nothing, so accepted turns are not journaled."""


async def run_chats(
    completer: Completer,
    config: RunConfig,
    experiences: list[Experience],
    personas: list[Persona],
    *,
    facts: RunFacts,
    max_active: int | None = None,
    tally: ChatTally | None = None,
) -> ChatTally:
    """Rolls out one conversation per experience, ``max_active`` at a time (default: all).

    Returns the tally (``tally`` when given, so a caller can watch it move). A failed
    conversation is counted with its reason and the phase goes on, as in a run; a
    server that is down for good raises ServerError.
    """
    tally = tally or ChatTally(len(experiences))
    stage = ChatStage(
        config,
        completer,
        facts=facts,
        journal=_no_journal,
    )
    by_id = {p.id: p for p in personas}
    slots = anyio.Semaphore(max_active or max(1, len(experiences)))

    async def one(index: int, experience: Experience) -> None:
        try:
            tally.started()
            try:
                record = await stage.roll_out(
                    make_id(config.seed, "chats", index), experience, by_id
                )
            finally:
                tally.active -= 1
            if isinstance(record, Conversation):
                tally.done += 1
                tally.turns += len(record.turns)
            else:
                tally.failed += 1
                tally.reasons[record.reason] += 1
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        for index, experience in enumerate(experiences):
            await slots.acquire()
            tg.start_soon(one, index, experience)
    return tally
