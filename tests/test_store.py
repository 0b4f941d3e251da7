"""The run directory: identity, torn lines, no id twice, durability, the journal."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import factories
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soc_async.errors import InputError, RunDirError
from soc_async.records import Failure, Persona, encode_line, make_id, record_id
from soc_async.store import (
    CONFIG,
    FAILURES,
    JOURNAL,
    PERSONAS,
    RUN,
    RunDir,
    RunIdentity,
)

SEED = 11
_EXAMPLES = itertools.count()


def persona(i: int, text: str = "card") -> Persona:
    return factories.persona(make_id(SEED, "personas", i), name=f"n{i}", text=text, iteration=i)


def new_run(path: Path) -> RunDir:
    return RunDir.create(path, "seed = 11\n", RunIdentity.new(SEED))


def write_lines(path: Path, records: list, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(encode_line(r) for r in records) + tail)


# -- identity --------------------------------------------------------------------------


def test_create_writes_config_and_identity_and_open_reads_them(tmp_path: Path) -> None:
    """A new run dir holds the given config text and its identity; open reads it back."""
    run = new_run(tmp_path / "run")
    assert (run.path / CONFIG).read_text() == "seed = 11\n"
    again = RunDir.open(tmp_path / "run")
    assert again.identity == run.identity
    assert again.config_text() == "seed = 11\n"


def test_create_refuses_a_foreign_or_other_runs_directory(tmp_path: Path) -> None:
    """A non-empty directory that is not this run's is refused with a one-line message;
    the same run's directory is accepted."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a soc-async run") as info:
        new_run(foreign)
    assert "\n" not in str(info.value)
    new_run(tmp_path / "run")
    with pytest.raises(RunDirError, match="another run"):
        RunDir.create(tmp_path / "run", "", RunIdentity.new(SEED + 1))
    with pytest.raises(RunDirError, match="another run"):
        RunDir.create(tmp_path / "run", "", RunIdentity.new(SEED, "1/2"))
    same = RunDir.create(tmp_path / "run", "seed = 11 # again\n", RunIdentity.new(SEED))
    assert same.config_text() == "seed = 11 # again\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        new_run(tmp_path / "file")


def test_open_refuses_what_is_not_a_run_dir(tmp_path: Path) -> None:
    """Opening a missing directory, one without run.json, or a broken run.json fails."""
    with pytest.raises(RunDirError, match="no such run directory"):
        RunDir.open(tmp_path / "missing")
    with pytest.raises(RunDirError, match=r"no run\.json"):
        RunDir.open(tmp_path)
    (tmp_path / RUN).write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable"):
        RunDir.open(tmp_path)


# -- reading and torn lines -----------------------------------------------------------


def test_torn_last_line_is_dropped_and_cut_before_appending(tmp_path: Path) -> None:
    """A last line without its newline is left out when reading (file untouched), cut
    off when opened for resume, and the next append starts on a clean line."""
    run = new_run(tmp_path / "run")
    path = run.file(PERSONAS)
    good = [persona(i) for i in range(3)]
    write_lines(path, good, tail=encode_line(persona(3))[:25])
    size = path.stat().st_size
    assert run.load(PERSONAS) == good
    assert RunDir.open(run.path, repair=False).load(PERSONAS) == good
    assert path.stat().st_size == size  # reading never writes

    RunDir.open(run.path)
    assert path.read_bytes() == b"".join(encode_line(r) for r in good)


async def test_append_after_torn_line_starts_clean(tmp_path: Path) -> None:
    """A writer opened on a file with a torn tail appends on a fresh line."""
    run = new_run(tmp_path / "run")
    write_lines(run.file(PERSONAS), [persona(0)], tail=b'{"kind":"persona","id":"p-')
    async with run.writer(PERSONAS) as w:
        assert await w.put(persona(1))
    assert run.load(PERSONAS) == [persona(0), persona(1)]


def test_an_undecodable_complete_line_is_an_error_anywhere(tmp_path: Path) -> None:
    """Only a line without its newline is torn; a complete line that does not decode (a
    hand edit), last or in the middle, is an error naming the file and the line number."""
    run = new_run(tmp_path / "run")
    path = run.file(PERSONAS)
    write_lines(path, [persona(0)], tail=b'{"kind":"persona"}\n')
    with pytest.raises(RunDirError, match=r"personas.jsonl:2: not a valid line"):
        run.load(PERSONAS)
    write_lines(path, [persona(0)], tail=b"garbage\n" + encode_line(persona(1)))
    with pytest.raises(RunDirError, match=r"personas.jsonl:2: not a valid line"):
        run.load(PERSONAS)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=6),
    cut=st.floats(min_value=0, max_value=1),
)
def test_any_truncation_reads_back_as_a_prefix(
    tmp_path: Path, texts: list[str], cut: float
) -> None:
    """Cutting a valid file at any byte reads back as the records whose lines are
    complete, and after repair an append yields that prefix plus the new record."""
    run_path = tmp_path / "runs" / str(next(_EXAMPLES))  # a fresh dir per example
    run = new_run(run_path)
    records = [persona(i, t) for i, t in enumerate(texts)]
    data = b"".join(encode_line(r) for r in records)
    at = int(len(data) * cut)
    run.file(PERSONAS).write_bytes(data[:at])
    complete = data[:at].count(b"\n")
    assert run.load(PERSONAS) == records[:complete]

    repaired = RunDir.open(run_path)
    extra = persona(100, "after")

    async def append() -> None:
        async with repaired.writer(PERSONAS) as w:
            await w.put(extra)

    anyio.run(append)
    assert repaired.load(PERSONAS) == [*records[:complete], extra]


# -- writing ---------------------------------------------------------------------------


async def test_never_writes_an_id_twice(tmp_path: Path) -> None:
    """An id already written, queued, or in the file before a resume is refused."""
    run = new_run(tmp_path / "run")
    async with run.writer(PERSONAS) as w:
        assert await w.put(persona(0))
        assert not await w.put(persona(0, "another text"))
        assert await w.put(persona(1))
    resumed = RunDir.open(run.path)
    async with resumed.writer(PERSONAS) as w:
        assert not await w.put(persona(1))
        assert await w.put(persona(2))
    ids = [record_id(r) for r in resumed.load(PERSONAS)]
    assert ids == [persona(i).id for i in range(3)]


async def test_durable_put_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    """put(durable=True) returns only once the line is in the file."""
    run = new_run(tmp_path / "run")
    w = run.writer(PERSONAS, fsync_interval_s=60)
    await w.put(persona(0), durable=True)
    assert run.load(PERSONAS) == [persona(0)]
    await w.aclose()


async def test_lines_reach_the_file_by_interval_flush_and_close(tmp_path: Path) -> None:
    """Queued lines are written by the writer task, by a sync flush(), and at close."""
    run = new_run(tmp_path / "run")
    w = run.writer(PERSONAS, fsync_interval_s=0.01)
    await w.put(persona(0))
    with anyio.fail_after(10):
        while not run.load(PERSONAS):  # noqa: ASYNC110 - polling the file is the point
            await anyio.sleep(0.01)
    for i in range(1, 50):
        await w.put(persona(i))
    run.flush()  # synchronous: everything queued is on disk now
    assert len(run.load(PERSONAS)) == 50
    await w.put(persona(50))
    await run.aclose()
    assert len(run.load(PERSONAS)) == 51


async def test_close_drains_even_when_the_caller_is_cancelled(tmp_path: Path) -> None:
    """Closing a writer inside a cancelled scope still writes everything queued."""
    run = new_run(tmp_path / "run")
    w = run.writer(FAILURES, max_pending=10_000)
    failures = [Failure(id=f"c-{i}", stage="chats", reason="x", attempts=1) for i in range(500)]
    with anyio.CancelScope() as scope:
        for f in failures:
            await w.put(f)
        scope.cancel()
        await w.aclose()
    assert len(run.load(FAILURES)) == 500


async def test_backpressure_bounds_the_queue(tmp_path: Path) -> None:
    """With max_pending reached, put waits until the writer has taken lines."""
    run = new_run(tmp_path / "run")
    async with run.writer(PERSONAS, max_pending=2) as w, anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(w.put, persona(i))
    assert len(run.load(PERSONAS)) == 20


def test_finished_ids_count_output_and_failures_of_that_stage(tmp_path: Path) -> None:
    """A stage's finished ids are its records plus its failures, not other stages'."""
    run = new_run(tmp_path / "run")
    write_lines(run.file(PERSONAS), [persona(0)])
    write_lines(
        run.file(FAILURES),
        [
            Failure(id=persona(1).id, stage="personas", reason="bad_card", attempts=3),
            Failure(id="c-0000001-x", stage="chats", reason="http_400", attempts=1),
        ],
    )
    assert run.finished_ids("personas") == {persona(0).id, persona(1).id}
    assert run.finished_ids("chats") == {"c-0000001-x"}
    assert run.finished_ids("experiences") == set()


def test_metrics_lines_and_the_last_snapshot(tmp_path: Path) -> None:
    """append_metrics adds a time and the newest complete snapshot is read back."""
    run = new_run(tmp_path / "run")
    assert run.last_metrics() is None
    run.append_metrics({"tokens_per_s": 10.0})
    run.append_metrics({"tokens_per_s": 20.0, "capacity": 64})
    with run.file("metrics.jsonl").open("ab") as f:
        f.write(b'{"tokens_per_s": 3')  # a torn snapshot
    last = run.last_metrics()
    assert last is not None and last["tokens_per_s"] == 20.0 and "time" in last


def test_a_run_directory_gone_under_a_run_is_named(tmp_path: Path) -> None:
    """A run directory deleted (or moved) while the run writes: the next metrics line
    ends the run with a RunDirError naming the directory, not a traceback."""
    run = new_run(tmp_path / "run")
    run.append_metrics({"tokens_per_s": 10.0})
    shutil.rmtree(tmp_path / "run")
    with pytest.raises(
        RunDirError, match=r"run: gone while the run was writing .*moved or deleted"
    ):
        run.append_metrics({"tokens_per_s": 20.0})


async def test_writers_route_by_kind_and_close_everything(tmp_path: Path) -> None:
    """writers() puts each record in its kind's file, refuses a repeated id, and on exit
    every queued line and journal step is on disk, even from a cancelled body."""
    run = new_run(tmp_path / "run")
    failure = Failure(id="c-0000001-x", stage="chats", reason="http_400", attempts=1)
    with anyio.CancelScope() as scope:
        async with run.writers() as out:
            assert await out.put(persona(0))
            assert await out.put(failure)
            assert not await out.put(persona(0))
            await run.journal_append("c-0000002-y", {"turn": 1})
            scope.cancel()
            await anyio.sleep_forever()
    assert run.load("personas") == [persona(0)]
    assert run.load("failures") == [failure]
    assert RunDir.open(run.path).journal_pending() == {"c-0000002-y": [b'{"turn":1}']}


def test_import_records_copies_a_stage_and_skips_known_ids(tmp_path: Path) -> None:
    """Importing a stage's file adds its records once; a torn last line or a record of
    another kind is an error naming the file and line."""
    run = new_run(tmp_path / "run")
    source = tmp_path / "personas.jsonl"
    write_lines(source, [persona(0), persona(1)], tail=b'{"kind":')
    with pytest.raises(InputError, match=r"personas\.jsonl:3: torn last line"):
        run.import_records("personas", source)
    write_lines(source, [persona(0), persona(1)])
    assert run.import_records("personas", source) == 2
    assert run.import_records("personas", source) == 0
    assert [record_id(r) for r in run.load(PERSONAS)] == [persona(0).id, persona(1).id]
    write_lines(source, [persona(2), Failure(id="x", stage="chats", reason="r", attempts=1)])
    with pytest.raises(InputError, match=r"personas\.jsonl:2: a failure record"):
        run.import_records("personas", source)
    with pytest.raises(RunDirError, match="no such file"):
        run.import_records("experiences", tmp_path / "missing.jsonl")


def test_resume_rewrites_the_config_and_identity_follows_the_config(tmp_path: Path) -> None:
    """open(config_text=...) replaces config.toml; run_identity keys on the seed only."""
    from soc_async.config import RunConfig
    from soc_async.store import run_identity, run_key

    config = RunConfig(seed=SEED, shard="1/4")
    identity = run_identity(config)
    assert (identity.seed, identity.shard, identity.key) == (SEED, "1/4", run_key(SEED))
    run = RunDir.create(tmp_path / "run", "old\n", identity)
    assert RunDir.open(run.path, config_text="new\n").config_text() == "new\n"


# -- the journal -----------------------------------------------------------------------


class Step(msgspec.Struct):
    turn: int
    text: str


async def test_journal_pending_done_and_compaction(tmp_path: Path) -> None:
    """Items not done come back with their steps in order; done and finished items are
    dropped and the file is rewritten without them; sequence numbers continue."""
    run = new_run(tmp_path / "run")
    journal = run.journal()
    assert journal.pending() == {}
    for turn in range(3):
        await journal.append("c-a", Step(turn, f"a{turn}"))
        await journal.append("c-b", Step(turn, f"b{turn}"))
    await journal.append("c-c", msgspec.json.encode(Step(0, "c0")))
    await journal.done("c-b")
    await journal.aclose()
    write_lines(run.file("conversations.jsonl"), [])  # nothing finished yet

    journal = RunDir.open(run.path).journal()
    pending = {
        k: [msgspec.json.decode(d, type=Step) for d in v] for k, v in journal.pending().items()
    }
    assert pending == {"c-a": [Step(0, "a0"), Step(1, "a1"), Step(2, "a2")], "c-c": [Step(0, "c0")]}
    assert b"c-b" not in run.file(JOURNAL).read_bytes()
    await journal.append("c-a", Step(3, "a3"))
    await journal.aclose()

    # c-c finished meanwhile (it is in failures.jsonl): compaction drops it too.
    write_lines(run.file(FAILURES), [Failure(id="c-c", stage="chats", reason="x", attempts=1)])
    journal = RunDir.open(run.path).journal()
    assert list(journal.pending()) == ["c-a"]
    assert [msgspec.json.decode(d, type=Step).turn for d in journal.pending()["c-a"]] == [
        0,
        1,
        2,
        3,
    ]
    lines = run.file(JOURNAL).read_bytes().splitlines()
    assert [msgspec.json.decode(line)["seq"] for line in lines] == [0, 1, 2, 3]
    await journal.aclose()


async def test_journal_torn_tail_and_payload_rules(tmp_path: Path) -> None:
    """A torn journal line is dropped; bytes payloads must be JSON and are kept on
    one line."""
    run = new_run(tmp_path / "run")
    journal = run.journal()
    await journal.append("c-a", b'{\n  "turn": 0, "text": "x"\n}', durable=True)
    with pytest.raises(ValueError, match="not JSON"):
        await journal.append("c-a", b"\x00not json")
    await journal.aclose()
    with run.file(JOURNAL).open("ab") as f:
        f.write(b'{"id":"c-a","seq":1,"da')
    journal = RunDir.open(run.path).journal()
    assert [msgspec.json.decode(d, type=Step) for d in journal.pending()["c-a"]] == [Step(0, "x")]
    assert run.journaled_ids() == {"c-a"}
    await journal.aclose()


# -- crashes ---------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from soc_async.records import Persona, PersonaMeta, make_id
    from soc_async.scheduler import StopSignal
    from soc_async.store import PERSONAS, RunDir

    async def main(path, first, last, workers):
        run = RunDir.open(path)
        w = run.writer(PERSONAS, fsync_interval_s=0.02)
        ids = iter(range(first, last))
        stop = StopSignal(grace_s=5)

        async def worker():
            for i in ids:
                if stop.stopping:
                    return
                meta = PersonaMeta(iteration=i, model="m", region="r", subregion="s",
                                   name="n", gender="f", age=30, time_taken=0.0)
                text = "x" * (2000 + (i * 7919) % 60000)
                p = Persona(id=make_id(11, "personas", i), persona_text=text, meta=meta)
                if await w.put(p, durable=True):
                    sys.stdout.write("ACK " + p.id + "\\n")
                    sys.stdout.flush()

        with stop.installed():
            await asyncio.gather(*(worker() for _ in range(workers)))
        await run.aclose()
        if stop.requested:
            sys.exit(130)

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 8))
    """
)


def _child(path: Path, first: int, last: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(first), str(last)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_acks(proc: subprocess.Popen[str], until: int) -> list[str]:
    assert proc.stdout is not None
    acked = []
    while len(acked) < until:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("ACK "):
            acked.append(line[4:].strip())
    return acked


def _finish(proc: subprocess.Popen[str], acked: list[str]) -> None:
    out, _ = proc.communicate(timeout=60)
    lines = out.split("\n")[:-1]  # a cut last line was not acked
    acked.extend(line[4:] for line in lines if line.startswith("ACK "))


def _check_dir(path: Path, acked: list[str]) -> list[str]:
    run = RunDir.open(path)  # what a resume does first
    run.release()
    data = (path / PERSONAS).read_bytes()
    assert data == b"" or data.endswith(b"\n")
    ids = [record_id(r) for r in run.load(PERSONAS)]
    assert len(ids) == data.count(b"\n")  # every line is a whole record
    assert len(ids) == len(set(ids))
    assert set(acked) <= set(ids)
    return ids


def test_sigkill_mid_writing_loses_no_acked_record_and_resume_never_duplicates(
    tmp_path: Path,
) -> None:
    """A writer SIGKILLed while writing leaves, once the dir is opened, no torn line, no
    duplicate id and every acknowledged id; a resumed writer covering the same ids and
    more writes each missing id once."""
    path = tmp_path / "run"
    new_run(path).release()  # the children write it
    proc = _child(path, 0, 100_000)
    acked = _read_acks(proc, until=150)
    proc.send_signal(signal.SIGKILL)
    _finish(proc, acked)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 150
    # Linux rarely tears a single write() on SIGKILL; add the torn tail a cut write leaves.
    with (path / PERSONAS).open("ab") as f:
        f.write(encode_line(persona(10**6))[:-40])
    ids = _check_dir(path, acked)

    proc = _child(path, 0, len(ids) + 100)
    again: list[str] = []
    _finish(proc, again)
    assert proc.returncode == 0
    assert set(again).isdisjoint(ids)  # nothing already written was written again
    final = _check_dir(path, acked + again)
    assert set(final) == {make_id(SEED, "personas", i) for i in range(len(ids) + 100)}


def test_sigint_flushes_and_exits_130_with_a_clean_resume(tmp_path: Path) -> None:
    """SIGINT stops intake, every acknowledged record is on disk, lines are whole, and
    the child exits 130."""
    path = tmp_path / "run"
    new_run(path).release()
    size_before = os.path.getsize(path / RUN)
    proc = _child(path, 0, 100_000)
    acked = _read_acks(proc, until=100)
    proc.send_signal(signal.SIGINT)
    _finish(proc, acked)
    assert proc.returncode == 130
    data = (path / PERSONAS).read_bytes()
    assert data.endswith(b"\n")
    ids = _check_dir(path, acked)
    assert len(ids) < 100_000
    assert os.path.getsize(path / RUN) == size_before


def test_a_second_process_cannot_write_a_locked_run_directory(tmp_path: Path) -> None:
    """While one process holds a run directory, `soc-async run --resume DIR` from another
    exits 2 naming the holder's pid and writes nothing; once the holder is gone it opens."""
    import subprocess

    run = new_run(tmp_path / "run")
    run.release()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from soc_async.store import RunDir; RunDir.open(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(run.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()}
        refused = subprocess.run(
            [sys.executable, "-m", "soc_async.cli", "run", "--resume", str(run.path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2
        assert f"in use by process {holder.pid}" in refused.stderr
        assert {p.name: p.stat().st_mtime_ns for p in run.path.iterdir()} == before
    finally:
        holder.kill()
        holder.communicate()
    RunDir.open(run.path).release()  # the lock went with the process
