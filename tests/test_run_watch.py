"""Watching whole runs against the fake server: faults counted as injected, the
Prometheus endpoint scraped mid-run, `status --watch` from another process, and the live
panel in a real terminal (tmux)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from dataset_check import check_run_dir
from fakeproc import FakeProcess, free_port, soc_async
from prometheus_client.parser import text_string_to_metric_families

import soc_async as soc_async_pkg
from soc_async.monitor.snapshot import Snapshot, decode_snapshot
from soc_async.monitor.status import collect
from soc_async.testing import scripted
from soc_async.testing.fake_model import even_faults

CONFIG = """
seed = 3
[client]
timeout_s = {timeout_s}
backoff_base_s = 0.02
backoff_max_s = 0.2
max_retries = 10
probe_interval_s = 0.1
[chat]
max_turns = 6
[concurrency]
interval_s = 0.5
[monitor]
interval_s = 0.5
"""

# What the client counts each fault the fake server injects as.
CAUSE = {"500": "5xx", "503": "5xx", "429": "429", "reset": "reset", "stall": "timeout",
         "bad_json": "bad_json"}  # fmt: skip


def write_config(tmp_path: Path, timeout_s: float = 30.0) -> Path:
    """The run's config; ``timeout_s`` short where stalls must turn into timeouts fast."""
    path = tmp_path / "run.toml"
    path.write_text(CONFIG.format(timeout_s=timeout_s))
    return path


def metrics_lines(run: Path) -> list[Snapshot]:
    return [decode_snapshot(x) for x in (run / "metrics.jsonl").read_bytes().splitlines()]


async def test_every_injected_fault_is_counted_with_its_cause_and_endpoint(
    tmp_path: Path, fake_server
) -> None:
    """Two servers injecting every fault kind: the run's last metrics line, `status` and
    the summary line count each failed attempt under its endpoint and cause, exactly as
    many as each server says it injected."""
    faults = {"retry_after_s": 0.05, "stall_s": 30, **even_faults(0.3)}
    servers = [await fake_server(reply=scripted.flaky, seed=seed, **faults) for seed in (1, 2)]
    out = tmp_path / "run"
    endpoints = [a for s in servers for a in ("--endpoint", s.url)]
    config = write_config(tmp_path, timeout_s=1.0)  # a stall becomes a timeout in 1 s
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "soc_async.cli", "run", "--config", str(config), *endpoints,
        "--out", str(out), "--personas", "8", "--experiences", "10", "--chats", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    injected: dict[str, Counter[str]] = {}
    for s in servers:
        injected[s.url] = Counter()
        for outcome, n in s.stats.outcomes.items():
            if outcome in CAUSE:
                injected[s.url][CAUSE[outcome]] += n
    total = sum(injected.values(), Counter())
    assert set(total) == {"5xx", "429", "reset", "timeout", "bad_json"}  # every kind ran

    last = metrics_lines(out)[-1]
    assert last.finished and last.outcome == "done"
    assert {e.url: Counter(e.faults) for e in last.engines} == injected
    assert Counter(last.faults) == total
    status = collect(out)
    assert {u: Counter(f) for u, f in status.faults_by_endpoint.items()} == injected
    summary = stdout.decode()
    for cause, n in total.items():
        assert f"{cause} {n}" in summary, summary


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
def test_prometheus_endpoint_scraped_during_a_run_matches_metrics_jsonl(tmp_path: Path) -> None:
    """Scraped while the run goes, the counters rise, and every scrape equals one line of
    metrics.jsonl figure for figure (requests, tokens, stage counts, faults).

    The fake's 0.1 s per request sets a floor on the run's length whatever the machine's
    speed (about 150 requests at 4 in flight: 3.75 s at least), so scraping every 0.2 s
    gets its five scrapes on a fast machine too."""
    out = tmp_path / "run"
    port = free_port()
    with FakeProcess("--reply", "soc_async.testing.scripted:reply", "--ttft-s", "0.1",
                     "--tpot-s", "0.0005", "--fault-503", "0.05", "--fault-429", "0.05",
                     "--retry-after-s", "0.1") as fake:  # fmt: skip
        proc = soc_async(
            "run", "--config", str(write_config(tmp_path)),
            "--endpoint", fake.url, "--out", str(out), "--personas", "6", "--experiences", "20",
            "--chats", "20", "--concurrency", "4", "--metrics-port", str(port),
        )  # fmt: skip
        scrapes = []
        while proc.poll() is None:
            got = scrape(f"http://127.0.0.1:{port}/metrics")
            if got:
                scrapes.append(got)
            time.sleep(0.2)
        _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert len(scrapes) >= 5
    requests = [s[("soc_async_requests_total", ())] for s in scrapes]
    assert requests == sorted(requests) and requests[-1] > requests[0]
    lines = {round(x.elapsed_s, 3): x for x in metrics_lines(out)}
    for s in scrapes:
        line = lines[round(s[("soc_async_elapsed_seconds", ())], 3)]
        assert s[("soc_async_requests_total", ())] == line.requests
        tokens = ("soc_async_tokens_total", (("kind", "completion"),))
        assert s[tokens] == line.completion_tokens
        for stage, fig in line.stages.items():
            assert s[("soc_async_stage_done_total", (("stage", stage),))] == fig.done
        for engine in line.engines:
            for cause, n in engine.faults.items():
                key = (("cause", cause), ("endpoint", engine.url))
                assert s[("soc_async_transport_faults_total", key)] == n
    assert any(k[0] == "soc_async_transport_faults_total" for k in scrapes[-1])


@pytest.mark.slow
def test_status_watch_follows_a_run_written_by_another_process(tmp_path: Path) -> None:
    """`status DIR --watch --json` in one process follows a run another process writes:
    a line per change, the last one finished, its counts those of the files; exit 0."""
    out = tmp_path / "run"
    with FakeProcess("--reply", "soc_async.testing.scripted:reply", "--ttft-s", "0.05",
                     "--tpot-s", "0.0005") as fake:  # fmt: skip
        run = soc_async(
            "run", "--config", str(write_config(tmp_path)), "--endpoint", fake.url,
            "--out", str(out), "--personas", "6", "--experiences", "12", "--chats", "12",
            "--concurrency", "4",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (out / "run.json").exists():
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        watcher = soc_async("status", str(out), "--watch", "--json", "--interval", "0.2")
        w_out, w_err = watcher.communicate(timeout=300)
        _, r_err = run.communicate(timeout=60)
    assert run.returncode == 0, r_err.decode()[-2000:]
    assert watcher.returncode == 0, w_err.decode()[-2000:]
    lines = [json.loads(x) for x in w_out.splitlines()]
    assert len(lines) >= 3
    assert lines[0]["state"] in ("waiting", "running") and lines[-1]["state"] == "finished"
    done = [sum(s["done"] for s in x["stages"]) for x in lines]
    assert done == sorted(done) and done[0] < done[-1]
    counts = check_run_dir(out, max_turns=6)
    final = {s["stage"]: s["done"] for s in lines[-1]["stages"]}
    assert final == {
        "personas": counts["personas"],
        "experiences": counts["experiences"],
        "chats": counts["conversations"],
    }


# Lines the panel draws start with one of these; a row the terminal wrapped would not.
PANEL_STARTS = ("soc-async", "tokens/s", "limit", "prefix-cached", "stage", "─", "personas",
                "experiences", "chats", "faults", "rejected", "engine", "127.0.0.1")  # fmt: skip


def panel_frames(screen: str) -> list[list[str]]:
    """Each drawing of the panel on a captured screen: the lines from its header on."""
    lines = screen.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("soc-async  elapsed")]
    frames = []
    for a, b in zip(starts, [*starts[1:], len(lines)][: len(starts)], strict=True):
        frame = []
        for ln in lines[a:b]:
            if not ln.strip() or ln.startswith(("/", "EXIT=")):  # the summary, the exit
                break
            frame.append(ln)
        frames.append(frame)
    return frames


class Tmux:
    """A private tmux server (its own socket) with one session running a command."""

    def __init__(self, name: str, width: int, height: int, command: str) -> None:
        self.base = ["tmux", "-L", f"soc-watch-{os.getpid()}-{name}"]
        subprocess.run(
            [*self.base, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width),
             "-y", str(height), command],
            check=True,
        )  # fmt: skip

    def capture(self) -> str:
        """The screen and its scrollback, a line the terminal wrapped joined back (-J)."""
        return subprocess.run(
            [*self.base, "capture-pane", "-p", "-J", "-t", "t", "-S", "-200"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def live_run_in_tmux(tmp_path: Path, width: int, fake_url: str) -> tuple[list[str], str]:
    """A run in a terminal ``width`` columns wide; (a frame drawn mid-run, the last screen)."""
    out = tmp_path / f"run{width}"
    src = Path(soc_async_pkg.__file__).resolve().parents[1]
    argv = [
        "env", f"PYTHONPATH={src}", "TERM=xterm-256color", sys.executable, "-m",
        "soc_async.cli", "run", "--config", str(write_config(tmp_path)), "--endpoint", fake_url,
        "--out", str(out), "--personas", "6", "--experiences", "12", "--chats", "12",
        "--concurrency", "4",
    ]  # fmt: skip
    cmd = f"{shlex.join(argv)}; echo EXIT=$?; sleep 120"
    tmux = Tmux(str(width), width, 60, cmd)
    try:
        mid: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            screen = tmux.capture()
            if "EXIT=" in screen:
                return mid, screen
            frames = panel_frames(screen)
            if frames and frames[-1][-1].startswith("127.0.0.1") and "requests 0 " not in screen:
                mid = frames[-1]  # a whole frame drawn while the run goes
            time.sleep(0.2)
        raise AssertionError("the run did not end in the terminal:\n" + tmux.capture())
    finally:
        tmux.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@pytest.mark.parametrize("width", [80, 160])
def test_live_panel_in_a_terminal_has_no_broken_lines(tmp_path: Path, width: int) -> None:
    """In a real terminal (tmux) 80 or 160 columns wide, the panel redraws in place: every
    line of a frame is a panel line that fits the width (the capture joins what the
    terminal wrapped, so a wrapped line would be longer), and the stage rows and the
    engine row carry their figures on one line; the run ends with its summary."""
    with FakeProcess("--reply", "soc_async.testing.scripted:reply", "--ttft-s", "0.05",
                     "--tpot-s", "0.0005", "--fault-503", "0.03") as fake:  # fmt: skip
        mid, screen = live_run_in_tmux(tmp_path, width, fake.url)
    print(screen)  # shown when the test fails
    assert "EXIT=0" in screen, screen
    frames = panel_frames(screen)
    assert mid and frames, screen
    for frame in (mid, frames[-1]):
        bad = [ln for ln in frame if not ln.startswith(PANEL_STARTS) or len(ln) > width]
        assert not bad, "\n".join(frame)
        rows = {ln.split()[0]: ln for ln in frame if ln.split()}
        for stage in ("personas", "experiences", "chats"):
            assert "/" in rows[stage] and rows[stage].rstrip().split()[-1] != stage
        assert rows["127.0.0.1:" + fake.url.rsplit(":", 1)[1]].split()[1] in ("up", "up?")
    last = frames[-1]
    assert "12/12" in next(ln for ln in last if ln.startswith("chats"))  # the final counts
    summary = screen[screen.index(last[-1]) :]
    assert "12 conversations" in summary and "transport faults:" in summary, screen


def test_a_busy_metrics_port_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """--metrics-port on a port another program holds: exit 2, one line naming the port,
    no run directory (the endpoint opens before anything is written)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = tmp_path / "run"
        result = subprocess.run(
            [sys.executable, "-m", "soc_async.cli", "run", "--endpoint", "http://127.0.0.1:9",
             "--out", str(out), "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--metrics-port {port}" in lines[0]
    assert not out.exists()
