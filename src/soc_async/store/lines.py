"""The one writer task of a file: appends queued lines, fsyncs on an interval and at close."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from pathlib import Path
from typing import Self

import anyio

from soc_async.errors import RunDirError
from soc_async.records import Record, encode_line, record_id
from soc_async.store.files import _log, check_for, fsync_dir, repair, write_all


class LineWriter:
    """One file's writer task: appends queued lines, fsyncs on an interval and at close."""

    def __init__(
        self, path: Path, *, fsync_interval_s: float, max_pending: int, ids: set[str] | None
    ) -> None:
        repair(path, check_for(path))
        self.path = path
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            fsync_dir(path.parent)  # the file's name must survive a crash, not only its lines
        self._interval = fsync_interval_s
        self._max_pending = max_pending
        self._ids = ids  # ids already in the file or queued; None: no id check
        self._pending: deque[tuple[bytes, asyncio.Future[None] | None]] = deque()
        self._unacked: list[asyncio.Future[None]] = []  # written, waiting for an fsync
        self._dirty_since: float | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._error: RunDirError | None = None

    async def put_line(self, line: bytes, durable: bool, key: str | None) -> bool:
        while True:
            if self._error is not None:
                raise self._error
            if self._closing:
                raise RuntimeError(f"{self.path}: writer already closed")
            if len(self._pending) < self._max_pending:
                break
            self._room.clear()
            await self._room.wait()
        if self._ids is not None and key is not None:
            if key in self._ids:
                _log.warning("refused an id already written", file=self.path.name, id=key)
                return False
            self._ids.add(key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        fut = asyncio.get_running_loop().create_future() if durable else None
        self._pending.append((line, fut))
        self._wake.set()
        if fut is not None:
            await fut
        return True

    def _write_pending(self) -> None:
        if not self._pending:
            return
        lines = []
        while self._pending:
            line, fut = self._pending.popleft()
            lines.append(line)
            if fut is not None:
                self._unacked.append(fut)
        write_all(self._fd, b"".join(lines))
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._room.set()

    def _acknowledge(self, waiters: list[asyncio.Future[None]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _run(self) -> None:
        try:
            while True:
                self._write_pending()
                if self._dirty_since is not None:
                    due = self._dirty_since + self._interval
                    if self._unacked or self._closing or time.monotonic() >= due:
                        waiters, self._unacked, self._dirty_since = self._unacked, [], None
                        await asyncio.to_thread(os.fsync, self._fd)
                        self._acknowledge(waiters)
                        continue
                self._wake.clear()
                if self._pending:
                    continue
                if self._closing:
                    return
                delay = None if self._dirty_since is None else due - time.monotonic()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        except Exception as exc:  # a dead writer must fail its callers, not hang them
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
            error = RunDirError(f"{self.path}: cannot write ({why}); check the disk")
            error.__cause__ = exc
            self._fail(error)

    def _fail(self, error: RunDirError) -> None:
        self._error = error
        waiters = self._unacked + [f for _, f in self._pending if f is not None]
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error)
        self._room.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> None:
        """Write what is queued and fsync now, synchronously (shutdown paths)."""
        if self._closed or self._error is not None:
            return
        self._write_pending()
        if self._dirty_since is not None:
            os.fsync(self._fd)
            waiters, self._unacked, self._dirty_since = self._unacked, [], None
            self._acknowledge(waiters)

    async def aclose(self) -> None:
        """Drain the queue, fsync and close; runs to the end even if the caller is cancelled."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        try:
            if self._task is not None:
                with anyio.CancelScope(shield=True):
                    await asyncio.shield(self._task)
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()  # cancelled from outside: it must not touch the fd again
            try:
                self.flush()
            finally:
                self._closed = True
                os.close(self._fd)
        if self._error is not None:
            raise self._error

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RecordWriter(LineWriter):
    """Appends records to one of the data files, never the same id twice."""

    async def put(self, record: Record, *, durable: bool = False) -> bool:
        """Queue one record; False (and a log line) if its id is already in the file.

        Returns once queued, or with ``durable`` once an fsync covers the line.
        """
        return await self.put_line(encode_line(record), durable, record_id(record))
