"""benchmarks/report_scale.py still runs: a small synthetic run measured end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report_scale.py"


@pytest.mark.slow
def test_report_scale_runs_small(tmp_path: Path) -> None:
    """300 synthetic conversations: the report completes, every synthetic conversation
    passes the rules (the generator and the checker agree), and the figures the docs
    quote (wall time, peak RSS) are reported."""
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--conversations", "300", "--dir", str(tmp_path / "run"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["wall_s"] > 0 and figures["peak_rss_mib"] > 0
    n = figures["records"]["conversations"]
    assert f"{n} of {n} pass every rule" in figures["summary"]
    report = json.loads((tmp_path / "run-report" / "report.json").read_text())
    assert report["counts"]["conversations"] == n and report["rules"]["conversations"]["value"] == 1
