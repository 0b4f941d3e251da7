"""Whole runs of ``soc-async`` against the fake server over real HTTP, in child processes.

Every saved record is checked by tests/dataset_check.py, which shares no code with the
state machine or the parsers.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from dataset_check import check_run_dir, read_jsonl
from fakeproc import FakeProcess, run_soc_async, soc_async

CONFIG = """
seed = 3
[client]
timeout_s = 3.0
backoff_base_s = 0.05
backoff_max_s = 0.5
max_retries = 8
probe_interval_s = 0.2
[chat]
max_turns = 6
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(CONFIG + extra)
    return path


def test_run_with_faults_and_invalid_replies(tmp_path):
    """Under HTTP faults and invalid model replies every item ends finished or failed with
    a reason, nothing twice, and every saved record passes the independent check."""
    out = tmp_path / "run"
    with FakeProcess("--reply", "soc_async.testing.scripted:flaky", "--faults", "0.1",
                     "--stall-s", "5") as fake:  # fmt: skip
        result = run_soc_async(
            "run", "--config", str(write_config(tmp_path)), "--endpoint", fake.url,
            "--out", str(out), "--personas", "10", "--experiences", "12", "--chats", "12",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    counts = check_run_dir(out, max_turns=6)
    failures = read_jsonl(out / "failures.jsonl")
    by_stage = {s: 0 for s in ("personas", "experiences", "chats")}
    for f in failures:
        by_stage[f["stage"]] += 1
    assert counts["personas"] + by_stage["personas"] == 10
    assert counts["experiences"] + by_stage["experiences"] == 12
    # chat j needs experience j: chats of failed experiences are not attempted.
    assert counts["conversations"] + by_stage["chats"] == counts["experiences"]
    retried = sum(sum(c["retries"].values()) for c in read_jsonl(out / "conversations.jsonl"))
    assert retried > 0, "the flaky model should have forced some corrections"


@pytest.mark.slow
def test_two_thousand_conversations_interleaved(tmp_path):
    """2,000 conversations against a server with latency: all end complete or failed with a
    reason, instant events land on 5% +- 1 of all turns, every conversation passes; no
    event ever reaches the persona it does not name; first days spread over the start
    window and each narrative's weekday is the weekday its chat opens on."""
    out = tmp_path / "run"
    cfg = write_config(tmp_path, "[concurrency]\nfixed = 512\n")
    with FakeProcess("--reply", "soc_async.testing.scripted:flaky", "--ttft-s", "0.002",
                     "--tpot-s", "0.0002", "--no-record") as fake:  # fmt: skip
        result = run_soc_async(
            "run", "--config", str(cfg), "--endpoint", fake.url, "--out", str(out),
            "--personas", "40", "--experiences", "2000", "--chats", "2000",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    counts = check_run_dir(out, max_turns=6)
    failures = read_jsonl(out / "failures.jsonl")
    chat_failures = [f for f in failures if f["stage"] == "chats"]
    assert counts["conversations"] + len(chat_failures) == counts["experiences"]
    assert counts["conversations"] > 1500
    assert all(f["reason"] for f in failures)
    conversations = read_jsonl(out / "conversations.jsonl")
    turns = [t for c in conversations for t in c["turns"]]
    rate = sum(t["instant_event"] is not None for t in turns) / len(turns)
    assert 0.04 <= rate <= 0.06, rate
    _check_events_and_dates(out, conversations)


def _check_events_and_dates(out: Path, conversations: list[dict]) -> None:
    from datetime import date, timedelta

    experiences = {e["id"]: e for e in read_jsonl(out / "experiences.jsonl")}
    attributed = given = 0
    for c in conversations:
        e = experiences[c["experience_id"]]
        owners = dict(zip(e["instant_events"], e["event_personas"], strict=True))
        for t in c["turns"]:
            if t["instant_event"] is not None:
                owner = owners[t["instant_event"]]
                assert owner in (None, t["sender"]), (c["chat_id"], t["instant_event"])
                given += 1
                attributed += owner is not None
    assert given > 100 and attributed > given / 2, (given, attributed)
    first_days = set()
    window = (date(2026, 3, 15), date(2026, 3, 15) + timedelta(days=364))
    for c in conversations:
        e = experiences[c["experience_id"]]
        start = date.fromisoformat(e["start_date"])
        assert window[0] <= start <= window[1], e["start_date"]
        first = c["turns"][0]["messages"][0]
        assert first["d"] in (f"{start:%d.%m}", f"{start + timedelta(days=1):%d.%m}"), first
        assert f"It is {start:%A}," in e["experience_text"], e["id"]
        first_days.add(first["d"])
    assert len(first_days) > 250, len(first_days)


def _wait_for_lines(path: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, sig):
    """A run killed mid-write (SIGKILL) or interrupted (SIGINT: exit 130 after a flush)
    resumes to a complete directory: no torn line, no id twice, nothing finished lost."""
    out = tmp_path / "run"
    cfg = write_config(tmp_path, "[concurrency]\nfixed = 8\n" + MODELS)
    with FakeProcess("--reply", "soc_async.testing.scripted:reply", "--ttft-s", "0.01",
                     "--tpot-s", "0.001") as fake:  # fmt: skip
        args = ("run", "--config", str(cfg), "--endpoint", fake.url, "--out", str(out),
                "--personas", "6", "--experiences", "30", "--chats", "30")  # fmt: skip
        proc = soc_async(*args)
        _wait_for_lines(out / "conversations.jsonl", 3)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        if sig == signal.SIGINT:
            assert proc.returncode == 130, stderr.decode()[-2000:]
            assert b"--resume" in stderr
        else:
            assert proc.returncode == -signal.SIGKILL
        before = {c["chat_id"] for c in _readable(out / "conversations.jsonl")}
        result = run_soc_async("run", "--resume", str(out), "--endpoint", fake.url)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = check_run_dir(out, max_turns=6)
    after = {c["chat_id"] for c in read_jsonl(out / "conversations.jsonl")}
    assert before <= after
    failures = read_jsonl(out / "failures.jsonl")
    assert counts["conversations"] + sum(f["stage"] == "chats" for f in failures) == 30
    _check_models(out)


MODELS = """
[[calls.persona.models]]
name = "model-a"
weight = 2
[[calls.persona.models]]
name = "model-b"
[[calls.experience.models]]
name = "model-a"
[[calls.experience.models]]
name = "model-b"
[[calls.turn.models]]
name = "model-b"
weight = 3
[[calls.turn.models]]
name = "model-c"
"""


def _check_models(out: Path) -> None:
    """Each record names the model drawn for its id: the first run's and the resumed
    run's records alike."""
    from soc_async import config as config_mod
    from soc_async.calls import model_for_item

    run = config_mod.load(out / "config.toml")
    seen = set()
    for name, kind, key in (
        ("personas", "persona", "id"),
        ("experiences", "experience", "id"),
        ("conversations", "turn", "chat_id"),
    ):
        for record in read_jsonl(out / f"{name}.jsonl"):
            model = record["model"] if kind == "turn" else record["meta"]["model"]
            assert model == model_for_item(run, kind, record[key], "fake-model"), record[key]
            seen.add((kind, model))
    assert {("turn", "model-b"), ("turn", "model-c")} <= seen


def _readable(path: Path) -> list[dict]:
    """The whole lines of a file another process may have cut mid-line."""
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


@pytest.mark.slow
def test_server_down_for_ten_seconds_mid_run(tmp_path):
    """The only server stops for 10 s and comes back on the same port: the run completes."""
    out = tmp_path / "run"
    cfg = write_config(tmp_path, "[concurrency]\nfixed = 8\n")
    fake = FakeProcess("--reply", "soc_async.testing.scripted:reply", "--ttft-s", "0.01",
                       "--tpot-s", "0.001").start()  # fmt: skip
    try:
        proc = soc_async("run", "--config", str(cfg), "--endpoint", fake.url, "--out", str(out),
                         "--personas", "6", "--experiences", "20", "--chats", "20")  # fmt: skip
        _wait_for_lines(out / "conversations.jsonl", 2)
        fake.stop()
        time.sleep(10)
        fake.start()
        _, stderr = proc.communicate(timeout=300)
    finally:
        fake.stop()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    counts = check_run_dir(out, max_turns=6)
    failures = read_jsonl(out / "failures.jsonl")
    assert counts["conversations"] + sum(f["stage"] == "chats" for f in failures) == 20
    assert not [f for f in failures if f["reason"].startswith("request:")], failures


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "--concurrency", "0"), "concurrency.fixed"),
        (("run", "--chats", "-1"), "targets.chats"),
        (("run", "--shard", "2/2"), "shard"),
        (("run", "--personas", "1", "--experiences", "1", "--chats", "3"), "targets.chats"),
        (("run", "--bogus"), "unrecognized arguments"),
        (("run", "--resume", "/nonexistent/run"), "not a run directory"),
        (("chats", "--experiences-file", "/nonexistent.jsonl", "--out", "x"), "--experiences-file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    """Bad usage or input: exit code 2, one line naming what is wrong, nothing written."""
    result = run_soc_async(*args, "--endpoint", "http://127.0.0.1:9", timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not list(tmp_path.iterdir())


def test_bad_config_file_exits_2_and_writes_nothing(tmp_path):
    """A config with an unknown key: exit 2, the file and key named, no run directory."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[chat]\nmax_turnz = 4\n")
    out = tmp_path / "out"
    result = run_soc_async("run", "--config", str(cfg), "--out", str(out), timeout=60)
    assert result.returncode == 2
    assert str(cfg) in result.stderr and "chat.max_turnz" in result.stderr
    assert not out.exists()


def test_single_stage_commands_chain_through_files(tmp_path):
    """`personas`, then `experiences --personas-file FILE`, then `chats --experiences-file
    FILE`, each into its own run directory of the same layout, make a valid dataset; a
    rerun resumes."""
    cfg = write_config(tmp_path)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        common = ("--config", str(cfg), "--endpoint", fake.url)
        r1 = run_soc_async("personas", "-n", "5", "--out", str(a), *common)
        assert r1.returncode == 0, r1.stderr[-2000:]
        r2 = run_soc_async(
            "experiences", "-n", "4", "--personas-file", str(a / "personas.jsonl"),
            "--out", str(b), *common,
        )  # fmt: skip
        assert r2.returncode == 0, r2.stderr[-2000:]
        r3 = run_soc_async(
            "chats", "--experiences-file", str(b / "experiences.jsonl"), "--out", str(c), *common
        )
        assert r3.returncode == 0, r3.stderr[-2000:]
        again = run_soc_async(
            "chats", "--experiences-file", str(b / "experiences.jsonl"), "--out", str(c), *common
        )
        assert again.returncode == 0, again.stderr[-2000:]
    assert check_run_dir(a, max_turns=6)["personas"] == 5
    assert check_run_dir(b, max_turns=6)["experiences"] == 4
    counts = check_run_dir(c, max_turns=6)
    assert counts["conversations"] == 4 and counts["personas"] == 5


def test_serve_with_a_missing_model_path_exits_2(tmp_path):
    """`soc-async serve --model PATH` with no such path: exit 2, one line naming it."""
    missing = tmp_path / "no-such-model"
    result = run_soc_async("serve", "--model", str(missing), "--port", "0", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], result.stderr
