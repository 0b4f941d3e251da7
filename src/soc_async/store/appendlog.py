"""A JSONL file that several writers append to: whole lines, each fsynced before it counts.

annotations.jsonl is written by a server that answers several raters at once, and may be
written by two servers on one run directory. Each record goes out as **one** ``write``
of its whole line to a file opened with ``O_APPEND`` (the kernel places each such write
at the end of the file, whole, even between processes), under a lock in this process,
and is fsynced before :meth:`AppendLog.append` returns: a line acknowledged to a rater
is on disk, and no line is torn by another writer. A torn last line left by a crash
(the one write that can be cut short) is cut off when the file is opened again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from soc_async.errors import RunDirError
from soc_async.store.files import fsync_dir, good_lines, repair, valid_check

__all__ = ["AppendLog", "KeyedLog", "read_log"]

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
_check = valid_check(msgspec.json.Decoder().decode)


class AppendLog:
    """One append-only JSONL file, safe for many writers (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        repair(path, _check)
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            fsync_dir(path.parent)  # the file's name must outlive a crash too
        self._lock = threading.Lock()

    def append(self, record: Any) -> None:
        """Write ``record`` as one line and fsync; blocking (call it off the event loop)."""
        line = _encoder.encode(record) + b"\n"
        with self._lock:
            written = os.write(self._fd, line)
            if written != len(line):  # a full disk: the tail is cut off on the next open
                raise RunDirError(f"{self.path}: short write ({written} of {len(line)} bytes)")
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def read_log(path: Path, kind: type[T]) -> Iterator[T]:
    """The records of ``path`` (none when it does not exist); a torn last line is left
    out, a complete line that is not a ``kind`` is a RunDirError naming FILE:LINE."""
    decode = msgspec.json.Decoder(kind).decode
    if not path.is_file():
        return
    for lineno, line in good_lines(path, _check):
        try:
            yield decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RunDirError(
                f"{path}:{lineno}: not a valid line ({exc}); fix or remove it"
            ) from exc


class KeyedLog(Generic[T]):
    """An append-only JSONL file of ``kind`` records, each under a key (a chat id, a
    persona id): what it holds is read on open into :attr:`done`, so work already done
    is not asked again, and each new record is appended whole and fsynced (judge.jsonl,
    archetypes.jsonl beside a report)."""

    def __init__(self, path: Path, kind: type[T], key: Callable[[T], str]) -> None:
        self.path = path
        self._key = key
        self.done: dict[str, T] = {key(r): r for r in read_log(path, kind)}
        self._log: AppendLog | None = None

    def add(self, record: T) -> None:
        """Append ``record`` (blocking: one write and an fsync) and note it done."""
        if self._log is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._log = AppendLog(self.path)
        self._log.append(record)
        self.done[self._key(record)] = record

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
