"""`soc-async serve --device cpu` with a real vLLM engine (the CPU build, the embedded
model's directory): the planner, the endpoints file, readiness and restarts of a GPU node,
on this machine. The engine is killed with SIGKILL while a run uses it; serve restarts it
and the run finishes against the new engine."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soc_async.llm import embedded

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(autouse=True)
def _need_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run against real vLLM: run scripts/setup.sh (the cpu extra)")
        pytest.skip("vLLM is not installed (bash scripts/setup.sh installs the cpu extra)")


def _soc(*args: str) -> list[str]:
    return [sys.executable, "-m", "soc_async.cli", *args]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _wait(what: str, check, limit: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert proc.poll() is None, (
            f"serve exited while waiting for {what}: {log.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, (
            f"no {what} after {limit:g} s: {log.read_text()[-3000:]}"
        )
        time.sleep(0.5)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def _ended(out: Path) -> dict[str, int]:
    """Items written or failed, per stage."""
    ended = {
        "personas": len(_lines(out / "personas.jsonl")),
        "experiences": len(_lines(out / "experiences.jsonl")),
        "chats": len(_lines(out / "conversations.jsonl")),
    }
    for row in _lines(out / "failures.jsonl"):
        ended[json.loads(row)["stage"]] += 1
    return ended


def test_serve_on_the_cpu_restarts_a_killed_engine_and_the_run_finishes(tmp_path: Path) -> None:
    model = embedded.prepare_model()
    engines = tmp_path / "engines.json"
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        serve = subprocess.Popen(
            _soc("serve", "--model", str(model), "--device", "cpu", "--port", "0",
                 "--endpoints-file", str(engines), "--log-dir", str(tmp_path / "logs"),
                 "--restart-delay", "1", "--max-restarts", "2",
                 "--", "--enforce-eager", "--max-model-len", "4096",
                 "--served-model-name", embedded.SERVED_NAME),
            stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
    run = None
    try:
        _wait("engine", lambda: b"engine ready: http" in log.read_bytes(), 600, serve, log)
        served = json.loads(engines.read_text())
        (engine,) = served["engines"]
        port = int(engine["url"].rsplit(":", 1)[1])
        assert engine["gpus"] == "" and port < 32768  # below the ephemeral range
        out = tmp_path / "run"
        config = tmp_path / "run.toml"
        # The embedded model's own profile (as `soc-async run` picks for its embedded
        # server): bounded grammars and short chats a 135M model can finish.
        config.write_text(
            'profile = "embedded-cpu"\n[client]\ntimeout_s = 1800.0\nready_timeout_s = 1200.0\n'
        )
        run = subprocess.Popen(
            _soc("run", "--config", str(config), "--endpoints-file", str(engines),
                 "--out", str(out), "--personas", "3", "--experiences", "0", "--chats", "0",
                 "--concurrency", "4"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        metrics = out / "metrics.jsonl"

        def in_flight() -> bool:
            rows = metrics.read_bytes().splitlines() if metrics.exists() else []
            return bool(rows) and json.loads(rows[-1]).get("in_flight", 0) > 0

        _wait("requests in flight", in_flight, 600, serve, log)
        (vllm_pid,) = _children(serve.pid)
        os.kill(vllm_pid, signal.SIGKILL)
        _wait(
            "the restart",
            lambda: (
                b"restart 1 of 2" in log.read_bytes()
                and log.read_bytes().count(b'"engine ready"') >= 2
            ),
            600,
            serve,
            log,
        )
        stdout, stderr = run.communicate(timeout=1200)
        assert run.returncode == 0, stderr.decode()[-4000:]
        # The kill cut requests in flight; they were retried on the restarted engine and
        # the run finished. Every item ended, written or failed with a reason (what the
        # 135M model writes decides which: it may cut 2 of 3 cards at max_tokens, and
        # experiences need 2 personas, so this run is personas only; test_e2e_vllm.py
        # runs every stage against the embedded server).
        last = json.loads(metrics.read_bytes().splitlines()[-1])
        assert last["finished"] and set(last["faults"]) & {"reset", "connect"}, last["faults"]
        assert _ended(out) == {"personas": 3, "experiences": 0, "chats": 0}, stdout
        starts = (tmp_path / "logs" / "vllm-0.log").read_text().count("# soc-async starts:")
        assert starts == 2
        assert _children(serve.pid) and _children(serve.pid) != [vllm_pid]
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.communicate()
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(120)
    assert code == 0, log.read_text()[-3000:]
    assert not engines.exists()
