"""The files of a run directory and the low-level ways to read and write them.

A crash can leave a torn last line; readers stop before it (:func:`good_end`) and
:func:`repair` cuts it off before the next append, so appends always start on a clean
line. Atomic replacement (:func:`write_atomic`) is for the small whole files (config,
run.json, the compacted journal).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import structlog

from soc_async.errors import RunDirError
from soc_async.records import Conversation, Experience, Failure, Persona

CONFIG = "config.toml"
RUN = "run.json"
PERSONAS = "personas.jsonl"
EXPERIENCES = "experiences.jsonl"
CONVERSATIONS = "conversations.jsonl"
FAILURES = "failures.jsonl"
JOURNAL = "journal.jsonl"
METRICS = "metrics.jsonl"
DATA_FILES = (PERSONAS, EXPERIENCES, CONVERSATIONS, FAILURES)
STAGE_FILES = {"personas": PERSONAS, "experiences": EXPERIENCES, "chats": CONVERSATIONS}
# Short names accepted wherever a file is named: a stage, or the file's stem.
ALIASES = {
    **STAGE_FILES,
    "conversations": CONVERSATIONS,
    "failures": FAILURES,
    "journal": JOURNAL,
    "metrics": METRICS,
}
KINDS = {
    PERSONAS: Persona,
    EXPERIENCES: Experience,
    CONVERSATIONS: Conversation,
    FAILURES: Failure,
}


_log = structlog.get_logger("soc_async.store")


class JournalEntry(msgspec.Struct):
    """A journal line: one step of an item, or (``done``) the mark that it finished."""

    id: str
    seq: int
    data: msgspec.Raw = msgspec.Raw(b"null")
    done: bool = False


entry_decoder = msgspec.json.Decoder(JournalEntry)
json_decoder = msgspec.json.Decoder()


def valid_check(decode: Callable[[bytes], Any]) -> Callable[[bytes], bool]:
    def check(line: bytes) -> bool:
        if not line.strip():
            return True
        try:
            decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return True

    return check


CHECKS: dict[str, Callable[[bytes], bool]] = {
    # A data file's last line is torn only when its newline is missing: the writer appends
    # whole lines, so a complete line that does not decode was edited by hand and is an
    # error to name (decode_all), not a tail to drop.
    **dict.fromkeys(DATA_FILES, lambda line: True),
    JOURNAL: valid_check(entry_decoder.decode),
    METRICS: valid_check(json_decoder.decode),
}


def check_for(path: Path) -> Callable[[bytes], bool]:
    """How the last line of a file is judged: by its own kind of line, else as JSON."""
    return CHECKS.get(path.name, CHECKS[METRICS])


# -- reading ---------------------------------------------------------------------------


def rfind_newline(f: Any, end: int) -> int:
    """Offset of the last newline before ``end``, or -1; reads backwards in blocks."""
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def good_end(path: Path, check: Callable[[bytes], bool]) -> int:
    """Where the file's good part ends: a torn or undecodable last line is left out."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb") as f:
        last = rfind_newline(f, size)
        if last != size - 1:
            return last + 1  # no newline at the end: the write was cut short
        start = rfind_newline(f, size - 1) + 1
        f.seek(start)
        return size if check(f.read(size - 1 - start)) else start


def repair(path: Path, check: Callable[[bytes], bool]) -> None:
    """Cut a torn last line off the file, so the next append starts on a clean line."""
    end = good_end(path, check)
    if path.exists() and end < path.stat().st_size:
        with path.open("r+b") as f:
            dropped = f.seek(0, os.SEEK_END) - end
            f.truncate(end)
            os.fsync(f.fileno())
        _log.warning("dropped a torn last line", file=str(path), bytes=dropped)


def good_lines(path: Path, check: Callable[[bytes], bool]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) up to the good end; blank lines skipped."""
    end = good_end(path, check)
    if end == 0:
        return
    offset = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            offset += len(line)
            if offset > end:
                return  # a writer appended after we measured, or the torn tail
            if line.strip():
                yield lineno, line


def decode_all(path: Path, decode: Callable[[bytes], Any]) -> Iterator[Any]:
    for lineno, line in good_lines(path, check_for(path)):
        try:
            yield decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RunDirError(
                f"{path}:{lineno}: not a valid line ({exc}); fix or remove it"
            ) from exc


# -- writing ---------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` whole or not at all: temp file, fsync, rename, fsync the dir."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
