"""stream_map and feed: bounded activity, backpressure, completion and stopping."""

from __future__ import annotations

from functools import partial

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from soc_async.scheduler import Pipe, StopSignal, feed, stream_map


async def collect(pipe: Pipe[int], into: list[int]) -> None:
    async with pipe.receive:
        async for item in pipe.receive:
            into.append(item)


async def test_at_most_max_active_in_progress_and_every_result_arrives() -> None:
    """fn never runs on more than max_active items at once, reaches that bound, and
    every result arrives before the output closes."""
    active = peak = 0

    async def fn(x: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.001)
        active -= 1
        return x * 10

    source, out = Pipe[int]("in", 4), Pipe[int]("out", 4)
    results: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed, range(40), source.send)
            tg.start_soon(partial(stream_map, fn, source.receive, out.send, max_active=3))
            tg.start_soon(collect, out, results)
    assert peak == 3
    assert sorted(results) == [x * 10 for x in range(40)]


async def test_a_full_output_stops_intake() -> None:
    """With nobody reading the output, work started is bounded by the output buffer plus
    max_active; once the consumer reads, everything flows through."""
    started: list[int] = []

    async def fn(x: int) -> int:
        started.append(x)
        return x

    source, out = Pipe[int]("in", 2), Pipe[int]("out", 1)
    results: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed, range(100), source.send)
            tg.start_soon(partial(stream_map, fn, source.receive, out.send, max_active=3))
            await wait_all_tasks_blocked()
            assert len(started) == 1 + 3  # one buffered result, three waiting to send
            stats = out.stats()
            assert (stats.depth, stats.capacity, stats.senders_waiting) == (1, 1, 3)
            assert source.stats().depth == 2  # the source is held back too
            tg.start_soon(collect, out, results)
    assert sorted(results) == list(range(100))


async def test_none_results_are_not_sent_and_send_may_be_absent() -> None:
    """A None result is dropped; with no output stream fn still runs on every item."""
    seen: list[int] = []

    async def fn(x: int) -> int | None:
        seen.append(x)
        return x if x % 2 else None

    source, out = Pipe[int]("in", 8), Pipe[int]("out", 8)
    results: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed, range(10), source.send)
        tg.start_soon(partial(stream_map, fn, source.receive, out.send, max_active=2))
        tg.start_soon(collect, out, results)
    assert sorted(results) == [1, 3, 5, 7, 9]

    source = Pipe[int]("in", 8)
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed, range(5), source.send)
        tg.start_soon(partial(stream_map, fn, source.receive, None, max_active=2))
    assert sorted(seen[10:]) == list(range(5))


async def test_async_sources_are_fed_too() -> None:
    """feed takes async iterables and closes its end after the last item."""

    async def numbers():
        for i in range(5):
            await anyio.lowlevel.checkpoint()
            yield i

    pipe: Pipe[int] = Pipe("in", 2)
    got: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed, numbers(), pipe.send)
        tg.start_soon(collect, pipe, got)
    assert got == [0, 1, 2, 3, 4]


async def test_an_error_in_fn_propagates() -> None:
    """An exception from fn is not swallowed: it cancels the stage and reaches the caller."""

    async def fn(x: int) -> int:
        if x == 3:
            raise RuntimeError("boom at 3")
        await anyio.sleep(0.001)
        return x

    source = Pipe[int]("in", 4)
    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed, range(10), source.send)
            tg.start_soon(partial(stream_map, fn, source.receive, None, max_active=2))
    assert info.group_contains(RuntimeError, match="boom at 3")


async def test_stop_ends_intake_and_lets_work_in_progress_finish() -> None:
    """After a stop request no new item starts, every started item finishes and is
    delivered, and the output closes so downstream stages end too."""
    started: list[int] = []
    finished: list[int] = []
    stop = StopSignal(grace_s=30)

    async def fn(x: int) -> int:
        started.append(x)
        if len(started) == 10:
            stop.request("test")
        await anyio.sleep(0.005)
        finished.append(x)
        return x

    def numbers():
        i = 0
        while True:
            yield i
            i += 1

    source, out = Pipe[int]("in", 4), Pipe[int]("out", 4)
    results: list[int] = []
    with anyio.fail_after(10), stop.installed(), stop.guard():
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(feed, numbers(), source.send, stop=stop))
            tg.start_soon(
                partial(stream_map, fn, source.receive, out.send, max_active=4, stop=stop)
            )
            tg.start_soon(collect, out, results)
    assert stop.requested and stop.signal_name == "test"
    assert 10 <= len(started) <= 13  # the items already in progress when it came
    assert sorted(finished) == sorted(started) == sorted(results)


async def test_bad_bounds_are_refused() -> None:
    """A pipe without room, a stage with no slots and a negative grace are refused."""
    with pytest.raises(ValueError, match="max_buffer"):
        Pipe("x", 0)
    pipe = Pipe[int]("in", 1)
    with pytest.raises(ValueError, match="max_active"):
        await stream_map(lambda x: x, pipe.receive, None, max_active=0)
    pipe.send.close()
    pipe.receive.close()
    with pytest.raises(ValueError, match="grace_s"):
        StopSignal(grace_s=-1)
