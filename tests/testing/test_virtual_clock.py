"""The virtual-clock event loop: sleeps advance the clock, order is kept, deadlocks raise."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from soc_async.testing.virtual_clock import VirtualClockDeadlock, run_virtual


def test_sleeps_advance_the_virtual_clock_exactly() -> None:
    """An hour of sleeping, asyncio's and anyio's, is an hour on the loop's clock."""

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(1800)
        await anyio.sleep(1800)
        return start, loop.time()

    start, end = run_virtual(main())
    assert (start, end) == (0.0, 3600.0)


def test_timers_fire_in_order_and_runs_repeat() -> None:
    """Tasks waking at different virtual times interleave by time, the same way each run."""

    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, str]] = []

        async def ticker(name: str, every: float, times: int) -> None:
            for _ in range(times):
                await asyncio.sleep(every)
                seen.append((loop.time(), name))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(ticker("a", 0.3, 4))
            tg.create_task(ticker("b", 0.5, 3))
        return seen

    first = run_virtual(main())
    assert [name for _, name in first] == ["a", "b", "a", "a", "b", "a", "b"]
    assert first == run_virtual(main())


def test_timeouts_use_the_virtual_clock() -> None:
    """anyio.fail_after counts virtual seconds."""

    async def main() -> None:
        with anyio.fail_after(10):
            await asyncio.sleep(11)

    with pytest.raises(TimeoutError):
        run_virtual(main())


def test_waiting_with_nothing_scheduled_is_a_deadlock() -> None:
    """A task waiting on an event nobody sets, with no timer due, raises at once."""

    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(VirtualClockDeadlock):
        run_virtual(main())
