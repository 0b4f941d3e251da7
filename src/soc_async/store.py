"""The run directory: crash-safe JSONL files, the journal of items in progress, resume.

    DIR/config.toml         the effective config (text given by the CLI)
    DIR/run.json            identity: seed, shard, created, run key (refuses another run)
    DIR/personas.jsonl      finished records, one JSON line each (records.py)
    DIR/experiences.jsonl
    DIR/conversations.jsonl
    DIR/failures.jsonl      items that could not be finished, with their reason
    DIR/journal.jsonl       accepted steps of items still in progress
    DIR/metrics.jsonl       periodic throughput snapshots, for ``soc-async status``

Crash safety: one writer task per file appends whole lines fed by a queue, and flushes
and fsyncs on an interval and at close (``put(..., durable=True)`` waits for the fsync
that covers its line). A crash can leave a torn last line; it is dropped on reading and
cut off the file before the next append, so appends always start on a clean line. An
undecodable line anywhere else is an error naming the file and line. A writer refuses an
id its file already holds, so a resumed run never writes an id twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self

import anyio
import msgspec
import structlog

from soc_async.errors import RunDirError
from soc_async.records import (
    STAGES,
    Conversation,
    Experience,
    Failure,
    Persona,
    Record,
    decode_line,
    encode_line,
    record_id,
)

__all__ = [
    "CONFIG",
    "CONVERSATIONS",
    "DATA_FILES",
    "EXPERIENCES",
    "FAILURES",
    "JOURNAL",
    "METRICS",
    "PERSONAS",
    "RUN",
    "STAGE_FILES",
    "Journal",
    "RecordHeader",
    "RecordWriter",
    "RunDir",
    "RunIdentity",
    "Writers",
    "run_identity",
    "run_key",
]

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
_ALIASES = {
    **STAGE_FILES,
    "conversations": CONVERSATIONS,
    "failures": FAILURES,
    "journal": JOURNAL,
    "metrics": METRICS,
}
_KINDS = {
    PERSONAS: Persona,
    EXPERIENCES: Experience,
    CONVERSATIONS: Conversation,
    FAILURES: Failure,
}

_log = structlog.get_logger("soc_async.store")


def run_key(seed: int) -> str:
    """The key two directories share only if they belong to one run.

    Ids derive from the seed alone (records.make_id), so the seed is the run's identity;
    targets may change between resumes, and shards of one run share the key.
    """
    return hashlib.blake2b(f"soc-async-run:{seed}".encode(), digest_size=8).hexdigest()


class _Identified(Protocol):
    seed: int
    shard: str


def run_identity(config: _Identified) -> RunIdentity:
    """The identity of a run configured by ``config`` (a RunConfig: its seed and shard)."""
    return RunIdentity.new(config.seed, config.shard)


class RunIdentity(msgspec.Struct, kw_only=True):
    """What run.json holds: which run a directory belongs to."""

    seed: int
    shard: str  # "i/n"
    key: str  # run_key(seed)
    created: str  # ISO time in UTC, for people

    @classmethod
    def new(cls, seed: int, shard: str = "0/1") -> RunIdentity:
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(seed=seed, shard=shard, key=run_key(seed), created=created)


class RecordHeader(msgspec.Struct, kw_only=True):
    """The few fields of any record line that resume and status need, decoded cheaply."""

    kind: str = ""
    id: str | None = None
    chat_id: str | None = None
    stage: str | None = None  # failures
    reason: str | None = None  # failures
    retries: dict[str, int] = {}  # conversations and failures

    @property
    def item_id(self) -> str:
        return self.chat_id if self.chat_id is not None else self.id or ""


class _Entry(msgspec.Struct):
    """A journal line: one step of an item, or (``done``) the mark that it finished."""

    id: str
    seq: int
    data: msgspec.Raw = msgspec.Raw(b"null")
    done: bool = False


_header_decoder = msgspec.json.Decoder(RecordHeader)
_entry_decoder = msgspec.json.Decoder(_Entry)
_json = msgspec.json.Decoder()


def _valid(decode: Callable[[bytes], Any]) -> Callable[[bytes], bool]:
    def check(line: bytes) -> bool:
        if not line.strip():
            return True
        try:
            decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return True

    return check


_CHECKS: dict[str, Callable[[bytes], bool]] = {
    **dict.fromkeys(DATA_FILES, _valid(decode_line)),
    JOURNAL: _valid(_entry_decoder.decode),
    METRICS: _valid(_json.decode),
}


def _check_for(path: Path) -> Callable[[bytes], bool]:
    """How the last line of a file is judged: by its own kind of line, else as JSON."""
    return _CHECKS.get(path.name, _CHECKS[METRICS])


# -- reading ---------------------------------------------------------------------------


def _rfind_newline(f: Any, end: int) -> int:
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


def _good_end(path: Path, check: Callable[[bytes], bool]) -> int:
    """Where the file's good part ends: a torn or undecodable last line is left out."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb") as f:
        last = _rfind_newline(f, size)
        if last != size - 1:
            return last + 1  # no newline at the end: the write was cut short
        start = _rfind_newline(f, size - 1) + 1
        f.seek(start)
        return size if check(f.read(size - 1 - start)) else start


def _repair(path: Path, check: Callable[[bytes], bool]) -> None:
    """Cut a torn last line off the file, so the next append starts on a clean line."""
    end = _good_end(path, check)
    if path.exists() and end < path.stat().st_size:
        with path.open("r+b") as f:
            dropped = f.seek(0, os.SEEK_END) - end
            f.truncate(end)
            os.fsync(f.fileno())
        _log.warning("dropped a torn last line", file=str(path), bytes=dropped)


def _lines(path: Path, check: Callable[[bytes], bool]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) up to the good end; blank lines skipped."""
    end = _good_end(path, check)
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


def _decode_all(path: Path, decode: Callable[[bytes], Any]) -> Iterator[Any]:
    for lineno, line in _lines(path, _check_for(path)):
        try:
            yield decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RunDirError(
                f"{path}:{lineno}: not a valid line ({exc}); fix or remove it"
            ) from exc


# -- files on disk ---------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` whole or not at all: temp file, fsync, rename, fsync the dir."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _LineWriter:
    """One file's writer task: appends queued lines, fsyncs on an interval and at close."""

    def __init__(
        self, path: Path, *, fsync_interval_s: float, max_pending: int, ids: set[str] | None
    ) -> None:
        _repair(path, _check_for(path))
        self.path = path
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            _fsync_dir(path.parent)  # the file's name must survive a crash, not only its lines
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

    async def _put(self, line: bytes, durable: bool, key: str | None) -> bool:
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
        _write_all(self._fd, b"".join(lines))
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


class RecordWriter(_LineWriter):
    """Appends records to one of the data files, never the same id twice."""

    async def put(self, record: Record, *, durable: bool = False) -> bool:
        """Queue one record; False (and a log line) if its id is already in the file.

        Returns once queued, or with ``durable`` once an fsync covers the line.
        """
        return await self._put(encode_line(record), durable, record_id(record))


class Journal:
    """Steps of items still in progress, so a resumed run continues them.

    Lines are ``{"id", "seq", "data"}`` per step and ``{"id", "seq", "done": true}`` when
    the item finished. A payload is any msgspec-encodable value, or bytes holding one
    JSON document; :meth:`pending` returns each step as JSON bytes, in order, for the
    caller to decode into its own type. Opening compacts the file (finished items
    dropped, atomically), so the journal does not grow across resumes.
    """

    def __init__(
        self, path: Path, pending: dict[str, list[bytes]], seqs: dict[str, int], writer: _LineWriter
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
        for entry in _decode_all(path, _entry_decoder.decode):
            if entry.done:
                done.add(entry.id)
            else:
                steps.setdefault(entry.id, []).append((entry.seq, bytes(entry.data)))
        keep = {i: sorted(s) for i, s in steps.items() if i not in done and i not in finished}
        lines = [_step_line(i, seq, data) for i, s in keep.items() for seq, data in s]
        if path.exists() and sum(map(len, lines)) != path.stat().st_size:
            _write_atomic(path, b"".join(lines))
        pending = {i: [data for _, data in s] for i, s in keep.items()}
        seqs = {i: s[-1][0] + 1 for i, s in keep.items()}
        writer = _LineWriter(path, fsync_interval_s=fsync_interval_s, max_pending=4096, ids=None)
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
                decoded = _json.decode(data)
            except msgspec.DecodeError as exc:
                raise ValueError(f"journal payload of {item_id} is not JSON: {exc}") from exc
            if b"\n" in data or b"\r" in data:
                data = msgspec.json.encode(decoded)  # one line per entry, whatever the input
        else:
            data = msgspec.json.encode(payload)
        seq = self._seqs.get(item_id, 0)
        self._seqs[item_id] = seq + 1
        await self._writer._put(_step_line(item_id, seq, data), durable, None)

    async def done(self, item_id: str, *, durable: bool = False) -> None:
        """Mark ``item_id`` finished: its steps are dropped at the next open."""
        seq = self._seqs.pop(item_id, 0)
        self._pending.pop(item_id, None)
        line = b'{"id":%s,"seq":%d,"done":true}\n' % (msgspec.json.encode(item_id), seq)
        await self._writer._put(line, durable, None)

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


def _step_line(item_id: str, seq: int, data: bytes) -> bytes:
    return b'{"id":%s,"seq":%d,"data":%s}\n' % (msgspec.json.encode(item_id), seq, data)


class RunDir:
    """One run's directory: create or open it, read what is finished, write what is new."""

    def __init__(self, path: Path, identity: RunIdentity) -> None:
        self.path = path
        self.identity = identity
        self._writers: dict[str, RecordWriter] = {}
        self._journal: Journal | None = None
        self._metrics_repaired = False

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], config_text: str, identity: RunIdentity
    ) -> RunDir:
        """A new run directory; an existing one is accepted only if it is the same run."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"{p}: exists and is not a directory; choose another output")
        if p.is_dir() and any(p.iterdir()):
            if not (p / RUN).exists():
                raise RunDirError(f"{p}: not empty and not a soc-async run; choose another output")
            run = cls.open(p)
            old = run.identity
            if (old.key, old.shard) != (identity.key, identity.shard):
                raise RunDirError(
                    f"{p}: holds another run (seed {old.seed}, shard {old.shard}); "
                    f"choose another output, or resume it with --resume {p}"
                )
            _write_atomic(p / CONFIG, config_text.encode())
            return run
        p.mkdir(parents=True, exist_ok=True)
        _write_atomic(p / CONFIG, config_text.encode())
        _write_atomic(p / RUN, msgspec.json.encode(identity) + b"\n")
        _fsync_dir(p.parent)
        return cls(p, identity)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, repair: bool = True, config_text: str | None = None
    ) -> RunDir:
        """An existing run directory, for resume (``repair``: cut torn tails now) or
        for reading while another process may be writing (``repair=False``).
        ``config_text`` replaces config.toml (the effective config of the resumed run)."""
        p = Path(path)
        if not p.is_dir():
            raise RunDirError(f"{p}: no such run directory")
        try:
            identity = msgspec.json.decode((p / RUN).read_bytes(), type=RunIdentity)
        except FileNotFoundError:
            raise RunDirError(f"{p}: not a soc-async run directory (no {RUN})") from None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RunDirError(f"{p / RUN}: unreadable ({exc}); is this a run directory?") from exc
        if repair:
            for name in (*DATA_FILES, JOURNAL, METRICS):
                _repair(p / name, _CHECKS[name])
        if config_text is not None:
            _write_atomic(p / CONFIG, config_text.encode())
        return cls(p, identity)

    def file(self, name: str) -> Path:
        """The path of a file of the run: a file name, a stage, or a stem ("failures")."""
        return self.path / _ALIASES.get(name, name)

    def config_text(self) -> str:
        """The effective config the run was (last) started with."""
        return self.file(CONFIG).read_text(encoding="utf-8")

    def iter_records(self, name: str) -> Iterator[Record]:
        return _decode_all(self.file(name), decode_line)

    def load(self, name: str) -> list[Record]:
        """Every record of a data file; a torn last line is left out."""
        return list(self.iter_records(name))

    def scan(self, name: str) -> Iterator[RecordHeader]:
        """Ids, kinds and failure reasons of a data file without decoding whole records."""
        return _decode_all(self.file(name), _header_decoder.decode)

    def finished_ids(self, stage: str) -> set[str]:
        """Ids done for ``stage``: written to its file, or recorded as failures."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        ids = {h.item_id for h in self.scan(STAGE_FILES[stage])}
        ids.update(h.item_id for h in self.scan(FAILURES) if h.stage == stage)
        return ids

    def writer(
        self, name: str, *, fsync_interval_s: float = 0.5, max_pending: int = 4096
    ) -> RecordWriter:
        """The one writer of a data file (made on first call, then the same one)."""
        name = _ALIASES.get(name, name)
        if name not in DATA_FILES:
            raise ValueError(f"{name!r} is not a data file; expected one of {DATA_FILES}")
        if name not in self._writers or self._writers[name].closed:
            ids = {h.item_id for h in self.scan(name)}
            self._writers[name] = RecordWriter(
                self.file(name), fsync_interval_s=fsync_interval_s, max_pending=max_pending, ids=ids
            )
        return self._writers[name]

    def journal(self, *, fsync_interval_s: float = 0.5) -> Journal:
        """The journal, compacted against every finished id (made once, then the same)."""
        if self._journal is None or self._journal._writer.closed:
            finished = set().union(*(self.finished_ids(s) for s in STAGES))
            self._journal = Journal.open(
                self.file(JOURNAL), finished=finished, fsync_interval_s=fsync_interval_s
            )
        return self._journal

    def journal_pending(self) -> dict[str, list[bytes]]:
        """Steps of the items in progress when the run stopped (see :meth:`Journal.pending`)."""
        return self.journal().pending()

    async def journal_append(self, item_id: str, payload: Any, *, durable: bool = False) -> None:
        await self.journal().append(item_id, payload, durable=durable)

    async def journal_done(self, item_id: str, *, durable: bool = False) -> None:
        await self.journal().done(item_id, durable=durable)

    @asynccontextmanager
    async def writers(self, *, fsync_interval_s: float = 0.5) -> AsyncIterator[Writers]:
        """Every data file's writer behind one ``put`` that routes records by kind; all
        writers and the journal are drained, fsynced and closed on exit, even when the
        body was cancelled."""
        try:
            yield Writers(self, fsync_interval_s)
        finally:
            await self.aclose()

    def import_records(self, stage: str, source: str | os.PathLike[str]) -> int:
        """Copy the records of ``stage`` from a JSONL file (another run's personas.jsonl,
        say) into this run; ids already here are skipped. Returns how many were added."""
        name = _ALIASES.get(stage, stage)
        if name not in STAGE_FILES.values():
            raise ValueError(f"cannot import {stage!r}; expected one of {tuple(STAGE_FILES)}")
        if name in self._writers and not self._writers[name].closed:
            raise RuntimeError(f"import into {name} while its writer is open")
        src = Path(source)
        if not src.is_file():
            raise RunDirError(f"{src}: no such file to import {stage} from")
        kind = _KINDS[name]
        have = {h.item_id for h in self.scan(name)}
        lines = []
        for lineno, line in _lines(src, _valid(decode_line)):
            try:
                record = decode_line(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise RunDirError(f"{src}:{lineno}: not a valid record ({exc})") from exc
            if not isinstance(record, kind):
                kind_name = type(record).__name__.lower()
                raise RunDirError(f"{src}:{lineno}: a {kind_name} record, expected {stage}")
            if record_id(record) not in have:
                have.add(record_id(record))
                lines.append(encode_line(record))
        if lines:
            path = self.file(name)
            _repair(path, _CHECKS[name])
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(lines)

    def journaled_ids(self) -> set[str]:
        """Items the journal holds steps of and has not marked done; reads only."""
        started: set[str] = set()
        done: set[str] = set()
        for entry in _decode_all(self.file(JOURNAL), _entry_decoder.decode):
            (done if entry.done else started).add(entry.id)
        return started - done

    def append_metrics(self, snapshot: Mapping[str, Any]) -> None:
        """Append one metrics snapshot (``time`` added when missing); not fsynced, as
        the figures are advisory and the next snapshot supersedes this one."""
        path = self.file(METRICS)
        if not self._metrics_repaired:
            _repair(path, _CHECKS[METRICS])
            self._metrics_repaired = True
        data = {"time": time.time(), **snapshot}
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _write_all(fd, msgspec.json.encode(data) + b"\n")
        finally:
            os.close(fd)

    def last_metrics(self) -> dict[str, Any] | None:
        """The newest metrics snapshot, or None."""
        last = None
        for _, line in _lines(self.file(METRICS), _CHECKS[METRICS]):
            try:
                value = _json.decode(line)
            except msgspec.DecodeError:
                continue  # advisory figures: a bad line is skipped, not an error
            if isinstance(value, dict):
                last = value
        return last

    def flush(self) -> None:
        """Write and fsync everything queued in every writer, synchronously."""
        for w in self._writers.values():
            w.flush()
        if self._journal is not None:
            self._journal.flush()

    async def aclose(self) -> None:
        """Close every writer (each drains and fsyncs); raise the first write error."""
        errors: list[BaseException] = []
        closers = [w.aclose for w in self._writers.values()]
        if self._journal is not None:
            closers.append(self._journal.aclose)
        for close in closers:
            try:
                await close()
            except RunDirError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, seed={self.identity.seed}, shard={self.identity.shard})"


class Writers:
    """The data files' writers behind one :meth:`put` that picks the file by record kind."""

    def __init__(self, run: RunDir, fsync_interval_s: float) -> None:
        self._run = run
        self._interval = fsync_interval_s

    async def put(self, record: Record, *, durable: bool = False) -> bool:
        """Queue ``record`` in its file; False if that id is already there."""
        name = next(n for n, kind in _KINDS.items() if isinstance(record, kind))
        writer = self._run.writer(name, fsync_interval_s=self._interval)
        return await writer.put(record, durable=durable)

    def flush(self) -> None:
        self._run.flush()
