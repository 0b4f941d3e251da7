"""deploy/slurm/soc-async.sbatch executed by bash (not sbatch) with SLURM's variables set.

The dry runs check the plan the script makes from its settings (servers, GPUs, ports,
shard, resume). The end-to-end runs replace vLLM with tests/deploy/fake_vllm (the fake
OpenAI server answering with the scripted model) and check what a GPU job leaves behind:
a valid run directory, resumed by a second execution, flushed and requeued on the
time-limit signal, and shards that merge into one dataset.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from soc_async.merge import merge
from soc_async.records import (
    Conversation,
    Experience,
    Failure,
    Persona,
    Record,
    decode_line,
    id_index,
    record_id,
)

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "deploy" / "slurm" / "soc-async.sbatch"
FAKE_VLLM = ROOT / "tests" / "deploy" / "fake_vllm"
VENV_BIN = Path(sys.executable).parent
DATA_FILES = ("personas.jsonl", "experiences.jsonl", "conversations.jsonl", "failures.jsonl")
STAGE_OF = {Persona: "personas", Experience: "experiences", Conversation: "chats"}


def _base_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment less anything of SLURM or CUDA, with the venv first on
    PATH (so `soc-async` is this checkout's) and every default path inside tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_"))}
    env.update(
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path),
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_JOB_ID="4242",
        SLURM_GPUS_ON_NODE="1",
        HF_HOME=str(tmp_path / "hf"),
        RUN_DIR=str(tmp_path / "run"),
        LOG_DIR=str(tmp_path / "logs"),
        MODEL="fake-model",
    )
    return env


def _dry(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**_base_env(tmp_path), "DRY_RUN": "1", **settings}
    return subprocess.run(
        ["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path
    )


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


def test_dry_run_one_tensor_parallel_server(tmp_path: Path) -> None:
    """SERVERS=1: one vLLM over every GPU with --tensor-parallel-size = the GPU count,
    one endpoint for soc-async, a new run with the config; nothing is created."""
    result = _dry(tmp_path, SLURM_GPUS_ON_NODE="4", PORT="9000", CONFIG="/cfg/run.toml")
    assert result.returncode == 0, result.stderr
    server, soc = _commands(result.stdout)
    assert server[0] == "CUDA_VISIBLE_DEVICES=0,1,2,3"
    assert server[server.index("--tensor-parallel-size") + 1] == "4"
    assert server[server.index("--port") + 1] == "9000"
    assert "--data-parallel-size" not in server
    assert soc[:4] == ["soc-async", "run", "--out", str(tmp_path / "run")]
    assert soc[soc.index("--config") + 1] == "/cfg/run.toml"
    assert soc.count("--endpoint") == 1 and "http://127.0.0.1:9000" in soc
    assert "--shard" not in soc
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_dry_run_metrics_port_is_opt_in(tmp_path: Path) -> None:
    """METRICS_PORT turns on soc-async's Prometheus endpoint (on 127.0.0.1 unless
    METRICS_HOST says otherwise); unset, the flag is not passed."""
    (soc_off,) = _commands(_dry(tmp_path, SLURM_GPUS_ON_NODE="1").stdout)[-1:]
    assert "--metrics-port" not in soc_off
    (soc,) = _commands(_dry(tmp_path, METRICS_PORT="9400").stdout)[-1:]
    assert soc[soc.index("--metrics-port") + 1] == "9400"
    assert soc[soc.index("--metrics-host") + 1] == "127.0.0.1"
    (wide,) = _commands(_dry(tmp_path, METRICS_PORT="9400", METRICS_HOST="0.0.0.0").stdout)[-1:]
    assert wide[wide.index("--metrics-host") + 1] == "0.0.0.0"


def test_dry_run_one_server_per_gpu_with_affinity_endpoints(tmp_path: Path) -> None:
    """SERVERS=per-gpu: one server per TP_SIZE of the job's devices (SLURM's
    CUDA_VISIBLE_DEVICES), each on its own port, and soc-async gets every endpoint."""
    result = _dry(
        tmp_path,
        SERVERS="per-gpu",
        SLURM_GPUS_ON_NODE="4",
        CUDA_VISIBLE_DEVICES="4,5,6,7",
        TP_SIZE="2",
        PORT="9000",
    )
    assert result.returncode == 0, result.stderr
    *servers, soc = _commands(result.stdout)
    assert [s[0] for s in servers] == ["CUDA_VISIBLE_DEVICES=4,5", "CUDA_VISIBLE_DEVICES=6,7"]
    assert [s[s.index("--port") + 1] for s in servers] == ["9000", "9001"]
    endpoints = [soc[i + 1] for i, a in enumerate(soc) if a == "--endpoint"]
    assert endpoints == ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]


def test_dry_run_one_data_parallel_server(tmp_path: Path) -> None:
    """SERVERS=dp: one server with --data-parallel-size GPUs/TP_SIZE behind one port."""
    result = _dry(tmp_path, SERVERS="dp", SLURM_GPUS_ON_NODE="8", TP_SIZE="2")
    assert result.returncode == 0, result.stderr
    server, soc = _commands(result.stdout)
    assert server[server.index("--data-parallel-size") + 1] == "4"
    assert server[server.index("--tensor-parallel-size") + 1] == "2"
    assert soc.count("--endpoint") == 1


def test_dry_run_array_task_writes_its_shard(tmp_path: Path) -> None:
    """An array task i of n (counted from SLURM_ARRAY_TASK_MIN) runs --shard i/n into
    RUN_DIR/shard-i; a task outside 0..n-1 is refused with exit code 2."""
    array = {"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_COUNT": "4"}
    result = _dry(tmp_path, SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_MIN="1", **array)
    assert result.returncode == 0, result.stderr
    soc = _commands(result.stdout)[-1]
    assert soc[soc.index("--shard") + 1] == "2/4"
    assert soc[soc.index("--out") + 1] == str(tmp_path / "run" / "shard-2")
    bad = _dry(tmp_path, SLURM_ARRAY_TASK_ID="9", **array)
    assert bad.returncode == 2
    assert "--array=0-3" in bad.stderr


def test_dry_run_resumes_a_run_directory(tmp_path: Path) -> None:
    """When RUN_DIR already holds a run (its config.toml), the job resumes it: --resume,
    no --config or --out, and the fresh endpoints."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("seed = 1\n")
    result = _dry(tmp_path, CONFIG="/cfg/run.toml", PORT="9100")
    assert result.returncode == 0, result.stderr
    soc = _commands(result.stdout)[-1]
    assert soc[:4] == ["soc-async", "run", "--resume", str(tmp_path / "run")]
    assert "--config" not in soc and "--out" not in soc
    assert "http://127.0.0.1:9100" in soc


@pytest.mark.parametrize(
    "settings",
    [
        {"SERVERS": "two"},
        {"SERVERS": "per-gpu", "SLURM_GPUS_ON_NODE": "3", "TP_SIZE": "2"},
        {"NGPUS": "zero"},
        {"SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0,1"},
        {"SLURM_GPUS_ON_NODE": "2", "TP_SIZE": "4"},
        {"PORT": "http"},
    ],
    ids=[
        "unknown-mode",
        "tp-not-dividing",
        "bad-ngpus",
        "too-few-devices",
        "tp-over-gpus",
        "bad-port",
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, settings: dict[str, str]) -> None:
    """A setting the script cannot honour ends it with exit code 2 and a message naming it."""
    result = _dry(tmp_path, **settings)
    assert result.returncode == 2
    assert "error:" in result.stderr


# -- end to end with the fake vLLM ----------------------------------------------------------

TARGETS = {"personas": 4, "experiences": 3, "chats": 3}


def _config(tmp_path: Path, seed: int = 11, **targets: int) -> Path:
    t = {**TARGETS, **targets}
    path = tmp_path / "run.toml"
    path.write_text(
        f"seed = {seed}\n"
        f"[targets]\npersonas = {t['personas']}\nexperiences = {t['experiences']}\n"
        f"chats = {t['chats']}\n"
        "[chat]\nmax_turns = 4\n"
        "[concurrency]\nfixed = 4\n"
        "[client]\nshutdown_grace_s = 5.0\nmax_retries = 2\n"
    )
    return path


def _free_ports(count: int) -> int:
    """A port p such that p .. p+count-1 are free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count >= 65536:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _job_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    # A stand-in for SLURM's scontrol: notes each call, so a test can see the requeue.
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(tmp_path / "scontrol.log"))}\n')
    scontrol.chmod(0o755)
    env = _base_env(tmp_path)
    env.update(
        VLLM_CMD=str(FAKE_VLLM),
        FAKE_VLLM_PYTHON=sys.executable,
        FAKE_VLLM_RECORD=str(tmp_path / "servers.log"),
        CONFIG=str(_config(tmp_path)),
        PORT=str(_free_ports(2)),
        HEALTH_POLL="0.2",
        HEALTH_TIMEOUT="60",
        STOP_TIMEOUT="10",
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


@pytest.fixture
def reap_servers(tmp_path: Path) -> Iterator[None]:
    """After the test, ends any fake server a failed job left behind (by the pids the
    stand-in recorded), so a broken stop path fails one test, not the machine."""
    yield
    record = tmp_path / "servers.log"
    if not record.exists():
        return
    for line in record.read_text().splitlines():
        pid = int(line.split()[1].removeprefix("pid="))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _run_job(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SBATCH)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    ports = int(env["PORT"]), int(env["PORT"]) + 1
    assert all(_port_closed(p) for p in ports), "a server outlived the job"
    return result


def _read(run_dir: Path) -> dict[str, list[Record]]:
    """Every record of the run directory's data files; each line must decode."""
    out: dict[str, list[Record]] = {}
    for name in DATA_FILES:
        path = run_dir / name
        lines = path.read_bytes().splitlines() if path.exists() else []
        out[name] = [decode_line(line) for line in lines if line.strip()]
    return out


def _check_run(
    run_dir: Path, shard: tuple[int, int] = (0, 1), targets: dict[str, int] = TARGETS
) -> dict[str, list[Record]]:
    """The run directory is valid: no id twice in a file, every id of this shard, and per
    stage the finished plus failed items are exactly the shard's share of the target."""
    records = _read(run_dir)
    i, n = shard
    for name, recs in records.items():
        ids = [record_id(r) for r in recs]
        assert len(ids) == len(set(ids)), f"{name}: an id twice"
        assert all(id_index(x) % n == i for x in ids), f"{name}: an id of another shard"
    done = Counter(STAGE_OF[type(r)] for name in DATA_FILES[:3] for r in records[name])
    failed = Counter(r.stage for r in records["failures.jsonl"] if isinstance(r, Failure))
    for stage, target in targets.items():
        share = len(range(i, target, n))
        assert done[stage] + failed[stage] == share, (stage, done, failed)
    assert done["chats"] > 0, "no conversation finished: the scripted model fails them all"
    return records


def _ids(records: dict[str, list[Record]]) -> set[str]:
    return {record_id(r) for recs in records.values() for r in recs}


def _explain(result: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    return f"exit {result.returncode}\n{result.stderr[-6000:]}\n--- server logs ---\n{logs}"


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
def test_job_runs_end_to_end_and_a_second_execution_resumes(tmp_path: Path) -> None:
    """The job starts the (fake) server, waits for /health, writes a valid run directory
    with every target met, and stops the server; executed again, it resumes the same
    directory (--resume), writes no id twice and keeps everything it had."""
    env = _job_env(tmp_path)
    first = _run_job(env, tmp_path)
    assert first.returncode == 0, _explain(first, tmp_path)
    assert "new run in" in first.stderr
    run_dir = tmp_path / "run"
    before = _check_run(run_dir)
    second = _run_job(env, tmp_path)
    assert second.returncode == 0, _explain(second, tmp_path)
    assert "resuming" in second.stderr
    after = _check_run(run_dir)
    assert _ids(before) <= _ids(after)
    starts = (tmp_path / "servers.log").read_text().splitlines()
    assert len(starts) == 2 and all("--tensor-parallel-size 1" in s for s in starts)


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
def test_array_tasks_on_per_gpu_servers_merge_into_the_whole_run(tmp_path: Path) -> None:
    """Two array tasks, each with two servers (one per GPU) and affinity routing, write
    the disjoint shards 0/2 and 1/2 into RUN_DIR/shard-i; merged, they are the whole run
    with no id twice."""
    shards = []
    for task in (0, 1):
        env = _job_env(
            tmp_path,
            SERVERS="per-gpu",
            SLURM_GPUS_ON_NODE="2",
            SLURM_ARRAY_JOB_ID="4240",
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_TASK_COUNT="2",
            SLURM_JOB_ID=str(4240 + task + 1),
        )
        result = _run_job(env, tmp_path)
        assert result.returncode == 0, _explain(result, tmp_path)
        shard_dir = tmp_path / "run" / f"shard-{task}"
        shards.append(_check_run(shard_dir, (task, 2)))
    starts = (tmp_path / "servers.log").read_text().splitlines()
    assert (
        sorted(s.split()[0] for s in starts)
        == ["CUDA_VISIBLE_DEVICES=0"] * 2 + ["CUDA_VISIBLE_DEVICES=1"] * 2
    )
    # Affinity routing spreads the conversations: every server answered some requests.
    for log in sorted((tmp_path / "logs").glob("vllm-*.log")):
        served = [int(n) for n in re.findall(r"after (\d+) requests", log.read_text())]
        assert served and min(served) > 0, log.read_text()[-2000:]
    summary = merge([tmp_path / "run" / "shard-0", tmp_path / "run" / "shard-1"], tmp_path / "m")
    assert summary.merged == ["0/2", "1/2"] and summary.missing == []
    merged = _read(tmp_path / "m")
    assert _ids(merged) == _ids(shards[0]) | _ids(shards[1])
    assert not _ids(shards[0]) & _ids(shards[1])
    _check_run(tmp_path / "m")


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM], ids=["USR1", "TERM"])
def test_stop_signal_flushes_and_the_next_execution_finishes(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGUSR1 (SLURM's --signal=B:USR1 before the time limit) or SIGTERM to the job
    script stops soc-async with SIGTERM: it flushes and exits 130 and the servers stop;
    after USR1 the job asks `scontrol requeue` for itself, after TERM (scancel) it does
    not. What it wrote is valid; the next execution resumes it to completion without
    writing an id twice."""
    targets = {"personas": 8, "experiences": 6, "chats": 6}
    env = _job_env(tmp_path, FAKE_VLLM_ARGS="--ttft-s 0.4")
    env["CONFIG"] = str(_config(tmp_path, **targets))
    job = subprocess.Popen(
        ["bash", str(SBATCH)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        personas = tmp_path / "run" / "personas.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            if personas.exists() and personas.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before it could be signalled"
        job.send_signal(sig)
        stdout, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()  # the script's EXIT trap does not run: its servers die with the test
            job.communicate()
    result = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    assert job.returncode == 130, _explain(result, tmp_path)
    assert all(_port_closed(int(env["PORT"]) + k) for k in (0, 1))
    requeues = tmp_path / "scontrol.log"
    if sig == signal.SIGUSR1:
        assert requeues.read_text().split() == ["requeue", "4242"]
    else:
        assert not requeues.exists()
    partial = _read(tmp_path / "run")
    for recs in partial.values():
        assert len({record_id(r) for r in recs}) == len(recs)
    assert len(partial["conversations.jsonl"]) < targets["chats"], "the run was not cut short"

    env.pop("FAKE_VLLM_ARGS")
    again = _run_job(env, tmp_path)
    assert again.returncode == 0, _explain(again, tmp_path)
    assert "resuming" in again.stderr
    finished = _check_run(tmp_path / "run", targets=targets)
    assert _ids(partial) <= _ids(finished)
