"""The scripts of benchmarks/ still run: the sweep's dry run and a tiny scale run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "benchmarks" / "sweep.sh"


def dry_run(**env: str) -> str:
    result = subprocess.run(
        ["bash", str(SWEEP), "--no-grammar"],
        env={**os.environ, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_sweep_dry_run_prints_the_bench_command() -> None:
    """Without ENDPOINT the command starts the embedded server (no --endpoint); with
    it, the endpoint, the sweep values and extra arguments are passed on."""
    local = dry_run(OUT="runs/x")
    assert local.startswith("soc-async bench ")
    assert "--endpoint" not in local and "--out runs/x" in local and "--no-grammar" in local
    remote = dry_run(ENDPOINT="http://gpu:8000", CONCURRENCY="16,64", CONVERSATIONS="64")
    assert "--endpoint http://gpu:8000" in remote
    assert "--concurrency 16\\,64" in remote and "--conversations 64" in remote


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_sweep_passes_shellcheck() -> None:
    """benchmarks/sweep.sh is as clean as the deploy scripts."""
    result = subprocess.run(["shellcheck", str(SWEEP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_scale_fake_runs_small(tmp_path: Path) -> None:
    """A tiny scale run finishes every conversation and reports the figures the docs
    quote: CPU per request, peak RSS, requests/s and live conversations."""
    out = tmp_path / "scale.json"
    subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "scale_fake.py"),
            "--conversations", "12", "--max-turns", "2", "--concurrency", "4",
            "--ttft-s", "0", "--tpot-s", "0", "--json", str(out),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )  # fmt: skip
    figures = json.loads(out.read_text())
    assert figures["finished"] == 12 and figures["failed"] == 0
    assert figures["requests"] == 24
    assert figures["client_cpu_ms_per_request"] > 0 and figures["requests_per_s"] > 0
    assert figures["peak_rss_mib"] >= figures["rss_before_mib"] > 0
    assert 1 <= figures["peak_live_conversations"] <= 12


def test_calibrate_abba_parses_its_arguments() -> None:
    """The ABBA calibration script imports and describes itself (running it needs vLLM)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "calibrate_abba.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert "--order" in result.stdout and "vLLM's own benchmark" in result.stdout


def _run_script(name: str, *args: str, timeout: float = 180) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return json.loads(result.stdout[result.stdout.index("{\n") :])


def test_scale_sim_runs_small(tmp_path: Path) -> None:
    """Live conversations against simulated engines: the steady window opens and gives
    the figures the docs quote, the engines' batches included."""
    out = tmp_path / "sim.json"
    _run_script(
        "scale_sim.py", "--conversations", "40", "--engines", "2", "--profile", "tiny",
        "--limit-per-engine", "8", "--max-turns", "6", "--time-scale", "1",
        "--duration-s", "0", "--json", str(out),
    )  # fmt: skip
    figures = json.loads(out.read_text())
    assert figures["finished"] + figures["failed"] == 40 and figures["failed"] == 0
    window = figures["window"]
    assert window is not None and window["requests"] > 0
    assert window["client_cpu_ms_per_request"] > 0
    # The machine-independent reading: the client's CPU against the simulator's.
    assert window["simulator_cpu_ms_per_request"] > 0
    ratio = window["client_cpu_ms_per_request"] / window["simulator_cpu_ms_per_request"]
    assert window["client_cpu_per_simulator_cpu"] == pytest.approx(ratio, rel=0.02, abs=0.002)
    assert 0 < window["mean_in_flight"] <= 16
    assert figures["peak_live_conversations"] == 40


@pytest.mark.parametrize("part", ["stage", "http"])
def test_client_parts_run_small(part: str) -> None:
    """Each half of the client measured alone reports its CPU per request."""
    figures = _run_script(
        "client_parts.py", "--part", part, "--conversations", "10", "--max-turns", "3",
        "--requests", "20", "--limit", "4", "--latency-s", "0",
    )  # fmt: skip
    assert figures["cpu_ms_per_request"] > 0
    if part == "stage":
        assert figures["finished"] == 10 and figures["failed"] == 0
        assert figures["requests"] == 30 and figures["mean_body_bytes"] > 1000
    else:
        assert figures["requests"] == 20 and figures["requests_per_s"] > 0


def test_client_parts_http_checks_run() -> None:
    """The two checks of the HTTP half (loop wakes in batches, pinned cores) still measure
    every request."""
    pin = ["--pin"] if {0, 1} <= os.sched_getaffinity(0) else []
    figures = _run_script(
        "client_parts.py", "--part", "http", "--requests", "20", "--limit", "4",
        "--latency-s", "0.01", "--wake-batch-ms", "1", *pin,
    )  # fmt: skip
    assert figures["requests"] == 20 and figures["cpu_ms_per_request"] > 0
    assert figures["settings"]["wake_batch_ms"] == 1 and figures["settings"]["pin"] == bool(pin)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_every_benchmark_imports_and_describes_itself(script: str) -> None:
    """Each script's imports still resolve against the package (a module renamed in src/
    breaks a benchmark nothing else runs) and its --help prints."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
