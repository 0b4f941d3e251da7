"""The preflight (llm/preflight.py, `soc-async doctor`, the start of serve and smoke):
each check with its input made to fail. Driver and GPU facts are made up (no GPU here);
open-file limits, files, ports and flock are real."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import resource
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import FakeNode
from fakeproc import FakeProcess

from soc_async.errors import InputError
from soc_async.llm import preflight
from soc_async.llm.preflight import Facts

ROOT = Path(__file__).resolve().parents[2]
GPU = Facts(gpu=True, driver="580.65.06", torch_cuda="13.0", cuda_available=True, vllm="0.32.0")


def _soc(*args: str) -> list[str]:
    return [sys.executable, "-m", "soc_async.cli", *args]


# -- driver, CUDA, vLLM ------------------------------------------------------------------


def test_a_driver_older_than_torchs_cuda_needs_is_a_problem() -> None:
    """torch 2.13 for CUDA 13 (vLLM 0.32) on a 570 driver: every engine would die."""
    old = preflight.check_driver(Facts(gpu=True, driver="570.124.06", torch_cuda="13.0"))
    assert old.status == "problem"
    assert "570.124.06 is older than 580" in old.detail and "CUDA 13.0" in old.detail
    assert preflight.check_driver(GPU).status == "ok"
    cuda12 = preflight.check_driver(Facts(gpu=True, driver="550.54.14", torch_cuda="12.8"))
    assert cuda12.status == "ok"
    assert preflight.check_driver(Facts(gpu=True, driver="520.61", torch_cuda="12.1")).status == (
        "problem"
    )


def test_a_cpu_torch_or_no_driver_version_on_a_gpu_machine_is_a_problem() -> None:
    cpu_torch = preflight.check_driver(Facts(gpu=True, driver="580.65.06", torch_cuda=None))
    assert cpu_torch.status == "problem" and "CPU build" in cpu_torch.detail
    silent = preflight.check_driver(Facts(gpu=True, driver=None, torch_cuda="13.0"))
    assert silent.status == "problem"


def test_no_gpu_skips_the_gpu_checks_and_checks_the_rest() -> None:
    facts = Facts(gpu=False, vllm="0.32.0", nofile=(4096, 4096))
    found = {f.check: f for f in preflight.run_checks(facts, in_flight=100)}
    assert found["driver"].status == found["cuda"].status == "skipped"
    assert "no NVIDIA GPU" in found["driver"].detail
    assert found["vllm"].status == "ok" and found["open files"].status == "ok"


def test_cuda_not_available_on_a_gpu_machine_is_a_problem() -> None:
    facts = Facts(gpu=True, driver="580.65.06", torch_cuda="13.0", cuda_available=False)
    assert preflight.check_cuda(facts).status == "problem"
    assert preflight.check_cuda(GPU).status == "ok"


def test_engines_of_another_installation_skip_this_pythons_torch_and_vllm() -> None:
    facts = Facts(gpu=True, torch_cuda=None, vllm=None, launcher="apptainer exec x vllm serve")
    for check in (preflight.check_driver, preflight.check_cuda, preflight.check_vllm):
        assert check(facts).status == "skipped"
    assert preflight.foreign_launcher(["apptainer", "exec", "x.sif", "vllm", "serve"])
    assert preflight.foreign_launcher([sys.executable, "-m", "vllm.entrypoints.x"]) == ""


@pytest.mark.parametrize(
    ("version", "status"),
    [("0.32.0", "ok"), ("0.32.0+cpu", "ok"), ("0.32.3", "ok"), ("0.31.1", "problem"),
     ("0.33.0", "ok"), ("0.34.0", "problem"), ("1.0.0", "problem"), (None, "problem")],
)  # fmt: skip
def test_the_vllm_version_against_the_supported_series(version: str | None, status: str) -> None:
    assert preflight.check_vllm(Facts(gpu=False, vllm=version)).status == status


def test_the_supported_series_is_pyprojects() -> None:
    """SUPPORTED_VLLM and the [gpu] extra's pin move together."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (pin,) = extras["gpu"]
    low, high = preflight.SUPPORTED_VLLM
    assert pin == f"vllm>={low[0]}.{low[1]},<{high[0]}.{high[1]}"


def test_the_installed_torch_cuda_is_read_without_importing_torch() -> None:
    there, cuda = preflight.read_torch_cuda()
    assert there
    assert "torch" not in sys.modules or cuda is None or re.fullmatch(r"\d+\.\d+", cuda)
    import torch

    assert cuda == torch.version.cuda


def test_flashinfer_without_its_kernels_is_a_warning_naming_download_kernels() -> None:
    """An offline node cannot fetch FlashInfer's cubins at start (vllm/utils/flashinfer.py):
    missing or mismatched flashinfer-cubin / flashinfer-jit-cache say so."""
    bare = Facts(gpu=True, torch_cuda="13.0", vllm="0.32.0", flashinfer="0.6.1")
    found = preflight.check_kernels(bare, {"HF_HUB_OFFLINE": "1"})
    assert found.status == "warning" and "vllm download-kernels" in found.detail
    assert "flashinfer-cubin missing" in found.detail and "offline" in found.detail
    old = Facts(gpu=True, torch_cuda="13.0", flashinfer="0.6.1", flashinfer_cubin="0.5.3",
                flashinfer_jit_cache="0.6.1")  # fmt: skip
    assert "flashinfer-cubin 0.5.3" in preflight.check_kernels(old, {}).detail
    whole = Facts(gpu=True, torch_cuda="13.0", flashinfer="0.6.1", flashinfer_cubin="0.6.1",
                  flashinfer_jit_cache="0.6.1")  # fmt: skip
    assert preflight.check_kernels(whole, {}).status == "ok"
    cuda_12_8 = Facts(gpu=True, torch_cuda="12.8", flashinfer="0.6.1", flashinfer_cubin="0.6.1")
    assert preflight.check_kernels(cuda_12_8, {}).status == "ok"  # no JIT-cache wheels yet


# -- open files: real limits --------------------------------------------------------------


def test_a_hard_open_file_limit_below_the_concurrency_is_a_problem() -> None:
    low = Facts(gpu=False, vllm="0.32.0", nofile=(1024, 1024))
    assert preflight.check_open_files(low, 1024).status == "problem"
    assert "hard open-file limit 1024" in preflight.check_open_files(low, 1024).detail
    soft_only = Facts(gpu=False, vllm="0.32.0", nofile=(1024, 65536))
    assert preflight.check_open_files(soft_only, 8192).status == "ok"


def _limits(soft: int, hard: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_client_raises_its_soft_limit_and_refuses_what_the_hard_cannot_hold() -> None:
    """In a child whose limits are 300 soft / 600 hard, as SLURM passes them: the soft
    limit is raised to 600; 200 in flight fit; 1,024 are refused in one line."""
    probe = (
        "import resource\n"
        "from soc_async.errors import InputError\n"
        "from soc_async.llm.preflight import raise_open_files, require_open_files\n"
        "print(*raise_open_files())\n"
        "require_open_files(200)\n"
        "try:\n    require_open_files(1024)\nexcept InputError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_limits(300, 600),
    ).stdout.splitlines()
    assert out[0] == "600 600"
    assert out[1].startswith("1024 requests in flight need about 1280 open files")
    assert "the limit is 600" in out[1]


@pytest.mark.slow
def test_run_refuses_a_concurrency_the_open_file_limit_cannot_hold(tmp_path: Path) -> None:
    """`soc-async run --concurrency 1024` under a hard limit of 600: exit 2, one line; with
    --concurrency 64 the same limits (soft 300) are raised and the run finishes."""
    with FakeProcess("--reply", "soc_async.testing.scripted:reply") as fake:
        refused = subprocess.run(
            _soc("run", "--endpoint", fake.url, "--out", str(tmp_path / "a"),
                 "--personas", "3", "--experiences", "2", "--chats", "2",
                 "--concurrency", "1024"),
            capture_output=True, text=True, timeout=300, preexec_fn=_limits(300, 600),
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr[-2000:]
        (line,) = [row for row in refused.stderr.splitlines() if "soc-async: error" in row]
        assert "1024 requests in flight need about 1280 open files" in line
        done = subprocess.run(
            _soc("run", "--endpoint", fake.url, "--out", str(tmp_path / "b"),
                 "--personas", "3", "--experiences", "2", "--chats", "2",
                 "--concurrency", "64"),
            capture_output=True, text=True, timeout=300, preexec_fn=_limits(300, 600),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]


# -- model cache, disk, ports, flock --------------------------------------------------------


def test_an_offline_model_missing_from_the_cache_is_a_problem(fake_node: FakeNode) -> None:
    env = dict(fake_node.env)
    missing = preflight.check_model_cache("Qwen/Qwen3-8B", env)
    assert missing.status == "problem" and "hf download Qwen/Qwen3-8B" in missing.detail
    fake_node.model("Qwen/Qwen3-8B")
    assert preflight.check_model_cache("Qwen/Qwen3-8B", env).status == "ok"
    online = dict(env, HF_HUB_OFFLINE="0")
    assert preflight.check_model_cache("org/other", online).status == "warning"
    assert preflight.check_model_cache("/no/such/dir", env).detail == (
        "model path /no/such/dir does not exist"
    )


def test_too_little_free_disk_is_a_problem(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / 1024**3
    assert preflight.check_disk("run directory", tmp_path / "new" / "run", 0.001).status == "ok"
    short = preflight.check_disk("run directory", tmp_path / "run", free * 4 + 1)
    assert short.status == "problem" and str(tmp_path) in short.detail


def test_a_busy_port_is_a_problem_and_the_ephemeral_range_a_warning() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        found = preflight.check_ports("127.0.0.1", [port])
        assert found.status == "problem" and str(port) in found.detail
    low, _ = preflight.ephemeral_ports()
    assert preflight.check_ports("127.0.0.1", [low + 5]).status == "warning"


def test_a_run_directory_without_flock_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert preflight.check_flock(tmp_path / "run").status == "ok"

    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fcntl, "flock", refuse)
    found = preflight.check_flock(tmp_path / "run")
    assert found.status == "warning" and "no flock" in found.detail
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_enforce_prints_one_line_per_problem_and_raises(capsys: pytest.CaptureFixture) -> None:
    bad = Facts(gpu=True, driver="535.104.05", torch_cuda="13.0", cuda_available=False)
    findings = [preflight.check_driver(bad), preflight.check_cuda(bad)]
    with pytest.raises(InputError, match="2 problem"):
        preflight.enforce(findings, "serve")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("soc-async: driver: NVIDIA driver 535")


# -- the command ---------------------------------------------------------------------------


def test_doctor_on_this_machine_says_no_gpu_and_checks_the_rest(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE",)}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if "deploy/bin" not in p
    )
    done = subprocess.run(
        _soc("doctor", "--out", str(tmp_path / "run"), "--port", "0"),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    if preflight.has_gpu():
        pytest.skip("this machine has a GPU")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        "no NVIDIA GPU on this machine: driver and CUDA checks skipped"
    )
    for check in ("vllm", "open files", "disk: run directory", "flock"):
        assert check in done.stdout


def test_doctor_names_each_problem_and_exits_2(tmp_path: Path, fake_node: FakeNode) -> None:
    """An offline cache without the model and a busy port: one line each, exit 2."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in fake_node.env.items() if k != "PATH"}
        env["PATH"] = os.environ.get("PATH", "")
        done = subprocess.run(
            _soc("doctor", "--model", "Qwen/Qwen3-8B", "--port", str(port), "--engines", "1",
                 "--out", str(tmp_path / "run")),
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    problems = [row for row in done.stderr.splitlines() if row.startswith("soc-async: ")]
    assert any(row.startswith("soc-async: model cache: Qwen/Qwen3-8B") for row in problems)
    assert any(row.startswith(f"soc-async: ports: port(s) {port}") for row in problems)
    assert problems[-1].startswith("soc-async: error: doctor: the preflight found 2 problem(s)")


def test_serve_and_smoke_run_the_preflight_before_anything_starts(
    tmp_path: Path, fake_node: FakeNode
) -> None:
    """A model missing from the offline cache: serve (on the CPU) and smoke refuse with
    the preflight's line and exit 2; no engine, no smoke directory."""
    env = {**fake_node.env, "FAKE_VLLM_RECORD": str(tmp_path / "starts.log")}
    serve = subprocess.run(
        _soc("serve", "--model", "Qwen/Qwen3-8B", "--device", "cpu", "--port", "0"),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert serve.returncode == 2, serve.stdout + serve.stderr
    (line,) = serve.stderr.strip().splitlines()
    assert line.startswith(
        "soc-async: error: serve: model cache: Qwen/Qwen3-8B is not in the Hugging Face cache"
    )
    smoke = subprocess.run(
        _soc("smoke", "--model", "Qwen/Qwen3-8B", "--out", str(tmp_path / "smoke")),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert smoke.returncode == 2, smoke.stdout + smoke.stderr
    assert "soc-async: error: smoke: model cache: Qwen/Qwen3-8B" in smoke.stderr
    assert not (tmp_path / "smoke").exists() and not (tmp_path / "starts.log").exists()
