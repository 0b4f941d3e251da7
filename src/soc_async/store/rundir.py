"""The run directory: create or open it, read what is finished, write what is new.

    DIR/config.toml         the effective config (text given by the CLI)
    DIR/run.json            identity: seed, shard, created, run key (refuses another run)
    DIR/personas.jsonl      finished records, one JSON line each (records.py)
    DIR/experiences.jsonl
    DIR/conversations.jsonl
    DIR/failures.jsonl      items that could not be finished, with their reason
    DIR/journal.jsonl       accepted steps of items still in progress
    DIR/metrics.jsonl       periodic throughput snapshots, for ``soc-async status``
    DIR/.lock               held (flock) by the one process writing the directory
    DIR/.lock.excl          its stand-in where the file system has no flock (pid host)

Crash safety: one writer task per file appends whole lines fed by a queue, and flushes
and fsyncs on an interval and at close (``put(..., durable=True)`` waits for the fsync
that covers its line). A torn last line is dropped on reading and cut off the file before
the next append. A writer refuses an id its file already holds, so a resumed run never
writes an id twice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from soc_async import logs
from soc_async.errors import RunDirError
from soc_async.records import STAGES, Record, decode_line, encode_line, record_id
from soc_async.store.files import (
    ALIASES,
    CHECKS,
    CONFIG,
    DATA_FILES,
    FAILURES,
    JOURNAL,
    KINDS,
    METRICS,
    RUN,
    STAGE_FILES,
    decode_all,
    entry_decoder,
    fsync_dir,
    good_lines,
    json_decoder,
    pid_alive,
    write_all,
    write_atomic,
)
from soc_async.store.files import (
    repair as repair_tail,
)
from soc_async.store.inputs import RecordHeader, header_decoder, read_records
from soc_async.store.journal import Journal
from soc_async.store.lines import RecordWriter
from soc_async.store.runinfo import RunIdentity, read_identity

LOCK = ".lock"
log = logs.get("rundir")


# flock(2) answers these where the file system does not do it (Lustre mounted without
# -o flock, some NFS and FUSE mounts): no lock was taken, and none will be.
NO_FLOCK = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL})


class _Lock:
    """An exclusive flock on DIR/.lock: one writing process per run directory.

    The file holds the owner's pid so the refusal can name it; the OS drops the lock when
    the process dies, so a crashed run never leaves the directory locked. Within one
    process the lock is shared (counted), since flock would refuse a second descriptor.
    Where the file system has no flock, a lock file of another kind stands in
    (:class:`_ExclusiveFile`), with a warning naming what it cannot do.
    """

    _held: ClassVar[dict[str, list[Any]]] = {}  # real path -> [fd or _ExclusiveFile, holders]

    def __init__(self, directory: Path) -> None:
        self._key: str | None = os.path.realpath(directory)
        held = self._held.get(self._key)
        if held is not None:
            held[1] += 1
            return
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirError(
                f"{directory}: in use by process {holder} (one process writes a run directory "
                "at a time); wait for it to finish or stop it"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in NO_FLOCK:
                raise RunDirError(f"{directory / LOCK}: cannot lock: {exc.strerror}") from exc
            self._held[self._key] = [_ExclusiveFile(directory, exc), 1]
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._held[self._key] = [fd, 1]

    def release(self) -> None:
        if self._key is None:
            return
        held = self._held[self._key]
        held[1] -= 1
        if held[1] == 0:
            del self._held[self._key]
            if isinstance(held[0], _ExclusiveFile):
                held[0].release()
            else:
                os.close(held[0])  # closing the descriptor drops the flock
        self._key = None


EXCL_LOCK = ".lock.excl"


class _ExclusiveFile:
    """DIR/.lock.excl created with O_EXCL, holding "pid host": the lock where flock is not.

    O_CREAT|O_EXCL is atomic on local file systems, Lustre and NFSv3+. What it cannot do is
    go away with a process that is killed: a file left by a process of this host that no
    longer runs is taken over; one from another host is refused, naming the host and the
    file to remove once that run is known to be over.
    """

    def __init__(self, directory: Path, why: OSError) -> None:
        self.path = directory / EXCL_LOCK
        self.owner = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._stale(directory):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            try:
                os.write(fd, f"{self.owner}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            log.warning(
                "the run directory's file system has no flock: locked with a lock file "
                "instead, which a killed run leaves behind (removed here when its process "
                "is gone from this host; from another host, remove it by hand once that "
                "run is over)",
                directory=str(directory),
                lock_file=str(self.path),
                flock_error=why.strerror,
            )
            return
        raise RunDirError(f"{directory}: cannot take the lock file {self.path}")

    def _stale(self, directory: Path) -> bool:
        """True when the file's owner is a process of this host that no longer runs;
        RunDirError naming the owner when it runs or is on another host."""
        try:
            text = self.path.read_text(errors="replace").split()
        except FileNotFoundError:
            return False  # released in between: try again
        pid, host = [*text, "", ""][:2]
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return True
        where = f"process {pid} on {host}" if host else "another process"
        raise RunDirError(
            f"{directory}: in use by {where} (lock file {self.path}; this file system has "
            "no flock); wait for it to finish, or remove that file once it is known to "
            "have ended"
        )

    def release(self) -> None:
        try:
            text = self.path.read_text(errors="replace").strip()
        except FileNotFoundError:
            return
        if text == self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class RunDir:
    """One run's directory: create or open it, read what is finished, write what is new."""

    def __init__(self, path: Path, identity: RunIdentity, lock: _Lock | None = None) -> None:
        self.path = path
        self.identity = identity
        self._lock = lock
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
            old = read_identity(p)
            if (old.key, old.shard) != (identity.key, identity.shard):
                raise RunDirError(
                    f"{p}: holds another run (seed {old.seed}, shard {old.shard}); "
                    f"choose another output, or resume it with --resume {p}"
                )
            run = cls.open(p)
            write_atomic(p / CONFIG, config_text.encode())
            return run
        p.mkdir(parents=True, exist_ok=True)
        lock = _Lock(p)
        write_atomic(p / CONFIG, config_text.encode())
        write_atomic(p / RUN, msgspec.json.encode(identity) + b"\n")
        fsync_dir(p.parent)
        return cls(p, identity, lock)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, repair: bool = True, config_text: str | None = None
    ) -> RunDir:
        """An existing run directory, for resume (``repair``: lock it and cut torn tails
        now) or for reading while another process may be writing (``repair=False``: no
        lock, nothing written). ``config_text`` replaces config.toml (the effective config
        of the resumed run)."""
        p = Path(path)
        identity = read_identity(p)
        lock = _Lock(p) if repair else None
        try:
            if repair:
                for name in (*DATA_FILES, JOURNAL, METRICS):
                    repair_tail(p / name, CHECKS[name])
            if config_text is not None:
                write_atomic(p / CONFIG, config_text.encode())
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(p, identity, lock)

    def file(self, name: str) -> Path:
        """The path of a file of the run: a file name, a stage, or a stem ("failures")."""
        return self.path / ALIASES.get(name, name)

    def config_text(self) -> str:
        """The effective config the run was (last) started with."""
        return self.file(CONFIG).read_text(encoding="utf-8")

    def iter_records(self, name: str) -> Iterator[Record]:
        return decode_all(self.file(name), decode_line)

    def load(self, name: str) -> list[Record]:
        """Every record of a data file; a torn last line is left out."""
        return list(self.iter_records(name))

    def check(self) -> None:
        """Every line of every data file and of the journal decodes; RunDirError naming
        FILE:LINE otherwise (a hand-edited file is refused before a resume starts)."""
        for name in DATA_FILES:
            for _ in decode_all(self.file(name), decode_line):
                pass
        for _ in decode_all(self.file(JOURNAL), entry_decoder.decode):
            pass

    def scan(self, name: str) -> Iterator[RecordHeader]:
        """Ids, kinds and failure reasons of a data file without decoding whole records."""
        return decode_all(self.file(name), header_decoder.decode)

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
        name = ALIASES.get(name, name)
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
        if self._journal is None or self._journal.closed:
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

    def import_records(
        self, stage: str, source: str | os.PathLike[str], *, allow_torn: bool = False
    ) -> int:
        """Copy the records of ``stage`` from a JSONL file (another run's personas.jsonl,
        say) into this run; ids already here are skipped. Returns how many were added."""
        name = ALIASES.get(stage, stage)
        if name not in STAGE_FILES.values():
            raise ValueError(f"cannot import {stage!r}; expected one of {tuple(STAGE_FILES)}")
        if name in self._writers and not self._writers[name].closed:
            raise RuntimeError(f"import into {name} while its writer is open")
        src = Path(source)
        if not src.is_file():
            raise RunDirError(f"{src}: no such file to import {stage} from")
        kind = KINDS[name]
        have = {h.item_id for h in self.scan(name)}
        lines = []
        for _, record in read_records(src, kind, allow_torn=allow_torn):
            if record_id(record) not in have:
                have.add(record_id(record))
                lines.append(encode_line(record))
        if lines:
            path = self.file(name)
            repair_tail(path, CHECKS[name])
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                write_all(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(lines)

    def journaled_ids(self) -> set[str]:
        """Items the journal holds steps of and has not marked done; reads only."""
        started: set[str] = set()
        done: set[str] = set()
        for entry in decode_all(self.file(JOURNAL), entry_decoder.decode):
            (done if entry.done else started).add(entry.id)
        return started - done

    def append_metrics(self, snapshot: Mapping[str, Any]) -> None:
        """Append one metrics snapshot (``time`` added when missing); not fsynced, as
        the figures are advisory and the next snapshot supersedes this one."""
        path = self.file(METRICS)
        try:
            if not self._metrics_repaired:
                repair_tail(path, CHECKS[METRICS])
                self._metrics_repaired = True
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except (FileNotFoundError, NotADirectoryError) as exc:
            # The records' files stay open and take their lines wherever the directory
            # went; this file is opened afresh each time, so it is the first to notice.
            raise RunDirError(
                f"{self.path}: gone while the run was writing ({exc.strerror}): the run "
                "directory was moved or deleted; stopping (resume from where it went "
                "with --resume)"
            ) from exc
        data = {"time": time.time(), **snapshot}
        try:
            write_all(fd, msgspec.json.encode(data) + b"\n")
        finally:
            os.close(fd)

    def last_metrics(self) -> dict[str, Any] | None:
        """The newest metrics snapshot, or None."""
        last = None
        for _, line in good_lines(self.file(METRICS), CHECKS[METRICS]):
            try:
                value = json_decoder.decode(line)
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

    def release(self) -> None:
        """Let another process open the directory for writing (closing does this too)."""
        if self._lock is not None:
            self._lock.release()

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
        self._writers.clear()
        self._journal = None
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
        name = next(n for n, kind in KINDS.items() if isinstance(record, kind))
        writer = self._run.writer(name, fsync_interval_s=self._interval)
        return await writer.put(record, durable=durable)

    def flush(self) -> None:
        self._run.flush()
