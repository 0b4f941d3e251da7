"""A run directory read while another process writes it (``soc-async status``).

:class:`Follower` opens the directory with ``RunDir.open(path, repair=False)`` (no lock,
nothing written) and reads each file from where it stopped last time, whole lines only:
a line still being written is left for the next :meth:`Follower.poll`. So following a
long run costs the new bytes, not the whole files, and works over shared storage from
another machine (a login node watching a compute node's job).

What it keeps:

- per stage, the records written and the failure records, from the stage files and
  failures.jsonl; failures by reason and content rejections by reason (the ``retries``
  of conversations and failures), for the whole run directory;
- the journal's items started and not marked done (in progress);
- the newest metrics.jsonl line, and transport faults added up over every process that
  wrote the directory (a resumed run restarts its counters: each process's last line
  counts once).

The end of a run is known from its last metrics line, which has ``finished: true`` (the
run writes it however it ends: done, interrupted, failed). A process killed outright
(SIGKILL, a node lost) writes none; a reader on the same host sees that the line's
``pid`` is gone (:attr:`Follower.gone`); on another host the line only grows old.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from soc_async import config as config_mod
from soc_async.errors import ConfigError, InputError
from soc_async.monitor.snapshot import Snapshot, StageFigures, decode_snapshot
from soc_async.records import STAGES
from soc_async.store import CONFIG, FAILURES, JOURNAL, METRICS, STAGE_FILES, RunDir
from soc_async.store.files import entry_decoder, pid_alive
from soc_async.store.inputs import header_decoder

__all__ = ["FileTail", "Follower"]


class FileTail:
    """The whole lines appended to a file since the last :meth:`read`, at most about
    ``chunk`` bytes of them per call (a multi-gigabyte file is read in bounded memory)."""

    def __init__(self, path: Path, *, chunk: int = 8 << 20) -> None:
        self.path = path
        self.chunk = chunk
        self.offset = 0  # bytes consumed: always just after a newline
        self.lineno = 0  # lines consumed
        self._ino: int | None = None

    def read(self) -> tuple[list[bytes], bool]:
        """(new whole lines, restarted): ``restarted`` when the file was replaced or cut
        below what was read (the journal is compacted by replacing it): the lines are
        then from the file's start again and the caller starts its counts over. Call
        again until no line comes back to read everything appended."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [], False
        restarted = False
        if st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
            self.offset = self.lineno = 0
            restarted = True
        self._ino = st.st_ino
        if st.st_size == self.offset:
            return [], restarted
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = st.st_size - self.offset
            data = f.read(min(self.chunk, left))
            while b"\n" not in data and len(data) < left:  # a line longer than a chunk
                data += f.read(min(self.chunk, left - len(data)))
        end = data.rfind(b"\n")
        if end < 0:
            return [], restarted
        self.offset += end + 1
        lines = data[:end].split(b"\n")
        self.lineno += len(lines)
        return lines, restarted


class Follower:
    """See the module docstring. ``clock`` is Unix time (for the age of the figures)."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.run = RunDir.open(path, repair=False)
        self._clock = clock
        self.targets = _targets(self.run)
        self._stage_tails = {s: FileTail(self.run.file(STAGE_FILES[s])) for s in STAGES}
        self._failures_tail = FileTail(self.run.file(FAILURES))
        self._journal_tail = FileTail(self.run.file(JOURNAL))
        self._metrics_tail = FileTail(self.run.file(METRICS))
        self._reset_records()
        self._started: set[str] = set()
        self._ended: set[str] = set()
        self.latest: Snapshot | None = None
        # Faults of the processes before the current one, and by endpoint.
        self._closed_faults: Counter[tuple[str, str]] = Counter()
        self._segment: tuple[int, str] | None = None

    def _reset_records(self) -> None:
        self.done: Counter[str] = Counter()
        self.models: dict[str, Counter[str]] = {s: Counter() for s in STAGES}  # by model
        self.failed: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self._finished_ids: set[str] = set()

    # --- reading ----------------------------------------------------------------------

    def poll(self) -> bool:
        """Read what was appended since the last poll; True when anything was."""
        changed = False
        tails: list[tuple[str | None, FileTail]] = [
            *self._stage_tails.items(),
            (None, self._failures_tail),
        ]
        for stage, tail in tails:
            while True:
                lines, restarted = tail.read()
                if restarted:  # a record file was replaced: count every file again
                    self._reset_records()
                    for _, t in tails:
                        t.offset = t.lineno = 0
                    return self.poll() or True
                if not lines:
                    break
                changed = True
                first = tail.lineno - len(lines) + 1
                for i, line in enumerate(lines):
                    self._record(stage, tail.path, first + i, line)
        changed |= self._read_journal()
        changed |= self._read_metrics()
        return changed

    def _record(self, stage: str | None, path: Path, lineno: int, line: bytes) -> None:
        if not line.strip():
            return
        try:
            header = header_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InputError(f"{path}:{lineno}: not a record line ({exc})") from exc
        self._finished_ids.add(header.item_id)
        self.rejections.update(header.retries)
        if stage is not None:
            self.done[stage] += 1
            self.models[stage][header.model_name or "unknown"] += 1
        else:
            self.failed[header.stage or "unknown"] += 1
            self.failures[header.reason or "unknown"] += 1

    def _read_journal(self) -> bool:
        changed = False
        while True:
            lines, restarted = self._journal_tail.read()
            if restarted:
                self._started.clear()
                self._ended.clear()
            if not lines:
                return changed or restarted
            changed = True
            for line in lines:
                try:
                    entry = entry_decoder.decode(line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # the journal is the writer's scratch space: skip, do not fail
                (self._ended if entry.done else self._started).add(entry.id)

    def _read_metrics(self) -> bool:
        changed = False
        while lines := self._metrics_tail.read()[0]:
            changed |= self._metrics_lines(lines)
        return changed

    def _metrics_lines(self, lines: list[bytes]) -> bool:
        changed = False
        for line in lines:
            try:
                snap = decode_snapshot(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # advisory figures: a bad line is skipped, as RunDir does
            segment = (snap.pid, snap.host)
            prev = self.latest
            if prev is not None and (segment != self._segment or snap.elapsed_s < prev.elapsed_s):
                for engine in prev.engines:  # the previous process's last word
                    for cause, n in engine.faults.items():
                        self._closed_faults[engine.url, cause] += n
            self._segment = segment
            self.latest = snap
            changed = True
        return changed

    # --- what it knows ------------------------------------------------------------------

    @property
    def in_progress(self) -> int:
        """Items the journal holds, neither marked done nor finished."""
        return len(self._started - self._ended - self._finished_ids)

    @property
    def finished(self) -> bool:
        return self.latest is not None and self.latest.finished

    @property
    def gone(self) -> bool:
        """The writer of the newest line is a process of this host that no longer runs,
        and it wrote no final line (it was killed)."""
        s = self.latest
        if s is None or s.finished or not s.pid or s.host != socket.gethostname():
            return False
        return not pid_alive(s.pid)

    def age_s(self) -> float | None:
        """Seconds since the newest metrics line was written."""
        return None if self.latest is None else max(0.0, self._clock() - self.latest.time)

    def faults_by_endpoint(self) -> dict[str, dict[str, int]]:
        """Failed transport attempts by endpoint and cause, every process of the run."""
        total = Counter(self._closed_faults)
        if self.latest is not None:
            for engine in self.latest.engines:
                for cause, n in engine.faults.items():
                    total[engine.url, cause] += n
        out: dict[str, dict[str, int]] = {}
        for (url, cause), n in sorted(total.items()):
            if n:
                out.setdefault(url, {})[cause] = n
        return out

    def snapshot(self) -> Snapshot:
        """The newest metrics line with each stage's done and failed as the files hold
        them now (fresher than the line); an empty snapshot before the first line."""
        base = self.latest or Snapshot()
        stages = {}
        for stage in STAGES:
            figures = base.stages.get(stage)
            if figures is None:
                figures = StageFigures(target=self.targets.get(stage, 0))
            else:
                figures = msgspec.structs.replace(figures)
            figures.done = self.done[stage]
            figures.failed = self.failed[stage]
            stages[stage] = figures
        return msgspec.structs.replace(base, stages=stages)


def _targets(run: RunDir) -> dict[str, int]:
    """The targets of config.toml (whole run, before sharding), read by the one config
    reader; {} when there is no config or it is not a valid one."""
    try:
        targets = config_mod.load(run.file(CONFIG)).targets
    except ConfigError:
        return {}
    return {
        "personas": targets.personas,
        "experiences": targets.experiences,
        "chats": targets.chats,
    }
