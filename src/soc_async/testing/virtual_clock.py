"""An asyncio event loop whose clock is virtual: sleeping costs no real time.

When nothing is ready to run, the loop jumps its clock to the next scheduled timer
instead of waiting for it, so an hour of ``asyncio.sleep`` and ``call_later`` passes in
the time the CPU needs for the work in between, and a run of seeded code is exactly
repeatable. Everything that reads ``loop.time()`` (asyncio's and anyio's sleeps and
timeouts, :func:`anyio.current_time`) sees the virtual clock.

Only for code whose waiting is on timers and on other tasks: real I/O still works (the
selector is polled without blocking), but a task waiting for a socket while no timer is
due would make the clock jump past it. A loop with nothing left to wait for raises
:class:`VirtualClockDeadlock` instead of hanging.

    result = run_virtual(main())     # like asyncio.run, on a virtual clock from 0.0
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockDeadlock", "VirtualClockLoop", "run_virtual"]

T = TypeVar("T")


class VirtualClockDeadlock(RuntimeError):
    """Every task waits and no timer is due: on a virtual clock, nothing can happen."""


class _VirtualSelector(selectors.DefaultSelector):
    """Polls the real selector without blocking; a wait moves the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        assert self.loop is not None
        if timeout is None:
            raise VirtualClockDeadlock("every task waits and no timer is scheduled")
        self.loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock starting at 0.0 (see the module doc)."""

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = 0.0
        # Timers due within this of the clock run together: absorbs float rounding.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Moves the clock forward by ``seconds``."""
        if seconds > 0:
            self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Runs ``main`` to completion on a fresh :class:`VirtualClockLoop`, then closes it."""
    loop = VirtualClockLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
