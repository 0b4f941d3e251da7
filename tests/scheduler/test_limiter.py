"""PriorityLimiter: order of service, capacity changes under load, cancellation safety."""

from __future__ import annotations

import asyncio
import random

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from soc_async.scheduler import PriorityLimiter


async def _hold(limiter: PriorityLimiter, release: anyio.Event, log: list[str], name: str) -> None:
    async with limiter.slot():
        log.append(name)
        await release.wait()


async def test_lower_priority_value_first_fifo_within_equal() -> None:
    """Waiters are granted by priority (lower first), in arrival order within one priority."""
    limiter = PriorityLimiter(1)
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        async with limiter.slot(priority):
            order.append(name)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg, limiter.slot():
        for name, priority in [("p5", 5), ("p1a", 1), ("p3", 3), ("p1b", 1), ("p0", 0)]:
            tg.start_soon(waiter, name, priority)
            await wait_all_tasks_blocked()
        assert limiter.waiting == 5
    assert order == ["p0", "p1a", "p1b", "p3", "p5"]
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_growing_capacity_wakes_waiters_at_once() -> None:
    """Raising the capacity grants queued waiters without any release happening."""
    limiter = PriorityLimiter(1)
    release = anyio.Event()
    entered: list[str] = []
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(_hold, limiter, release, entered, f"w{i}")
        await wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting, len(entered)) == (1, 4, 1)
        limiter.set_capacity(3)
        await wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting, len(entered)) == (3, 2, 3)
        release.set()
    assert (limiter.in_flight, limiter.waiting, len(entered)) == (0, 0, 5)


async def test_shrinking_lets_running_work_finish_and_grants_only_below_capacity() -> None:
    """After a shrink nothing running is interrupted and no grant happens until
    in-flight work has fallen below the new capacity."""
    limiter = PriorityLimiter(4)
    releases = [anyio.Event() for _ in range(6)]
    entered: list[str] = []
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(_hold, limiter, releases[i], entered, f"w{i}")
            await wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting) == (4, 2)
        limiter.set_capacity(2)
        assert (limiter.in_flight, limiter.waiting) == (4, 2)
        for i in range(2):  # 4 -> 2 in flight: still not below capacity 2
            releases[i].set()
            await wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting, len(entered)) == (2, 2, 4)
        releases[2].set()  # 1 in flight: one grant brings it back to 2
        await wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting, entered[-1]) == (2, 1, "w4")
        for r in releases:
            r.set()
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_cancelled_waiter_leaves_no_slot_behind() -> None:
    """A waiter cancelled in the queue takes no slot and leaves the queue."""
    limiter = PriorityLimiter(1)
    async with anyio.create_task_group() as tg, limiter.slot():
        scope = anyio.CancelScope()
        tg.start_soon(_cancellable, limiter, scope)
        await wait_all_tasks_blocked()
        assert limiter.waiting == 1
        scope.cancel()
        await wait_all_tasks_blocked()
        assert (limiter.in_flight, limiter.waiting) == (1, 0)
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
    with anyio.fail_after(5):
        async with limiter.slot() as info:
            assert limiter.in_flight == 1
    assert info.queued_s >= 0


async def _cancellable(limiter: PriorityLimiter, scope: anyio.CancelScope) -> None:
    with scope:
        async with limiter.slot():
            pytest.fail("the cancelled waiter must never get a slot")


async def test_grant_racing_cancellation_is_handed_on() -> None:
    """A waiter granted and cancelled in the same loop step passes its slot to the next
    waiter instead of leaking it."""
    limiter = PriorityLimiter(1)
    got: list[str] = []

    async def waiter(name: str) -> None:
        async with limiter.slot():
            got.append(name)

    holder = limiter.slot()
    await holder.__aenter__()
    first = asyncio.create_task(waiter("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter("second"))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    await holder.__aexit__(None, None, None)  # grants "first" without yielding
    first.cancel()  # ... which is cancelled before it could run
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert got == ["second"]
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_queue_wait_is_reported() -> None:
    """A slot granted at once reports less queue time than one that had to wait."""
    limiter = PriorityLimiter(1)
    infos = []

    async def waiter() -> None:
        async with limiter.slot() as info:
            infos.append(info)

    async with anyio.create_task_group() as tg, limiter.slot() as first:
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        await anyio.sleep(0.01)
    assert infos[0].queued_s > first.queued_s


async def test_random_churn_never_exceeds_capacity_and_ends_empty() -> None:
    """Under random priorities, capacity changes and cancellations, work in flight never
    exceeds the largest capacity set since it started, and everything is returned."""
    rng = random.Random(7)
    limiter = PriorityLimiter(3)
    active = 0
    violations: list[tuple[int, int]] = []
    allowed = [3]  # the largest capacity since the last shrink settled

    async def work(i: int) -> None:
        nonlocal active
        with anyio.move_on_after(rng.choice([0.001, 0.005, 1.0])):
            async with limiter.slot(rng.randint(0, 3)):
                active += 1
                try:
                    if active > max(allowed):
                        violations.append((active, max(allowed)))
                    await anyio.sleep(rng.random() * 0.002)
                finally:
                    active -= 1

    async with anyio.create_task_group() as tg:
        for i in range(300):
            tg.start_soon(work, i)
            if i % 25 == 0:
                capacity = rng.randint(1, 8)
                allowed.append(capacity)
                limiter.set_capacity(capacity)
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()
    assert violations == []
    assert (limiter.in_flight, limiter.waiting, active) == (0, 0, 0)


def test_capacity_must_be_a_non_negative_int() -> None:
    """A negative capacity is refused at creation and on change."""
    with pytest.raises(ValueError, match="capacity"):
        PriorityLimiter(-1)
    with pytest.raises(ValueError, match="capacity"):
        PriorityLimiter(2).set_capacity(-3)


async def test_withdraw_sends_the_queued_callers_elsewhere() -> None:
    """Callers queued for a slot raise Withdrawn; the slot held is untouched and the
    limiter serves new callers as before."""
    from soc_async.scheduler import Withdrawn

    limiter = PriorityLimiter(1)
    outcomes: list[str] = []

    async def wait(name: str) -> None:
        try:
            async with limiter.slot():
                outcomes.append(f"{name} ran")
        except Withdrawn:
            outcomes.append(f"{name} withdrawn")

    async with anyio.create_task_group() as tg:
        await limiter.acquire()
        tg.start_soon(wait, "a")
        tg.start_soon(wait, "b")
        await wait_all_tasks_blocked()
        assert limiter.waiting == 2
        assert limiter.withdraw() == 2
    assert outcomes == ["a withdrawn", "b withdrawn"]
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    limiter.release()
    async with limiter.slot():
        assert limiter.in_flight == 1
