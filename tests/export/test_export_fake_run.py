"""A real run against the fake server (scripted model, real stages), viewed and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakeproc import FakeProcess, run_soc_async

from soc_async.export import ROW_TYPES, export_run
from soc_async.view import build_site


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fake")
    config = tmp / "run.toml"
    config.write_text("seed = 4\n[chat]\nmax_turns = 6\n")
    out = tmp / "run"
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        done = run_soc_async(
            "run", "--config", str(config), "--endpoint", fake.url, "--out", str(out),
            "--personas", "6", "--experiences", "8", "--chats", "8",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", sorted(ROW_TYPES))
def test_every_format_from_a_real_run(run_dir, tmp_path, fmt):
    """Records the pipeline wrote export in every format: one row per conversation (two
    for messages, one per persona for spb), the SOC-2508 free-text fields found."""
    conversations = _rows(run_dir / "conversations.jsonl")
    personas = _rows(run_dir / "personas.jsonl")
    summary = export_run(run_dir, tmp_path / "out", fmt=fmt)
    expected = {
        "soc-2602": len(conversations),
        "soc-2508": len(conversations),
        "messages": 2 * len(conversations),
        "spb": len(personas),
    }[fmt]
    assert summary.rows == {"train": expected} and expected > 0
    rows = _rows(tmp_path / "out/data/train.jsonl")
    if fmt == "soc-2508":
        for row in rows:
            assert row["experience"]["relationship"] and row["experience"]["topic"]
            assert row["experience"]["persona1"]["chatting_style"]


def test_view_of_a_real_run(run_dir, tmp_path):
    """The viewer lists every conversation and failure of a pipeline-written run."""
    summary = build_site(run_dir, tmp_path / "site")
    assert summary.conversations == len(_rows(run_dir / "conversations.jsonl"))
    assert (tmp_path / "site/data/meta.js").exists()
