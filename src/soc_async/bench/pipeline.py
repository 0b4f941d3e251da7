"""The pipeline phase: the real chat stage rolling out conversations, nothing else.

Personas and experiences come from the seeds (:mod:`soc_async.bench.cast`), so every
request of the phase is a chat turn (or a summary) built by the same code as in a run:
the prompt layout, the grammar, the parser, the state machine and the retries. Nothing is
journaled or written unless a journal is given (the breakdown's "journaled" switch
measures what the run's journal costs).

Starts are staggered by default (:class:`Stagger`): a run of thousands of conversations
has them at every turn at once, so requests finish and arrive spread over time; a phase
that started all of its conversations at once would instead move its first turns in
step (every prefill-heavy first turn together, then every decode together), which only
the first minute of a run does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio

from soc_async.chat.rollout import ChatEvent, ChatStage
from soc_async.config import RunConfig, RunFacts
from soc_async.llm.types import Completer
from soc_async.records import Conversation, Experience, Persona, make_id

__all__ = ["ChatTally", "Stagger", "run_chats", "stagger_offsets"]

Journal = Callable[[str, ChatEvent], Awaitable[None]]


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


def stagger_offsets(limit: int, turn_s: float) -> list[float]:
    """Start times, after the first conversation's first reply, of conversations
    1..limit-1: one turn's time spread evenly over the limit, so that their turns end
    (and the next ones arrive) as in a run's steady state."""
    gap = max(0.0, turn_s) / max(1, limit)
    return [i * gap for i in range(max(0, limit - 1))]


class Stagger:
    """Holds back the starts of a phase's first ``limit`` conversations.

    Conversation 0 starts at once; when the first request of the phase is answered its
    latency is the turn's time, and conversations 1..limit-1 start spread over it
    (:func:`stagger_offsets`); the rest start right after and wait for slots, which free
    at spread times by then. No guess of the server's speed is needed: the first reply
    measures it. ``turn_s`` returns the latency of the first answered request, None
    before there is one.
    """

    def __init__(
        self, limit: int, turn_s: Callable[[], float | None], poll_s: float = 0.02
    ) -> None:
        self.limit = limit
        self.turn_s = turn_s
        self.poll_s = poll_s
        self._origin: float | None = None
        self._offsets: list[float] = []

    async def wait(self, index: int) -> None:
        """Returns when conversation ``index`` may start."""
        if index == 0 or self.limit <= 1:
            return
        while self._origin is None:
            turn = self.turn_s()
            if turn is not None:
                self._origin = time.monotonic()
                self._offsets = stagger_offsets(self.limit, turn)
                break
            await anyio.sleep(self.poll_s)
        offset = self._offsets[min(index, len(self._offsets)) - 1] if self._offsets else 0.0
        await anyio.sleep(max(0.0, self._origin + offset - time.monotonic()))


async def run_chats(
    completer: Completer,
    config: RunConfig,
    experiences: list[Experience],
    personas: list[Persona],
    *,
    facts: RunFacts,
    max_active: int | None = None,
    tally: ChatTally | None = None,
    stagger: Stagger | None = None,
    journal: Journal | None = None,
    finished: Callable[[str], Awaitable[None]] | None = None,
) -> ChatTally:
    """Rolls out one conversation per experience, ``max_active`` at a time (default: all).

    ``stagger``: when each may start (default: all at once). ``journal`` and
    ``finished``: what a run does with each accepted turn and each finished
    conversation (default: nothing).

    Returns the tally (``tally`` when given, so a caller can watch it move). A failed
    conversation is counted with its reason and the phase goes on, as in a run; a
    server that is down for good raises ServerError.
    """
    tally = tally or ChatTally(len(experiences))
    stage = ChatStage(
        config,
        completer,
        facts=facts,
        journal=journal or _no_journal,
    )
    by_id = {p.id: p for p in personas}
    slots = anyio.Semaphore(max_active or max(1, len(experiences)))

    async def one(index: int, experience: Experience) -> None:
        try:
            tally.started()
            chat_id = make_id(config.seed, "chats", index)
            try:
                record = await stage.roll_out(chat_id, experience, by_id)
                if finished is not None:
                    await finished(chat_id)
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
            if stagger is not None:
                await stagger.wait(index)
            await slots.acquire()
            tg.start_soon(one, index, experience)
    return tally
