"""`soc-async serve`, the README's GPU block, deploy/local/serve-gpu.sh and the GPU smoke
test, end to end on a fake GPU node (tests/deploy/bin: the fake `nvidia-smi`, `vllm` and
`hf` of soc_async/testing/fake_node.py, which enforce vLLM's rules)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeNode

ROOT = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen2.5-7B-Instruct"  # 28 attention heads


def _config(path: Path, chats: int = 3) -> Path:
    path.write_text(
        "seed = 5\n"
        f"[targets]\npersonas = 4\nexperiences = {chats}\nchats = {chats}\n"
        "[chat]\nmax_turns = 4\n"
        "[client]\nmax_retries = 4\nprobe_interval_s = 0.5\n"
    )
    return path


def _soc(*args: str) -> list[str]:
    return [sys.executable, "-m", "soc_async.cli", *args]


def _closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _pids(record: Path) -> list[int]:
    if not record.exists():
        return []
    return [int(line.split()[1].removeprefix("pid=")) for line in record.read_text().splitlines()]


@pytest.fixture
def node(fake_node: FakeNode) -> Iterator[FakeNode]:
    """The fake node, its engines' starts recorded; any engine a failed test leaves is
    killed afterwards."""
    fake_node.env["FAKE_VLLM_RECORD"] = str(fake_node.tmp / "starts.log")
    yield fake_node
    for pid in _pids(fake_node.tmp / "starts.log"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _wait_file(path: Path, proc: subprocess.Popen[str], limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, _stop(proc)
        assert time.monotonic() < deadline, "no endpoints file"
        time.sleep(0.1)


@pytest.mark.slow
def test_serve_starts_the_default_layout_on_8_gpus_and_run_uses_it(node: FakeNode) -> None:
    """`soc-async serve` with the 28-head model and no --tp: 8 engines of TP 1, one per
    device, ports 10 apart; `soc-async run --endpoints-file` started at the same moment
    waits for them, completes, and spreads its conversations; SIGTERM stops every engine
    and removes the endpoints file."""
    node.model(MODEL)
    engines = node.tmp / "engines.json"
    serve = subprocess.Popen(
        _soc("serve", "--model", MODEL, "--port", "0", "--stagger-s", "0.2",
             "--endpoints-file", str(engines), "--log-dir", str(node.tmp / "logs")),
        env=node.env, cwd=node.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        run = subprocess.run(
            _soc("run", "--config", str(_config(node.tmp / "run.toml")),
                 "--endpoints-file", str(engines), "--out", str(node.tmp / "run"),
                 "--ready-timeout", "600"),
            env=node.env, cwd=node.tmp, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-5000:]
        assert "3 conversations" in run.stdout
        served = json.loads(engines.read_text())
        ports = [int(e["url"].rsplit(":", 1)[1]) for e in served["engines"]]
        assert [e["gpus"] for e in served["engines"]] == [str(k) for k in range(8)]
        assert ports == [ports[0] + 10 * k for k in range(8)]
        assert {e["max_num_seqs"] for e in served["engines"]} == {1024}
    finally:
        out = _stop(serve)
    assert serve.returncode == 0, out[-3000:]
    assert "8 engine(s) of tensor-parallel size 1" in out
    assert not engines.exists()
    assert all(_closed(p) for p in ports)
    starts = (node.tmp / "starts.log").read_text().splitlines()
    assert sorted(s.split()[0] for s in starts) == [f"CUDA_VISIBLE_DEVICES={k}" for k in range(8)]
    assert all("--tensor-parallel-size 1" in s for s in starts)


def test_serve_refuses_an_impossible_tp_before_starting_anything(node: FakeNode) -> None:
    """--tp 8 for 28 heads: exit 2, one line with the reason; no engine was started."""
    node.model(MODEL)
    result = subprocess.run(
        _soc("serve", "--model", MODEL, "--tp", "8", "--port", "0"),
        env=node.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "does not divide the 28 attention heads" in errors[0]
    assert not (node.tmp / "starts.log").exists()


def _readme_gpu_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## On a GPU node", 1)[1].split("\n\n", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readmes_gpu_block_works_as_written_in_order(node: FakeNode) -> None:
    """The README's commands, run one after the other in one shell on a 2-GPU fake node
    (only `pip install` is skipped: the test's environment has soc-async): the model is
    downloaded, the engines start in the background, `run` waits for them instead of
    failing, `status` and `bench` work, and `kill %1` stops every engine."""
    lines = _readme_gpu_block()
    assert lines[0].startswith("pip install") and lines[-1].startswith("kill %1")
    assert any(line.startswith("soc-async run ") for line in lines)
    _config(node.tmp / "my-run.toml")
    script = (
        "set -e\n"
        + "\n".join((": " + line) if line.startswith("pip install") else line for line in lines)
        + "\nwait\n"
    )
    soc = node.tmp / "bin" / "soc-async"  # the command as `pip install` would put it
    soc.parent.mkdir()
    soc.write_text(f'#!/bin/sh\nexec {sys.executable} -m soc_async.cli "$@"\n')
    soc.chmod(0o755)
    env = {**node.env, "FAKE_GPUS": "2", "PATH": f"{soc.parent}{os.pathsep}{node.env['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script], env=env, cwd=node.tmp, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "3 conversations" in result.stdout
    assert "recommended concurrency" in result.stdout
    assert (node.tmp / "runs" / "bench" / "bench.json").exists()
    starts = (node.tmp / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and all(" serve Qwen/Qwen3-8B " in s for s in starts)
    assert not (node.tmp / "engines.json").exists()
    for pid in _pids(node.tmp / "starts.log"):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


@pytest.mark.slow
def test_serve_gpu_script_end_to_end(node: FakeNode) -> None:
    """deploy/local/serve-gpu.sh on 2 fake GPUs: engines up, a run against its endpoints
    file completes, Ctrl-C (SIGINT) stops them all."""
    node.model(MODEL)
    env = {
        **node.env,
        "FAKE_GPUS": "2",
        "MODEL": MODEL,
        "PORT": "0",
        "SOC_ASYNC": f"{sys.executable} -m soc_async.cli",
    }
    script = subprocess.Popen(
        ["bash", str(ROOT / "deploy/local/serve-gpu.sh"), "--max-model-len", "4096"],
        env=env, cwd=node.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_file(node.tmp / "engines.json", script)
        run = subprocess.run(
            _soc("run", "--config", str(_config(node.tmp / "run.toml")),
                 "--endpoints-file", "engines.json", "--out", "run"),
            env=env, cwd=node.tmp, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-4000:]
    finally:
        out = _stop(script, signal.SIGINT)
    assert script.returncode == 0, out[-3000:]
    starts = (node.tmp / "starts.log").read_text().splitlines()
    assert len(starts) == 2 and all(s.endswith("--max-model-len 4096") for s in starts)


@pytest.mark.slow
def test_the_gpu_smoke_script_prints_its_figures(node: FakeNode) -> None:
    """deploy/smoke-gpu.sh on a 1-GPU fake node: one engine, a short run and sweep, and
    the figures a user needs: tokens/s, the prefix-cache hit rate, the recommended
    concurrency; smoke.json keeps them."""
    node.model("Qwen/Qwen3-8B")
    env = {
        **node.env,
        "FAKE_GPUS": "1",
        "MODEL": "Qwen/Qwen3-8B",
        "OUT": str(node.tmp / "smoke"),
        "CHATS": "4",
        "SWEEP": "2,4",
        "SOC_ASYNC": f"{sys.executable} -m soc_async.cli",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "deploy/smoke-gpu.sh")],
        env=env, cwd=node.tmp, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    out = result.stdout
    assert re.search(r"tokens/s\s+\d+\.\d", out)
    assert re.search(r"prefix cache\s+\d+\.\d%", out)
    assert re.search(r"recommended\s+concurrency \d+ per engine", out)
    report = json.loads((node.tmp / "smoke" / "smoke.json").read_text())
    assert report["conversations"] + report["failures"] == 4
    assert report["batch_size"] == 1024 and report["sweep"] == [2, 4]
    assert (node.tmp / "smoke" / "bench" / "bench.json").exists()
    assert len((node.tmp / "starts.log").read_text().splitlines()) == 1
