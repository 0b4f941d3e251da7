"""Following a run directory another process writes: whole lines, incrementally."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import factories
import msgspec
import pytest

from soc_async.errors import InputError
from soc_async.monitor.follow import FileTail, Follower
from soc_async.monitor.snapshot import EngineFigures, Snapshot, StageFigures
from soc_async.records import Failure, Persona, encode_line
from soc_async.store import FAILURES, JOURNAL, METRICS, PERSONAS, RunDir, RunIdentity

CONFIG = "seed = 2\n[targets]\npersonas = 5\nexperiences = 3\nchats = 3\n"


def persona(i: int) -> Persona:
    return factories.persona(f"p-{i:07d}-x", name="n", text="card", iteration=i)


def line(snap: Snapshot) -> bytes:
    return msgspec.json.encode(snap) + b"\n"


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    run = RunDir.create(tmp_path / "run", CONFIG, RunIdentity.new(2))
    run.release()
    return run


def test_tail_yields_whole_lines_once(tmp_path: Path) -> None:
    """A line being written is left for the next read; each whole line comes once; a
    file replaced by a shorter one is read again from its start."""
    path = tmp_path / "f.jsonl"
    tail = FileTail(path)
    assert tail.read() == ([], False)  # no file yet
    path.write_bytes(b"a\nb\nc")
    assert tail.read() == ([b"a", b"b"], False)
    append(path, b"cc\n")
    assert tail.read() == ([b"ccc"], False)
    assert tail.read() == ([], False)
    tmp = tmp_path / "g"
    tmp.write_bytes(b"z\n")
    os.replace(tmp, path)  # compaction: a new, shorter file
    assert tail.read() == ([b"z"], True)


def test_tail_reads_a_big_file_in_bounded_chunks(tmp_path: Path) -> None:
    """Read a few bytes at a time, every line still comes once, whole and in order, a
    line longer than a chunk included."""
    path = tmp_path / "f.jsonl"
    lines = [b"x" * n for n in (1, 5, 30, 2, 17, 3)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    tail = FileTail(path, chunk=8)
    got: list[bytes] = []
    while batch := tail.read()[0]:
        assert len(batch) <= 8
        got.extend(batch)
    assert got == lines and tail.lineno == len(lines)


def test_follower_counts_what_the_writer_appends(run: RunDir) -> None:
    """Records, failures, rejections, the journal and the newest metrics line, read as a
    writer appends them (a torn record line counted only once it is whole)."""
    f = Follower(run.path)
    assert not f.poll() and f.latest is None and f.targets["personas"] == 5
    whole = encode_line(persona(1))
    append(run.file(PERSONAS), encode_line(persona(0)) + whole[:20])
    fail = Failure(id="p-0000002-x", stage="personas", reason="bad_card", attempts=4,
                   retries={"missing_section": 3})  # fmt: skip
    append(run.file(FAILURES), encode_line(fail))
    append(run.file(JOURNAL), b'{"id":"c-1","seq":0,"data":{}}\n{"id":"c-2","seq":0}\n')
    append(run.file(METRICS), line(Snapshot(time=1.0, requests=5, pid=1, host="h")))
    assert f.poll()
    assert f.done["personas"] == 1 and f.failed["personas"] == 1
    assert f.failures == {"bad_card": 1} and f.rejections == {"missing_section": 3}
    assert f.in_progress == 2 and f.latest is not None and f.latest.requests == 5
    append(run.file(PERSONAS), whole[20:])
    append(run.file(JOURNAL), b'{"id":"c-1","seq":1,"done":true}\n')
    assert f.poll()
    assert f.done["personas"] == 2 and f.in_progress == 1
    assert not f.poll()  # nothing new
    snap = f.snapshot()
    assert snap.stages["personas"].done == 2 and snap.stages["personas"].target == 5


def test_faults_add_up_over_the_processes_of_a_resumed_run(run: RunDir) -> None:
    """Each process's last line counts once: a resumed run's faults are the sum."""

    def snap(pid: int, elapsed: float, n: int) -> Snapshot:
        engine = EngineFigures(url="http://a", faults={"5xx": n})
        return Snapshot(time=elapsed, elapsed_s=elapsed, pid=pid, host="h", engines=[engine])

    for s in (snap(1, 1, 2), snap(1, 2, 5), snap(2, 1, 1), snap(2, 2, 3)):
        append(run.file(METRICS), line(s))
    f = Follower(run.path)
    f.poll()
    assert f.faults_by_endpoint() == {"http://a": {"5xx": 5 + 3}}
    append(run.file(METRICS), line(snap(2, 3, 4)))
    f.poll()
    assert f.faults_by_endpoint() == {"http://a": {"5xx": 5 + 4}}


def test_finished_and_gone(run: RunDir) -> None:
    """The run's last line says finished; a writer of this host that died without one is
    gone; a writer of another host is taken as running."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    host = socket.gethostname()
    f = Follower(run.path)
    append(run.file(METRICS), line(Snapshot(pid=os.getpid(), host=host)))
    f.poll()
    assert not f.finished and not f.gone
    append(run.file(METRICS), line(Snapshot(pid=int(dead.stdout), host=host)))
    f.poll()
    assert f.gone
    append(run.file(METRICS), line(Snapshot(pid=int(dead.stdout), host="elsewhere")))
    f.poll()
    assert not f.gone
    done = Snapshot(pid=int(dead.stdout), host=host, finished=True, outcome="done",
                    stages={"chats": StageFigures(target=3)})  # fmt: skip
    append(run.file(METRICS), line(done))
    f.poll()
    assert f.finished and not f.gone and f.snapshot().stages["chats"].target == 3


def test_a_complete_line_that_is_not_a_record_is_named(run: RunDir) -> None:
    """A whole line of a record file that does not decode: InputError naming FILE:LINE."""
    append(run.file(PERSONAS), encode_line(persona(0)) + b'{"kind": 5}\n')
    with pytest.raises(InputError, match=r"personas.jsonl:2"):
        Follower(run.path).poll()


def test_bad_metrics_lines_are_skipped(run: RunDir) -> None:
    """metrics.jsonl is advisory: a line that does not decode is skipped."""
    append(run.file(METRICS), b"not json\n" + line(Snapshot(requests=3)) + b'{"requests": "x"}\n')
    f = Follower(run.path)
    f.poll()
    assert f.latest is not None and f.latest.requests == 3
