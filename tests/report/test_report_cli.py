"""``soc-async report`` as a command: files, the summary line, --compare, --judge over
HTTP against the fake server process, and errors as one line with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import msgspec
import pytest
from fakeproc import FakeProcess, run_soc_async
from handmade_run import write_run

from soc_async.llm.readiness import EndpointsFile, ServedEngine


@pytest.mark.slow
def test_report_writes_html_and_json_beside_the_run_and_compares(tmp_path: Path) -> None:
    """Default outputs are DIR/report.html and DIR/report.json; --compare against a run
    with one conversation fewer prints that difference, and the same settings."""
    a = write_run(tmp_path / "a")
    done = run_soc_async("report", str(a))
    assert done.returncode == 0, done.stderr
    assert "3 conversations, 3 of 3 pass every rule" in done.stdout
    data = json.loads((a / "report.json").read_text())
    assert len(data["meta"]["config_hash"]) == 64 and data["counts"]["conversations"] == 3
    assert (a / "report.html").read_text().startswith("<!DOCTYPE html>")

    b = tmp_path / "b"
    shutil.copytree(a, b)
    lines = (b / "conversations.jsonl").read_text().splitlines(keepends=True)
    (b / "conversations.jsonl").write_text("".join(lines[:2]))
    out = tmp_path / "elsewhere"
    done = run_soc_async(
        "report", str(b), "--out", str(out / "b.html"), "--json", str(out / "b.json"),
        "--compare", str(a / "report.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "b.html").exists() and (out / "b.json").exists()
    assert "config: the same settings" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "conversations written" in line)
    assert row.split()[-3:] == ["2", "3", "+1"]


def test_a_directory_that_is_not_a_run_is_exit_code_2(tmp_path: Path) -> None:
    """No run.json: one line naming the directory, exit code 2, nothing written."""
    done = run_soc_async("report", str(tmp_path))
    assert done.returncode == 2
    assert "not a soc-async run directory" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_the_judge_waits_for_an_endpoints_file_only_as_long_as_ready_timeout(
    tmp_path: Path,
) -> None:
    """--endpoints-file and --ready-timeout reach the judge: a file that never appears is
    given up on after --ready-timeout 0 (not the default 900 s), naming the file."""
    run = write_run(tmp_path / "run")
    missing = tmp_path / "never.json"
    done = run_soc_async(
        "report", str(run), "--judge", "1", "--endpoints-file", str(missing), "--ready-timeout", "0"
    )
    assert done.returncode != 0
    assert f"{missing}: no endpoints file" in done.stderr and "after 0 s" in done.stderr


@pytest.mark.slow
def test_judge_over_http_and_resume(tmp_path: Path) -> None:
    """--judge 2 against the fake server (scripted model answering the schema) stores two
    verdicts beside the report; --judge 3, finding the server through an endpoints file
    (--endpoints-file, --ready-timeout), adds one; the HTML shows the judge section."""
    run = write_run(tmp_path / "run")
    out = tmp_path / "out"
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        args = ["report", str(run), "--out", str(out / "report.html")]
        done = run_soc_async(*args, "--endpoint", fake.url, "--judge", "2")
        assert done.returncode == 0, done.stderr
        assert "2 judged" in done.stdout
        first = (out / "judge.jsonl").read_text().splitlines()
        assert len(first) == 2
        served = EndpointsFile(model="fake-model", engines=[ServedEngine(url=fake.url)])
        served.pid = os.getpid()  # a live writer: the file is not stale
        listed = tmp_path / "endpoints.json"
        listed.write_bytes(msgspec.json.encode(served))
        by_file = ["--endpoints-file", str(listed), "--ready-timeout", "30"]
        done = run_soc_async(*args, *by_file, "--judge", "3")
        assert done.returncode == 0, done.stderr
    lines = (out / "judge.jsonl").read_text().splitlines()
    assert lines[:2] == first and len(lines) == 3
    report = json.loads((run / "report.json").read_text())
    assert report["judge"]["judged"] == 3 and report["judge"]["sample"] == 3
    assert "The five lowest" in (out / "report.html").read_text()
