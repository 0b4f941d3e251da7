"""The live panel drawn into a recording console from scripted counters."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from soc_async.monitor.panel import RunPanel, duration
from soc_async.monitor.snapshot import ControllerFigures, EngineFigures, Snapshot
from soc_async.run.progress import RunCounters


class Clock:
    """A scripted clock: ``advance`` moves it, nothing else does."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def engines() -> list[EngineFigures]:
    return [
        EngineFigures(
            url="http://127.0.0.1:8000",
            in_flight=44,
            requests=6000,
            running=40,
            waiting=4,
            kv_cache_usage=0.62,
            preemptions=3,
            prefix_hit_rate=0.81,
            tokens_per_s=640,
            faults={"5xx": 6, "reset": 1},
        ),
        EngineFigures(url="http://gpu-node-017:8001", up=False, faults={"connect": 3}),
    ]


def scripted() -> tuple[RunCounters, Clock]:
    """Two minutes of a run: personas done, experiences at 1 a second, chats at 0.5."""
    clock = Clock()
    counters = RunCounters(clock=clock, wall=lambda: 1.7e9 + clock.t)
    counters.engines = engines
    counters.controller = lambda: ControllerFigures(
        adaptive=True, limit=96, moved_reason="queue empty, KV 45%: up 77->96", moved_ago_s=12
    )
    counters.capacity, counters.in_flight = 96, 87
    st = counters.stages
    st["personas"].target = st["personas"].done = 200
    st["experiences"].target = st["chats"].target = 1000
    st["chats"].failed = 3
    counters.snapshot()
    for _ in range(12):  # two minutes in 10-s steps, a snapshot each (as the panel takes)
        clock.advance(10)
        st["experiences"].done += 10
        st["chats"].done += 5
        st["experiences"].active = 64
        counters.on_reply(prompt=1000, completion=500, cached=800, latency=1.2, queued=0.1)
        counters.snapshot()
    counters.rejections.update({"bad_state": 14, "clock_backwards": 3})
    return counters, clock


def draw(snapshot: Snapshot, width: int) -> list[str]:
    console = Console(record=True, width=width, color_system=None)
    console.print(RunPanel(snapshot, title="runs/big"))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 160])
def test_panel_shows_bars_eta_engines_and_faults_within_the_width(width: int) -> None:
    """Each stage is one line with its bar, done/target and ETA (from its recent rate);
    each engine one row with its state, load and faults; the fault and rejection counts
    by cause; no line is longer than the console."""
    counters, clock = scripted()
    clock.advance(0.001)
    snap = counters.snapshot()
    lines = draw(snap, width)
    assert all(len(line) <= width for line in lines), [ln for ln in lines if len(ln) > width]
    text = "\n".join(lines)
    # Experiences: 120 done of 1000 at 1/s over the last minute: 880 s left.
    assert snap.stages["experiences"].eta_s == pytest.approx(880, rel=0.01)
    assert snap.stages["chats"].eta_s == pytest.approx((1000 - 60 - 3) / 0.5, rel=0.01)
    row = {name: next(ln for ln in lines if ln.startswith(name)) for name in snap.stages}
    assert "━" in row["personas"] and "200/200" in row["personas"] and "done" in row["personas"]
    assert "120/1,000" in row["experiences"] and duration(880) in row["experiences"]
    assert "60/1,000" in row["chats"] and duration(1874) in row["chats"]
    assert re.search(r"\b3\b", row["chats"].split("60/1,000")[1])  # failed
    up = next(ln for ln in lines if ln.startswith("127.0.0.1:8000"))
    assert re.search(r"up\s+44\b", up) and "40/4" in up and "62%" in up and "81%" in up
    down = next(ln for ln in lines if "gpu-node-017" in ln)
    assert "down" in down
    faults = next(ln for ln in lines if ln.startswith("faults"))
    assert "5xx 6" in faults and "reset 1" in faults and "connect 3" in faults
    assert "bad_state 14" in text and "clock_backwards 3" in text
    assert "limit 96 adaptive" in text and "up 77->96" in text
    assert "elapsed 2:00" in text
    if width >= 120:  # the wide layout breaks the faults down per engine
        assert "5xx 6 reset 1" in up


def test_tokens_and_requests_rates_come_from_the_recent_window() -> None:
    """tokens/s and requests/s are measured over the recent window, overall over all."""
    counters, clock = scripted()
    clock.advance(0.001)
    snap = counters.snapshot()
    assert snap.tokens_per_s == pytest.approx(500 / 10, rel=0.01)  # 500 every 10 s
    assert snap.requests_per_s == pytest.approx(0.1, rel=0.01)
    assert snap.tokens_per_s_overall == pytest.approx(12 * 500 / 120, rel=0.01)
    clock.advance(120)  # two idle minutes: the window rate falls to zero
    idle = counters.snapshot()
    assert idle.tokens_per_s == 0 and idle.tokens_per_s_overall > 0


def test_finished_run_and_fixed_limit() -> None:
    """A finished snapshot says so; a fixed limit is shown as fixed; no engines, no table."""
    snap = Snapshot(
        elapsed_s=3725,
        finished=True,
        outcome="interrupted",
        controller=ControllerFigures(adaptive=False, limit=64),
    )
    text = "\n".join(draw(snap, 80))
    assert "finished: interrupted" in text and "limit 64 fixed" in text
    assert "elapsed 1:02:05" in text and "engine" not in text
    assert "faults none" in text and "rejected none" in text


@pytest.mark.parametrize("width", [60, 80, 100, 120, 139, 140, 160, 200])
def test_no_line_outgrows_the_console_at_any_width(width: int) -> None:
    """Long URLs, every fault cause and big numbers: lines are cut, never wrapped, and
    the figures' columns keep their headers whole."""
    counters, _ = scripted()
    every = {c: 12_345 for c in ("5xx", "429", "reset", "connect", "timeout", "bad_json")}
    counters.engines = lambda: [
        EngineFigures(url=f"http://gpu-node-{i:03d}.a-long-cluster-domain.example.org:8000",
                      requests=1_234_567, faults=every, running=512, waiting=1024,
                      kv_cache_usage=1.0, preemptions=99_999, tokens_per_s=12_345.6)
        for i in range(4)
    ]  # fmt: skip
    lines = draw(counters.snapshot(), width)
    assert all(len(line) <= width for line in lines)
    header = next(ln for ln in lines if ln.startswith("engine"))
    if width >= 80:
        for col in ("state", "in fl", "run/wait", "KV", "preempt", "prefix", "tok/s"):
            assert col in header, header
