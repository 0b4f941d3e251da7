"""The pipeline phase's staggered starts: a run's steady state, not every first turn at once."""

from __future__ import annotations

import time

import anyio
import pytest

from soc_async.bench.pipeline import Stagger, stagger_offsets


def test_offsets_spread_one_turn_over_the_limit() -> None:
    """Conversations 1..C-1 start one C-th of a turn apart, the first at the reply."""
    assert stagger_offsets(4, 2.0) == pytest.approx([0.0, 0.5, 1.0])
    assert stagger_offsets(1, 2.0) == []
    assert stagger_offsets(3, -1.0) == [0.0, 0.0]


async def test_starts_wait_for_the_first_reply_then_spread_over_its_time() -> None:
    """Conversation 0 starts at once; no other starts before the phase's first reply
    says how long a turn takes; then 1..C-1 start at least their offset after it, in
    order, and the ones past the limit right after the last of them (they wait for a
    slot anyway)."""
    turn_s = 0.2
    reply: list[float] = []
    stagger = Stagger(4, lambda: turn_s if reply else None, poll_s=0.005)
    started: list[tuple[int, float]] = []

    async def answer_later() -> None:
        await anyio.sleep(0.05)
        reply.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        tg.start_soon(answer_later)
        for index in range(6):
            await stagger.wait(index)
            started.append((index, time.monotonic()))
    assert [i for i, _ in started] == list(range(6))
    (replied,) = reply
    assert started[0][1] < replied
    gap = turn_s / 4
    for index, at in started[1:4]:
        assert at >= replied + (index - 1) * gap - 0.01  # a poll's slack, never early
    last = started[3][1]
    assert all(at >= last for _, at in started[4:])


async def test_a_limit_of_one_never_waits() -> None:
    """One slot: nothing to spread, every conversation is let through (the limiter
    serialises them)."""
    stagger = Stagger(1, lambda: None)
    with anyio.fail_after(1):
        for index in range(3):
            await stagger.wait(index)
