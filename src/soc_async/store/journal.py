"""The journal: accepted steps of items still in progress, so a resumed run continues them."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Self

import msgspec

from soc_async.store.files import decode_all, entry_decoder, json_decoder, write_atomic
from soc_async.store.lines import LineWriter


class Journal:
    """Steps of items still in progress, so a resumed run continues them.

    Lines are ``{"id", "seq", "data"}`` per step and ``{"id", "seq", "done": true}`` when
    the item finished. A payload is any msgspec-encodable value, or bytes holding one
    JSON document; :meth:`pending` returns each step as JSON bytes, in order, for the
    caller to decode into its own type. Opening compacts the file (finished items
    dropped, atomically), so the journal does not grow across resumes.
    """

    def __init__(
        self, path: Path, pending: dict[str, list[bytes]], seqs: dict[str, int], writer: LineWriter
    ) -> None:
        self.path = path
        self._pending = pending
        self._seqs = seqs  # next seq per item in progress
        self._writer = writer

    @classmethod
    def open(
        cls, path: Path, *, finished: Collection[str] = (), fsync_interval_s: float = 0.5
    ) -> Journal:
        steps: dict[str, list[tuple[int, bytes]]] = {}
        done: set[str] = set()
        for entry in decode_all(path, entry_decoder.decode):
            if entry.done:
                done.add(entry.id)
            else:
                steps.setdefault(entry.id, []).append((entry.seq, bytes(entry.data)))
        keep = {i: sorted(s) for i, s in steps.items() if i not in done and i not in finished}
        lines = [step_line(i, seq, data) for i, s in keep.items() for seq, data in s]
        if path.exists() and sum(map(len, lines)) != path.stat().st_size:
            write_atomic(path, b"".join(lines))
        pending = {i: [data for _, data in s] for i, s in keep.items()}
        seqs = {i: s[-1][0] + 1 for i, s in keep.items()}
        writer = LineWriter(path, fsync_interval_s=fsync_interval_s, max_pending=4096, ids=None)
        return cls(path, pending, seqs, writer)

    def pending(self) -> dict[str, list[bytes]]:
        """Items journaled but not done when the journal was opened, with their steps."""
        return {i: list(s) for i, s in self._pending.items()}

    @property
    def active(self) -> int:
        """Items in progress now: journaled and not yet marked done."""
        return len(self._seqs)

    async def append(self, item_id: str, payload: Any, *, durable: bool = False) -> None:
        """Journal one step of ``item_id``."""
        if isinstance(payload, bytes | bytearray | memoryview):
            data = bytes(payload)
            try:
                decoded = json_decoder.decode(data)
            except msgspec.DecodeError as exc:
                raise ValueError(f"journal payload of {item_id} is not JSON: {exc}") from exc
            if b"\n" in data or b"\r" in data:
                data = msgspec.json.encode(decoded)  # one line per entry, whatever the input
        else:
            data = msgspec.json.encode(payload)
        seq = self._seqs.get(item_id, 0)
        self._seqs[item_id] = seq + 1
        await self._writer.put_line(step_line(item_id, seq, data), durable, None)

    async def done(self, item_id: str, *, durable: bool = False) -> None:
        """Mark ``item_id`` finished: its steps are dropped at the next open."""
        seq = self._seqs.pop(item_id, 0)
        self._pending.pop(item_id, None)
        line = b'{"id":%s,"seq":%d,"done":true}\n' % (msgspec.json.encode(item_id), seq)
        await self._writer.put_line(line, durable, None)

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def flush(self) -> None:
        """Write and fsync what is queued now, synchronously."""
        self._writer.flush()

    async def aclose(self) -> None:
        """Drain, fsync and close, even if the caller is cancelled."""
        await self._writer.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def step_line(item_id: str, seq: int, data: bytes) -> bytes:
    return b'{"id":%s,"seq":%d,"data":%s}\n' % (msgspec.json.encode(item_id), seq, data)
