"""The fake GPU node enforces what vLLM and nvidia-smi do, so deploy tests that pass on
it fail where a real node would refuse."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import FakeNode
from factories import free_port


def run(node: FakeNode, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env={**node.env, **env}, capture_output=True, text=True, timeout=60
    )


def start(node: FakeNode, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["vllm", "serve", *args],
        env={**node.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET ``url``; None when nothing answers in time."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_health(url: str, limit: float = 30.0) -> float:
    t0 = time.monotonic()
    while status(url + "/health", 0.5) != 200:
        assert time.monotonic() - t0 < limit, f"{url} never became healthy"
        time.sleep(0.1)
    return time.monotonic() - t0


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_nvidia_smi_lists_the_configured_gpus(fake_node: FakeNode) -> None:
    """-L and --query-gpu answer for FAKE_GPUS devices, in the order of the query."""
    listing = run(fake_node, "nvidia-smi", "-L", FAKE_GPUS="2")
    assert listing.stdout.splitlines() == [
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-0)",
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-fake-1)",
    ]
    query = run(
        fake_node,
        "nvidia-smi",
        "--query-gpu=memory.total,index",
        "--format=csv,noheader,nounits",
        FAKE_GPU_MIB="40960",
    )
    assert query.stdout.splitlines()[:2] == ["40960, 0", "40960, 1"]
    assert len(query.stdout.splitlines()) == 8


def test_unknown_vllm_flags_are_refused(fake_node: FakeNode) -> None:
    """A flag vLLM 0.32 does not have (its request log switch was renamed) is exit 2."""
    fake_node.model()
    result = run(fake_node, "vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--disable-log-requests")
    assert result.returncode == 2
    assert "unrecognized arguments: --disable-log-requests" in result.stderr


def test_tensor_parallel_size_must_divide_the_heads_of_the_config(fake_node: FakeNode) -> None:
    """TP 8 on the 28-head Qwen2.5-7B config: vLLM's error, exit 1."""
    fake_node.model()
    result = run(
        fake_node,
        "vllm",
        "serve",
        "Qwen/Qwen2.5-7B-Instruct",
        "--tensor-parallel-size",
        "8",
        "--port",
        str(free_port()),
    )
    assert result.returncode == 1
    assert "attention heads (28) must be divisible by tensor parallel size (8)" in result.stderr


def test_a_model_missing_from_the_offline_cache_fails(fake_node: FakeNode) -> None:
    result = run(fake_node, "vllm", "serve", "org/absent", "--port", str(free_port()))
    assert result.returncode == 1 and "offline mode" in result.stderr


def test_more_gpus_than_visible_fail(fake_node: FakeNode) -> None:
    fake_node.model()
    result = run(
        fake_node,
        "vllm",
        "serve",
        "Qwen/Qwen2.5-7B-Instruct",
        "-tp",
        "2",
        "--port",
        str(free_port()),
        CUDA_VISIBLE_DEVICES="3",
    )
    assert result.returncode == 1 and "more than the 1 GPUs available" in result.stderr


def test_a_port_in_use_fails(fake_node: FakeNode) -> None:
    fake_node.model()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            fake_node,
            "vllm",
            "serve",
            "Qwen/Qwen2.5-7B-Instruct",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
    assert result.returncode == 1 and "Address already in use" in result.stderr


def test_ready_only_after_loading_and_priority_needs_the_policy(fake_node: FakeNode) -> None:
    """While loading, the port accepts connections but /health does not answer; after
    FAKE_VLLM_LOAD_S it does. Under FCFS a request with a priority is refused (400)."""
    fake_node.model()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(
        fake_node,
        "Qwen/Qwen2.5-7B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        FAKE_VLLM_LOAD_S="1.5",
        FAKE_VLLM_REPLY="soc_async.testing.fake_server:default_reply",
    )
    try:
        time.sleep(0.7)
        assert status(url + "/health", 0.3) is None  # connected, no answer yet
        waited = wait_health(url)
        assert waited > 0.1
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "priority": 3}
        request = urllib.request.Request(
            url + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        refused.value.close()
    finally:
        stop(proc)


def test_an_engine_dies_after_n_requests_once(fake_node: FakeNode, tmp_path: Path) -> None:
    """FAKE_VLLM_DIE_AFTER=2: the second chat request kills the process (no reply); with
    FAKE_VLLM_DIE_ONCE the next start of the same devices serves on."""
    fake_node.model()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "FAKE_VLLM_DIE_AFTER": "2",
        "FAKE_VLLM_DIE_ONCE": str(tmp_path / "deaths"),
        "FAKE_VLLM_REPLY": "soc_async.testing.fake_server:default_reply",
        "CUDA_VISIBLE_DEVICES": "5",
    }
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

    def ask() -> int | None:
        request = urllib.request.Request(
            url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status)
        except OSError:
            return None

    args = ("Qwen/Qwen2.5-7B-Instruct", "--host", "127.0.0.1", "--port", str(port))
    proc = start(fake_node, *args, **env)
    wait_health(url)
    assert ask() == 200
    assert ask() is None
    assert proc.wait(10) == 17
    assert "EngineCore died unexpectedly" in stop(proc)
    again = start(fake_node, *args, **env)
    try:
        wait_health(url)
        assert [ask() for _ in range(3)] == [200, 200, 200]
    finally:
        stop(again)


def test_two_engines_loading_from_one_compile_cache_collide(fake_node: FakeNode) -> None:
    """Engines that load at the same time from the same VLLM_CACHE_ROOT: the second fails;
    with a cache each, both come up."""
    fake_node.model()
    ports = [free_port(), free_port()]
    common = {"FAKE_VLLM_LOAD_S": "2"}
    first = start(
        fake_node,
        "Qwen/Qwen2.5-7B-Instruct",
        "--port",
        str(ports[0]),
        "--host",
        "127.0.0.1",
        **common,
    )
    try:
        time.sleep(0.8)
        second = run(
            fake_node,
            "vllm",
            "serve",
            "Qwen/Qwen2.5-7B-Instruct",
            "--port",
            str(ports[1]),
            **common,
        )
        assert second.returncode == 1 and "compile cache" in second.stderr
        own = start(
            fake_node,
            "Qwen/Qwen2.5-7B-Instruct",
            "--port",
            str(ports[1]),
            "--host",
            "127.0.0.1",
            VLLM_CACHE_ROOT=str(fake_node.tmp / "other"),
            **common,
        )
        try:
            wait_health(f"http://127.0.0.1:{ports[0]}")
            wait_health(f"http://127.0.0.1:{ports[1]}")
        finally:
            stop(own)
    finally:
        stop(first)
