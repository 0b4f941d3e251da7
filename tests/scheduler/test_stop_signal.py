"""StopSignal with real signals: graceful drain, grace expiry, second signal, restore."""

from __future__ import annotations

import os
import signal
from functools import partial

import anyio
import pytest

from soc_async.scheduler import Pipe, StopSignal, feed, stream_map


def numbers():
    i = 0
    while True:
        yield i
        i += 1


async def test_sigint_drains_in_flight_work_and_restores_the_handler() -> None:
    """SIGINT stops intake, every started item finishes, nothing raises, and the
    previous SIGINT handler is back afterwards."""
    before = signal.getsignal(signal.SIGINT)
    stop = StopSignal(grace_s=30)
    started: list[int] = []
    finished: list[int] = []

    async def fn(x: int) -> int:
        started.append(x)
        if len(started) == 20:
            os.kill(os.getpid(), signal.SIGINT)
        await anyio.sleep(0.002)
        finished.append(x)
        return x

    source = Pipe[int]("in", 8)
    with anyio.fail_after(20), stop.installed(), stop.guard():
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(feed, numbers(), source.send, stop=stop))
            tg.start_soon(partial(stream_map, fn, source.receive, None, max_active=5, stop=stop))
    assert stop.requested and stop.signal_name == "SIGINT" and not stop.forced
    assert sorted(finished) == sorted(started)
    assert len(started) >= 20
    assert signal.getsignal(signal.SIGINT) is before


async def test_sigterm_cancels_what_is_left_after_the_grace_period() -> None:
    """Work that does not finish within grace_s after SIGTERM is cancelled, and the
    cancellation ends inside the StopSignal's scope instead of reaching the caller."""
    stop = StopSignal(grace_s=0.05)
    started: list[int] = []
    finished: list[int] = []

    async def stuck(x: int) -> int:
        started.append(x)
        if len(started) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        await anyio.sleep_forever()
        finished.append(x)
        return x

    source = Pipe[int]("in", 2)
    after_scope = False
    with anyio.fail_after(20), stop.installed():
        async with stop.guard(), anyio.create_task_group() as tg:
            tg.start_soon(partial(feed, numbers(), source.send, stop=stop))
            tg.start_soon(partial(stream_map, stuck, source.receive, None, max_active=3))
        after_scope = True
    assert after_scope and stop.signal_name == "SIGTERM"
    assert len(started) == 3 and finished == []


async def test_second_signal_cancels_at_once() -> None:
    """A second SIGINT cancels the work without waiting for a long grace period."""
    stop = StopSignal(grace_s=3600)
    with anyio.fail_after(20), stop.installed(), stop.guard():
        os.kill(os.getpid(), signal.SIGINT)
        await stop.wait()
        os.kill(os.getpid(), signal.SIGINT)
        await anyio.sleep_forever()
    assert stop.requested and stop.forced


async def test_outer_cancellation_is_not_swallowed() -> None:
    """A cancellation from an enclosing scope passes through the StopSignal's scope."""
    stop = StopSignal()
    reached = False
    with anyio.CancelScope() as outer:
        with stop.installed(), stop.guard():
            outer.cancel()
            await anyio.sleep_forever()
        reached = True
    assert outer.cancelled_caught and not reached and not stop.requested


async def test_previous_custom_handler_is_restored() -> None:
    """Handlers that were set before installing are put back on exit."""
    calls: list[int] = []

    def custom(signum: int, frame: object) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, custom)
    try:
        with StopSignal().installed():
            assert signal.getsignal(signal.SIGTERM) is not custom
        assert signal.getsignal(signal.SIGTERM) is custom
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_request_before_install_still_scopes_the_grace() -> None:
    """A stop requested before the work starts cancels intake immediately."""
    stop = StopSignal(grace_s=5)
    stop.request("early")
    fed: list[int] = []

    async def sink(pipe: Pipe[int]) -> None:
        async for x in pipe.receive:
            fed.append(x)

    pipe = Pipe[int]("in", 1)
    with anyio.fail_after(10), stop.installed(), stop.guard():
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(feed, numbers(), pipe.send, stop=stop))
            tg.start_soon(sink, pipe)
    pipe.receive.close()
    assert fed == []


@pytest.fixture(autouse=True)
def _no_stray_handlers():
    """Every test leaves SIGINT and SIGTERM as it found them."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
