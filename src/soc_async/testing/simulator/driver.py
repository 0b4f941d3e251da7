"""Runs simulated engines against the event loop's clock, faster than real time.

:class:`SimCluster` holds one or several :class:`~.engine.SimEngine` (one per simulated
GPU server) and one task that steps them: simulated time is ``(loop.time() - start) *
time_scale``, every step whose start time has come is run, and a request is answered
when the step that finished it ends. With ``time_scale=60`` a minute of GPU work takes
a second. Under :mod:`soc_async.testing.virtual_clock` the loop's clock itself is
virtual, so the same code runs as fast as the CPU allows and is deterministic.

Finished requests are handed back at most ``resolution_s`` (simulated seconds) late:
waking the loop for every step of every engine would cost more CPU than it is worth
when a request lasts seconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence

from soc_async.testing.simulator.engine import SimEngine, SimRequest

__all__ = ["SimCluster"]

_MAX_STEPS_PER_WAKE = 256  # then yield, so HTTP handlers run even when the CPU lags


class SimCluster:
    """Engines stepped by one task; use as ``async with SimCluster(...) as cluster``."""

    def __init__(
        self,
        engines: Sequence[SimEngine],
        *,
        time_scale: float = 1.0,
        resolution_s: float | None = None,
    ) -> None:
        if not engines:
            raise ValueError("a cluster needs at least one engine")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.engines = list(engines)
        self.time_scale = time_scale
        # Default: a couple of milliseconds of real time, as a sleep is that coarse anyway.
        self.resolution_s = 0.002 * time_scale if resolution_s is None else resolution_s
        self._start = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[float, int, SimRequest]] = []
        self._seq = itertools.count()
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.lag_s = 0.0  # how far (simulated s) the last step started behind the clock

    def now(self) -> float:
        """Simulated seconds since the cluster started."""
        assert self._loop is not None, "the cluster is not running"
        return (self._loop.time() - self._start) * self.time_scale

    async def __aenter__(self) -> SimCluster:
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        for engine in self.engines:
            engine.now = max(engine.now, 0.0)
        self._task = asyncio.create_task(self._run(), name="sim-cluster")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, engine: int, request: SimRequest) -> SimRequest:
        """Queues ``request`` on engine ``engine`` now and waits until it finishes; a
        cancelled wait aborts it. ValueError for a request the engine can never run."""
        assert self._loop is not None, "the cluster is not running"
        target = self.engines[engine]
        idle = not target.has_work
        future: asyncio.Future[SimRequest] = self._loop.create_future()
        request.tag = future
        target.add(request, self.now())
        if idle and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        try:
            return await future
        except asyncio.CancelledError:
            target.abort(request)
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        engines = self.engines
        pending = self._pending
        while True:
            now = self.now()
            steps = 0
            for engine in engines:
                while engine.has_work and engine.now <= now and steps < _MAX_STEPS_PER_WAKE:
                    self.lag_s = now - engine.now
                    for req in engine.step():
                        heapq.heappush(pending, (req.finished_at or 0.0, next(self._seq), req))
                    steps += 1
            while pending and pending[0][0] <= now:
                _, _, req = heapq.heappop(pending)
                future = req.tag
                if isinstance(future, asyncio.Future) and not future.done():
                    future.set_result(req)
            if steps >= _MAX_STEPS_PER_WAKE:
                await asyncio.sleep(0)
                continue
            times = [e.now for e in engines if e.has_work]
            if pending:
                times.append(pending[0][0])
            self._wake = loop.create_future()
            handle = None
            if times:
                delay = max(min(times) - now, self.resolution_s) / self.time_scale
                handle = loop.call_later(delay, _set, self._wake)
            try:
                await self._wake
            finally:
                if handle is not None:
                    handle.cancel()


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
