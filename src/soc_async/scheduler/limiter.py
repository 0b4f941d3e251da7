"""PriorityLimiter: the one bound on requests in flight, with a capacity that moves.

The adaptive controller changes the capacity while work is queued and running, so the
limiter cannot be a plain semaphore: growing must wake waiters at once, and shrinking
must not interrupt anything already running (in-flight work finishes; new grants resume
only once ``in_flight < capacity``).

Waiters are served by priority (lower value first) and FIFO within one priority, so a
conversation close to done can be placed ahead of new work.

Cancellation safety: a waiter cancelled before its grant leaves the queue; a waiter
cancelled in the instant between being granted and resuming hands its slot on to the
next waiter, so no slot is ever leaked. The limiter is not thread-safe: one event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

__all__ = ["PriorityLimiter", "SlotInfo", "Withdrawn"]


class Withdrawn(Exception):
    """The slot waited for will not come: the limiter's waiters were sent elsewhere
    (:meth:`PriorityLimiter.withdraw`, e.g. its engine was taken out of service)."""


class SlotInfo:
    """What a granted slot knows about its own wait, kept apart from server latency."""

    __slots__ = ("priority", "queued_s")

    def __init__(self, priority: int, queued_s: float) -> None:
        self.priority = priority
        self.queued_s = queued_s  # seconds spent waiting for the grant (0.0: granted at once)

    def __repr__(self) -> str:
        return f"SlotInfo(priority={self.priority}, queued_s={self.queued_s:.6f})"


class _Waiter:
    __slots__ = ("cancelled", "future", "granted")

    def __init__(self) -> None:
        # A bare asyncio future: an Event (anyio's or asyncio's) keeps a queue of futures
        # for many waiters where each waiter here waits alone. The limiter runs on
        # asyncio only, like the rest of the client.
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.granted = False
        self.cancelled = False  # left the queue; its heap entry is skipped lazily


class PriorityLimiter:
    """Bounds work in flight to ``capacity``; lower ``priority`` values are served first."""

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        self._capacity = capacity
        self._in_flight = 0
        self._waiting = 0
        self._granted_total = 0
        # (priority, arrival order, waiter): the order breaks ties FIFO and keeps the
        # waiter objects themselves from ever being compared.
        self._heap: list[tuple[int, int, _Waiter]] = []
        self._order = itertools.count()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        """Slots held now; may exceed ``capacity`` for a while after a shrink."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return self._waiting

    @property
    def granted_total(self) -> int:
        """Slots granted since creation, for rate figures on the live panel."""
        return self._granted_total

    def set_capacity(self, capacity: int) -> None:
        """Change the bound now; 0 pauses new grants without touching running work."""
        _check_capacity(capacity)
        self._capacity = capacity
        self._wake()

    def withdraw(self) -> int:
        """Every caller queued for a slot raises :class:`Withdrawn` (so it can wait
        elsewhere); slots held are untouched. Returns how many were queued."""
        n = 0
        for _, _, waiter in self._heap:
            if waiter.cancelled or waiter.granted:
                continue
            waiter.cancelled = True
            self._waiting -= 1
            n += 1
            if not waiter.future.done():
                waiter.future.set_exception(Withdrawn())
        self._heap.clear()
        return n

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a slot and hold it; :meth:`release` gives it back (``slot`` does both
        around a body, for callers that hold it in one scope)."""
        await self._acquire(priority)

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        self._release()

    def slot(self, priority: int = 0) -> _Slot:
        """Hold one slot for the body (``async with``); gives a :class:`SlotInfo` with the
        queue wait."""
        return _Slot(self, priority)

    def __repr__(self) -> str:
        return (
            f"PriorityLimiter(capacity={self._capacity}, in_flight={self._in_flight}, "
            f"waiting={self._waiting})"
        )

    async def _acquire(self, priority: int) -> None:
        # Fast path without a checkpoint: the common case at thousands of requests/s.
        if self._waiting == 0 and self._in_flight < self._capacity:
            self._in_flight += 1
            self._granted_total += 1
            return
        waiter = _Waiter()
        heapq.heappush(self._heap, (priority, next(self._order), waiter))
        self._waiting += 1
        try:
            await waiter.future
        except BaseException:
            if waiter.granted:
                # Granted and cancelled at once: the slot is ours, so pass it on.
                self._release()
            elif not waiter.cancelled:  # a withdrawn waiter has left already
                waiter.cancelled = True
                self._waiting -= 1
                if len(self._heap) > 2 * self._waiting + 64:
                    # Many cancelled entries: rebuild so a churning queue stays small.
                    self._heap = [e for e in self._heap if not e[2].cancelled]
                    heapq.heapify(self._heap)
            raise

    def _release(self) -> None:
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._heap and self._in_flight < self._capacity:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.cancelled:
                continue
            waiter.granted = True
            self._waiting -= 1
            self._in_flight += 1
            self._granted_total += 1
            if not waiter.future.done():  # cancelled: its task hands the slot on
                waiter.future.set_result(None)
        if not self._waiting:
            # Only cancelled entries can remain; drop them so the heap cannot grow.
            self._heap.clear()


class _Slot:
    """``async with limiter.slot(priority)``: a plain class rather than an
    ``asynccontextmanager`` generator, since every request passes through it."""

    __slots__ = ("_limiter", "_priority")

    def __init__(self, limiter: PriorityLimiter, priority: int) -> None:
        self._limiter = limiter
        self._priority = priority

    async def __aenter__(self) -> SlotInfo:
        start = time.perf_counter()
        await self._limiter._acquire(self._priority)
        return SlotInfo(self._priority, time.perf_counter() - start)

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter._release()


def _check_capacity(capacity: int) -> None:
    if not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"limiter capacity must be an int >= 0, got {capacity!r}")
