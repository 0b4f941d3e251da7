"""soc-async status: counts, failures and rejections by reason, journal, faults,
throughput; the --json schema; following a directory until its run ends."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import factories
import msgspec
import pytest
from rich.console import Console

from soc_async.errors import RunDirError
from soc_async.monitor.snapshot import EngineFigures, Snapshot, StageFigures
from soc_async.monitor.status import collect, encode, render, schema, watch
from soc_async.records import (
    Conversation,
    Failure,
    Persona,
    TopicSlot,
    Usage,
    encode_line,
)
from soc_async.store import (
    CONVERSATIONS,
    FAILURES,
    JOURNAL,
    PERSONAS,
    RunDir,
    RunIdentity,
)

CONFIG_TEXT = """seed = 5

[targets]
personas = 10
experiences = 6
chats = 4
"""


def persona(i: int) -> Persona:
    return factories.persona(i, name="n", age=40, text="card")


def chat(i: int, retries: dict[str, int]) -> Conversation:
    return Conversation(
        chat_id=f"c-{i}",
        experience_id="e-1",
        persona_ids=["p-1", "p-2"],
        style="freeform",
        cadence="realtime",
        topics=[TopicSlot(title="t", turns=2, primary=True)],
        turns=[],
        summary="",
        ended_by="max_turns",
        model="m",
        usage=Usage(prompt=10, completion=5),
        retries=retries,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    run = RunDir.create(path, CONFIG_TEXT, RunIdentity.new(5))
    lines = [encode_line(persona(i)) for i in range(3)]
    run.file(PERSONAS).write_bytes(b"".join(lines) + b'{"kind":"persona","id":"p-9"')
    run.file(CONVERSATIONS).write_bytes(
        encode_line(chat(1, {"clock_backwards": 2}))
        + encode_line(chat(2, {"clock_backwards": 1, "bad_state": 1}))
    )
    failures = [
        Failure(id="p-7", stage="personas", reason="bad_card", attempts=4),
        Failure(
            id="c-3", stage="chats", reason="retries_exhausted:bad_state", attempts=4,
            retries={"bad_state": 3},
        ),
        Failure(id="c-4", stage="chats", reason="http_400", attempts=1),
    ]  # fmt: skip
    run.file(FAILURES).write_bytes(b"".join(encode_line(f) for f in failures))
    run.file(JOURNAL).write_bytes(
        b'{"id":"c-5","seq":0,"data":{}}\n'
        b'{"id":"c-6","seq":0,"data":{}}\n'
        b'{"id":"c-6","seq":1,"done":true}\n'
        b'{"id":"c-1","seq":0,"data":{}}\n'  # finished already: not in progress
    )
    run.append_metrics({"requests_done": 120, "tokens_per_s": 812.5, "capacity": 48})
    engine = EngineFigures(url="http://127.0.0.1:8000", faults={"5xx": 2, "reset": 1})
    last = Snapshot(tokens_per_s=905.25, capacity=64, engines=[engine], faults={"5xx": 2})
    run.append_metrics(msgspec.to_builtins(last))
    run.release()
    return path


def test_collect_counts_stages_failures_retries_journal_and_metrics(run_dir: Path) -> None:
    """Every figure comes from the files: torn tails left out, retries summed over
    conversations and failures, finished items not counted as in progress."""
    status = collect(run_dir)
    by_stage = {s.stage: (s.done, s.failed, s.target) for s in status.stages}
    assert by_stage == {"personas": (3, 1, 10), "experiences": (0, 0, 6), "chats": (2, 2, 4)}
    assert status.failures == {"bad_card": 1, "retries_exhausted:bad_state": 1, "http_400": 1}
    assert status.rejections == {"bad_state": 4, "clock_backwards": 3}
    assert status.in_progress == 1
    assert status.metrics is not None and status.metrics.tokens_per_s == 905.25
    assert status.faults == {"5xx": 2, "reset": 1}
    assert status.faults_by_endpoint == {"http://127.0.0.1:8000": {"5xx": 2, "reset": 1}}
    assert status.seed == 5 and status.state == "running" and status.outcome == ""


def test_collect_never_writes(run_dir: Path) -> None:
    """Reading the status of a directory leaves every file as it was (a live run may be
    appending to it)."""
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    collect(run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_render_shows_the_figures(run_dir: Path) -> None:
    """The rendered table names the stages, targets, failure reasons and throughput."""
    console = Console(record=True, width=120)
    console.print(render(collect(run_dir)))
    text = console.export_text()
    for expected in ("personas", "10", "http_400", "clock_backwards", "905.2", "in progress"):
        assert expected in text
    assert "127.0.0.1:8000" in text and "reset" in text and "state: running" in text


def test_missing_config_and_metrics_still_render(tmp_path: Path) -> None:
    """A run without targets or metrics reports what it has."""
    run = RunDir.create(tmp_path / "run", "", RunIdentity.new(1))
    run.file("config.toml").unlink()
    status = collect(run.path)
    assert all(s.target is None and s.done == 0 for s in status.stages)
    assert status.state == "waiting"
    console = Console(record=True, width=100)
    console.print(render(status))
    assert "no metrics recorded yet" in console.export_text()


def test_not_a_run_dir_is_an_input_error(tmp_path: Path) -> None:
    """status on a directory that is not a run fails with RunDirError (exit code 2)."""
    with pytest.raises(RunDirError):
        collect(tmp_path)


def test_status_counts_records_by_model(tmp_path: Path) -> None:
    """Finished records are counted by the model that wrote them (meta.model of personas
    and experiences, model of conversations), and the table shows each model's share."""
    import msgspec

    path = tmp_path / "run"
    run = RunDir.create(path, CONFIG_TEXT, RunIdentity.new(5))
    people = [msgspec.structs.replace(persona(i), meta=msgspec.structs.replace(
        persona(i).meta, model="kimi" if i % 4 else "glm")) for i in range(8)]  # fmt: skip
    run.file(PERSONAS).write_bytes(b"".join(encode_line(p) for p in people))
    chats = [msgspec.structs.replace(chat(i, {}), model="glm") for i in range(3)]
    run.file(CONVERSATIONS).write_bytes(b"".join(encode_line(c) for c in chats))
    status = collect(path)
    by_stage = {s.stage: s.models for s in status.stages}
    assert by_stage == {"personas": {"kimi": 6, "glm": 2}, "experiences": {}, "chats": {"glm": 3}}
    console = Console(record=True, width=120)
    console.print(render(status))
    text = console.export_text()
    assert "kimi" in text and "6 (75%)" in text and "3 (100%)" in text


SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "status-schema.json"


def test_json_schema_is_the_documented_one() -> None:
    """`status --json` keeps the schema of docs/status-schema.json: a change to its shape
    must update that file (and SCHEMA_VERSION when a field is removed or retyped)."""
    documented = json.loads(SCHEMA_FILE.read_text())
    assert schema() == documented, (
        "status --json changed shape; regenerate docs/status-schema.json with "
        "python -c 'import json; from soc_async.monitor.status import schema; "
        "print(json.dumps(schema(), indent=2))' if that is intended"
    )


def test_json_output_decodes_against_its_schema(run_dir: Path) -> None:
    """What `status --json` prints has the documented top-level keys and types."""
    data = json.loads(encode(collect(run_dir)))
    props = json.loads(SCHEMA_FILE.read_text())["$defs"]["RunStatus"]["properties"]
    assert set(data) == set(props)
    assert data["schema_version"] == 1 and data["state"] == "running"
    assert data["metrics"]["engines"][0]["faults"] == {"5xx": 2, "reset": 1}


def test_watch_follows_until_the_last_line(run_dir: Path, capsys) -> None:
    """--watch (JSON lines off a terminal) prints a line per change while a writer appends
    and returns once a line says the run finished."""
    run = RunDir.open(run_dir, repair=False)

    def writer() -> None:
        for i in range(3):
            time.sleep(0.1)
            snap = Snapshot(requests=i, stages={"chats": StageFigures(target=4, done=i)})
            run.append_metrics(msgspec.to_builtins(snap))
        run.append_metrics(msgspec.to_builtins(Snapshot(finished=True, outcome="done")))

    thread = threading.Thread(target=writer)
    thread.start()
    final = watch(run_dir, console=Console(force_terminal=False), interval_s=0.02)
    thread.join()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert final.state == "finished" and final.outcome == "done"
    assert lines[-1]["state"] == "finished" and len(lines) >= 3
    assert [x["metrics"]["requests"] for x in lines[:-1]] == sorted(
        x["metrics"]["requests"] for x in lines[:-1]
    )


def test_watch_on_a_terminal_draws_the_panel(run_dir: Path) -> None:
    """On a terminal --watch draws the live panel with its stage rows and the run's state."""
    run = RunDir.open(run_dir, repair=False)
    run.append_metrics(msgspec.to_builtins(Snapshot(finished=True, outcome="interrupted")))
    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    final = watch(run_dir, console=console, interval_s=0.01)
    text = console.export_text()
    assert final.outcome == "interrupted" and "finished: interrupted" in text
    assert "personas" in text and "3/10" in text
