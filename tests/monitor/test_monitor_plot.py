"""``status --plot``: the columns drawn from metrics.jsonl, and the PNG."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from soc_async.errors import InputError
from soc_async.monitor.plot import plot_run, series
from soc_async.monitor.snapshot import ControllerFigures, EngineFigures, Snapshot
from soc_async.store import METRICS, RunDir, RunIdentity


def snap(t: float, pid: int, elapsed: float, faults: int, running: float | None) -> Snapshot:
    engine = EngineFigures(url="http://e:1", running=running, waiting=1, kv_cache_usage=0.5,
                           tokens_per_s=100.0, faults={"429": faults})  # fmt: skip
    return Snapshot(
        time=t, elapsed_s=elapsed, pid=pid, host="h", tokens_per_s=90.0, in_flight=10,
        controller=ControllerFigures(adaptive=True, limit=32), engines=[engine],
        faults={"429": faults},
    )  # fmt: skip


def test_series_rates_per_minute_and_restarts() -> None:
    """Faults per minute between lines of one process; a new process marks a restart and
    does not count its reset counters as negative faults; a missing figure stays None."""
    snaps = [
        snap(0, 1, 0, 0, 4),
        snap(60, 1, 60, 6, 5),
        snap(120, 2, 0, 1, None),  # resumed: counters start again
        snap(150, 2, 30, 4, 6),
    ]
    s = series(snaps)
    assert s.minutes == [0, 1, 2, 2.5]
    assert s.faults_per_min["429"] == [0, 6, 0, 6]
    assert s.restarts == [2]
    assert s.running["http://e:1"] == [4, 5, None, 6]
    assert s.limit == [32] * 4 and s.engine_tokens_per_s == [100.0] * 4


def test_plot_writes_a_png_and_needs_lines(tmp_path: Path) -> None:
    """A PNG from a run's metrics.jsonl (old lines without engines included); a run with
    no lines yet is an input error."""
    run = RunDir.create(tmp_path / "run", "", RunIdentity.new(1))
    with pytest.raises(InputError, match="no metrics lines"):
        plot_run(run.path, tmp_path / "x.png")
    lines = [snap(i * 5.0, 1, i * 5.0, i, i) for i in range(10)]
    run.file(METRICS).write_bytes(
        b'{"time": 0, "tokens_per_s": 1.0, "capacity": 8}\n'
        + b"".join(msgspec.json.encode(s) + b"\n" for s in lines)
    )
    out = plot_run(run.path, tmp_path / "plots" / "run.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
