"""Streaming primitives the pipeline is built from, and graceful shutdown.

Stages are connected by bounded anyio memory object streams (:class:`Pipe`) inside one
task group: a full pipe blocks its producer, so early stages run only as far ahead as
the later ones consume. :func:`stream_map` runs a function over a stream's items with at
most ``max_active`` in progress; :func:`feed` turns an iterable into a stream.

Shutdown (:class:`StopSignal`): the first SIGINT or SIGTERM sets ``stopping``; sources
and stream_map stop taking new items at once, work in progress gets ``grace_s`` to
finish, then the work inside :meth:`StopSignal.guard` is cancelled. A second signal
cancels at once. Cancellation from outside is never swallowed: a guard absorbs only its
own cancellation, and the caller then reads ``requested`` to flush and exit 130.

Built on asyncio (uvloop included) through anyio; signal handlers use the running
asyncio loop, so the trio backend is not supported.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Generic, TypeVar

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Pipe", "PipeStats", "StopSignal", "feed", "stream_map"]

T = TypeVar("T")
R = TypeVar("R")

_log = structlog.get_logger("soc_async.scheduler")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class PipeStats(msgspec.Struct, kw_only=True):
    """One pipe's depth for the live panel."""

    name: str
    depth: int  # items buffered now
    capacity: int  # the buffer's bound
    senders_waiting: int  # producers blocked on a full buffer: backpressure in action
    receivers_waiting: int  # consumers idle on an empty buffer: a starved stage


class Pipe(Generic[T]):
    """A named bounded stream between two stages; ``send`` and ``receive`` are its ends."""

    def __init__(self, name: str, max_buffer: int) -> None:
        if max_buffer < 1:
            raise ValueError(f"pipe {name!r}: max_buffer must be >= 1, got {max_buffer}")
        self.name = name
        self.send: MemoryObjectSendStream[T]
        self.receive: MemoryObjectReceiveStream[T]
        self.send, self.receive = anyio.create_memory_object_stream[T](max_buffer)

    def stats(self) -> PipeStats:
        s = self.send.statistics()
        return PipeStats(
            name=self.name,
            depth=s.current_buffer_used,
            capacity=int(s.max_buffer_size),
            senders_waiting=s.tasks_waiting_send,
            receivers_waiting=s.tasks_waiting_receive,
        )

    def __repr__(self) -> str:
        s = self.stats()
        return f"Pipe({self.name!r}, depth={s.depth}/{s.capacity})"


class StopSignal:
    """Graceful stop on SIGINT/SIGTERM (or :meth:`request`): stop intake, drain, cancel.

    Use::

        stop = StopSignal(grace_s=30)
        with stop.installed():              # SIGINT/SIGTERM handlers, restored on exit
            async with stop.guard():        # cancelled past the grace, or on a 2nd signal
                async with anyio.create_task_group() as tg:
                    ...                     # sources and stream_map get ``stop``
            await writers.aclose()          # flush outside the cancelled scope
        if stop.requested:
            raise Interrupted(...)          # exit 130 after a clean flush
    """

    def __init__(self, grace_s: float = 30.0) -> None:
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        self.grace_s = grace_s
        self.signal_name: str | None = None  # "SIGINT", "SIGTERM", or the request's reason
        self.forced = False  # a second request cancelled the work without grace
        self._event = anyio.Event()
        self._intakes: set[anyio.CancelScope] = set()
        self._guards: set[anyio.CancelScope] = set()

    @property
    def requested(self) -> bool:
        """A stop was asked for (the CLI then prints the resume command, exits 130)."""
        return self._event.is_set()

    @property
    def stopping(self) -> bool:
        """Same as ``requested``: read by work that checks before starting a new step."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once a stop is requested."""
        await self._event.wait()

    def request(self, name: str = "request") -> None:
        """What a signal does: the first call stops intake and starts the grace period,
        a second cancels the guarded work at once. Call from the event loop's thread."""
        if not self._event.is_set():
            self.signal_name = name
            self._event.set()
            for scope in list(self._intakes):
                scope.cancel()
            for scope in list(self._guards):
                self._arm(scope)
            _log.warning("stopping", signal=name, grace_s=self.grace_s)
        elif not self.forced:
            self.forced = True
            for scope in list(self._guards):
                scope.cancel()
            _log.warning("stopping now", signal=name)

    def _arm(self, scope: anyio.CancelScope) -> None:
        if self.forced:
            scope.cancel()
        else:
            # The loop's own clock, not anyio.current_time(): this runs in a signal
            # callback, outside any task, where anyio cannot always tell the backend
            # (with sniffio installed it raises there). anyio's deadlines are loop time.
            now = asyncio.get_running_loop().time()
            scope.deadline = min(scope.deadline, now + self.grace_s)

    @contextmanager
    def intake(self) -> Iterator[anyio.CancelScope]:
        """A scope around taking new work, cancelled when a stop is requested."""
        with anyio.CancelScope() as scope:
            if self._event.is_set():
                scope.cancel()
            self._intakes.add(scope)
            try:
                yield scope
            finally:
                self._intakes.discard(scope)

    def guard(self) -> _Guard:
        """A scope (``with`` or ``async with``) around the work: cancelled ``grace_s`` after
        the first stop, at once on the second. It absorbs only its own cancellation."""
        return _Guard(self)

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """SIGINT and SIGTERM call :meth:`request` while inside; the handlers that were
        there before are put back on exit. Enter inside a running asyncio loop; outside
        the main thread (no signal handlers there) it does nothing."""
        loop = asyncio.get_running_loop()
        installed: list[tuple[signal.Signals, Any]] = []
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self.request, sig.name)
            except (ValueError, RuntimeError, NotImplementedError):
                continue  # not the main thread, or a platform without them
            installed.append((sig, previous))
        try:
            yield self
        finally:
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

    def __repr__(self) -> str:
        state = "forced" if self.forced else "stopping" if self.requested else "running"
        return f"StopSignal({state}, signal={self.signal_name}, grace_s={self.grace_s})"


class _Guard:
    """The cancel scope of :meth:`StopSignal.guard`, as a sync and an async context."""

    def __init__(self, stop: StopSignal) -> None:
        self._stop = stop
        self._scope = anyio.CancelScope()

    def __enter__(self) -> anyio.CancelScope:
        self._scope.__enter__()
        self._stop._guards.add(self._scope)
        if self._stop.requested:
            self._stop._arm(self._scope)
        return self._scope

    def __exit__(self, *exc: Any) -> bool:
        self._stop._guards.discard(self._scope)
        return bool(self._scope.__exit__(*exc))

    async def __aenter__(self) -> anyio.CancelScope:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> bool:
        return self.__exit__(*exc)


async def feed(
    items: Iterable[T] | AsyncIterable[T],
    send: MemoryObjectSendStream[T],
    *,
    stop: StopSignal | None = None,
) -> None:
    """Send every item, then close ``send``; stops early (still closing) on a stop."""
    async with send:
        with stop.intake() if stop is not None else nullcontext():
            try:
                if isinstance(items, AsyncIterable):
                    async for item in items:
                        await send.send(item)
                else:
                    for item in items:
                        await send.send(item)
            except anyio.BrokenResourceError:
                # The consumer closed its end because it stopped: nothing to do.
                if stop is None or not stop.requested:
                    raise


async def stream_map(
    fn: Callable[[T], Awaitable[R | None]],
    receive: MemoryObjectReceiveStream[T],
    send: MemoryObjectSendStream[R] | None,
    *,
    max_active: int,
    stop: StopSignal | None = None,
) -> None:
    """Run ``fn`` over the items of ``receive`` with at most ``max_active`` in progress.

    Results go to ``send`` in completion order; ``None`` results are not sent (an item
    whose failure was recorded elsewhere), nor is anything when ``send`` is None. Both
    ends are closed on return, so the next stage sees the end of its input. A slot is
    held until the result is sent, so a full output pipe stops intake (backpressure).
    On a stop, intake ends at once and items in progress finish; results refused by a
    downstream stage that already stopped are dropped (they are rebuilt on resume). An
    exception from ``fn`` cancels the rest and propagates (in an exception group):
    per-item failures belong in ``fn``'s own result, this is for bugs and dead servers.
    """
    if max_active < 1:
        raise ValueError(f"max_active must be >= 1, got {max_active}")
    slots = anyio.Semaphore(max_active)

    async def one(item: T) -> None:
        try:
            result = await fn(item)
            if result is not None and send is not None:
                try:
                    await send.send(result)
                except anyio.BrokenResourceError:
                    if stop is None or not stop.requested:
                        raise
        finally:
            slots.release()

    with send if send is not None else nullcontext(), receive:
        async with anyio.create_task_group() as tg:
            with stop.intake() if stop is not None else nullcontext():
                while True:
                    await slots.acquire()
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        slots.release()
                        break
                    except BaseException:
                        slots.release()
                        raise
                    tg.start_soon(one, item)
            # Intake is over (input ended or a stop): the task group waits for the rest.
            receive.close()
