"""deploy/slurm/soc-async.sbatch executed by bash (not sbatch) on a fake GPU node.

SLURM's variables are set by hand; tests/deploy/bin holds the fake node's `nvidia-smi`
and `vllm` (soc_async/testing/fake_node.py), which enforce vLLM's rules: a
tensor-parallel size must divide the heads of the model's config.json, ports must be
free, an engine answers only once loaded, and can be made to die. The dry runs check
the plan the job makes (and what it refuses before starting anything); the end-to-end
runs check what a GPU job leaves behind: a valid run directory on the default layout of
8 GPUs, an engine that dies restarted while the run completes, a resume, the flush and
requeue on the time-limit signal (and its cap), and shards that merge into one dataset.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeNode

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
MODEL = "Qwen/Qwen2.5-7B-Instruct"  # 28 attention heads, 4 KV heads: TP 8 is refused
DATA_FILES = ("personas.jsonl", "experiences.jsonl", "conversations.jsonl", "failures.jsonl")
STAGE_OF = {Persona: "personas", Experience: "experiences", Conversation: "chats"}


def _base_env(node: FakeNode, **settings: str) -> dict[str, str]:
    """The fake node's environment with SLURM's job variables and every path inside the
    test's directory; the model is in the node's Hugging Face cache."""
    node.model(MODEL)
    tmp = node.tmp
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    # A stand-in for SLURM's scontrol: notes each call, so a test can see the requeue.
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(tmp / "scontrol.log"))}\n')
    scontrol.chmod(0o755)
    env = dict(node.env)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        SLURM_SUBMIT_DIR=str(tmp),
        SLURM_JOB_ID="4242",
        SLURM_GPUS_ON_NODE="8",
        RUN_DIR=str(tmp / "run"),
        LOG_DIR=str(tmp / "logs"),
        MODEL=MODEL,
        PORT=str(_free_ports()),
    )
    env.update(settings)
    return env


def _dry(node: FakeNode, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**_base_env(node), "DRY_RUN": "1", **settings}
    return subprocess.run(
        ["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=120, cwd=node.tmp
    )


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_dry_run_default_layout_on_8_gpus_with_a_28_head_model(fake_node: FakeNode) -> None:
    """No TP_SIZE: the layout comes from the model's config.json: 8 engines of TP 1 on
    ports PORT, PORT+10, ...; soc-async serve gets the job's devices, soc-async run the
    endpoints file and the readiness timeout; nothing is created."""
    result = _dry(fake_node, PORT="20000", CONFIG="/cfg/run.toml")
    assert result.returncode == 0, result.stderr
    assert "8 engine(s) of tensor-parallel size 1" in result.stdout
    engines = [line for line in result.stdout.splitlines() if "CUDA_VISIBLE_DEVICES=" in line]
    assert len(engines) == 8
    assert "--port 20070" in engines[7] and "CUDA_VISIBLE_DEVICES=7" in engines[7]
    serve, soc = _commands(result.stdout)
    assert serve[:2] == ["soc-async", "serve"] and _after(serve, "--gpus") == "0,1,2,3,4,5,6,7"
    assert "--tp" not in serve
    endpoints = _after(serve, "--endpoints-file")
    assert soc[:4] == ["soc-async", "run", "--out", str(fake_node.tmp / "run")]
    assert _after(soc, "--endpoints-file") == endpoints
    assert _after(soc, "--ready-timeout") == "1800"
    assert _after(soc, "--config") == "/cfg/run.toml"
    assert not (fake_node.tmp / "run").exists() and not (fake_node.tmp / "logs").exists()


def test_an_impossible_tp_size_is_refused_before_anything_starts(fake_node: FakeNode) -> None:
    """TP_SIZE=8 for 28 heads: exit 2 with vLLM's rule and the sizes that work, in one
    line; no engine started, no directory made. The real job refuses the same way."""
    for dry in ("1", "0"):
        result = _dry(fake_node, TP_SIZE="8", DRY_RUN=dry, FAKE_VLLM_RECORD="starts.log")
        assert result.returncode == 2, result.stderr
        reason = [line for line in result.stderr.splitlines() if "attention heads" in line]
        assert reason and "sizes that work on 8 GPUs: 1, 2, 4" in reason[0]
        assert "nothing was started" in result.stderr
    assert not (fake_node.tmp / "starts.log").exists()
    assert not (fake_node.tmp / "run").exists()


def test_dry_run_a_given_tp_size_and_vllm_data_parallel(fake_node: FakeNode) -> None:
    """TP_SIZE=2 with SERVERS=dp: one server over every GPU with --data-parallel-size 4."""
    result = _dry(fake_node, TP_SIZE="2", SERVERS="dp")
    assert result.returncode == 0, result.stderr
    (engine,) = [line for line in result.stdout.splitlines() if "CUDA_VISIBLE_DEVICES=" in line]
    assert "--tensor-parallel-size 2" in engine and "--data-parallel-size 4" in engine


def test_dry_run_kv_cache_dtype_reaches_every_engine(fake_node: FakeNode) -> None:
    """KV_CACHE_DTYPE=fp8 goes to soc-async serve and from it to every vLLM engine;
    unset, neither gets the flag (the model's own dtype)."""
    result = _dry(fake_node, KV_CACHE_DTYPE="fp8", SLURM_GPUS_ON_NODE="2")
    assert result.returncode == 0, result.stderr
    serve, _ = _commands(result.stdout)
    assert _after(serve, "--kv-cache-dtype") == "fp8"
    engines = [line for line in result.stdout.splitlines() if "CUDA_VISIBLE_DEVICES=" in line]
    assert len(engines) == 2 and all("--kv-cache-dtype fp8" in line for line in engines)
    plain = _dry(fake_node, SLURM_GPUS_ON_NODE="2").stdout
    assert "--kv-cache-dtype" not in plain
    refused = _dry(fake_node, KV_CACHE_DTYPE="fp4")
    assert refused.returncode == 2 and "--kv-cache-dtype" in refused.stderr


def test_dry_run_metrics_port_is_opt_in(fake_node: FakeNode) -> None:
    """METRICS_PORT turns on soc-async's Prometheus endpoint (on 127.0.0.1 unless
    METRICS_HOST says otherwise); unset, the flag is not passed."""
    (soc_off,) = _commands(_dry(fake_node, SLURM_GPUS_ON_NODE="1").stdout)[-1:]
    assert "--metrics-port" not in soc_off
    (soc,) = _commands(_dry(fake_node, METRICS_PORT="9400").stdout)[-1:]
    assert soc[soc.index("--metrics-port") + 1] == "9400"
    assert soc[soc.index("--metrics-host") + 1] == "127.0.0.1"
    (wide,) = _commands(_dry(fake_node, METRICS_PORT="9400", METRICS_HOST="0.0.0.0").stdout)[-1:]
    assert wide[wide.index("--metrics-host") + 1] == "0.0.0.0"


def test_dry_run_follows_slurms_devices(fake_node: FakeNode) -> None:
    """SLURM's CUDA_VISIBLE_DEVICES names the job's GPUs; the engines get those."""
    result = _dry(fake_node, SLURM_GPUS_ON_NODE="2", CUDA_VISIBLE_DEVICES="4,5")
    assert result.returncode == 0, result.stderr
    serve, _ = _commands(result.stdout)
    assert _after(serve, "--gpus") == "4,5"
    assert "CUDA_VISIBLE_DEVICES=5" in result.stdout


def test_dry_run_array_task_writes_its_shard(fake_node: FakeNode) -> None:
    """An array task i of n (counted from SLURM_ARRAY_TASK_MIN) runs --shard i/n into
    RUN_DIR/shard-i; a task outside 0..n-1 is refused with exit code 2."""
    array = {"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_COUNT": "4"}
    result = _dry(fake_node, SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_MIN="1", **array)
    assert result.returncode == 0, result.stderr
    soc = _commands(result.stdout)[-1]
    assert _after(soc, "--shard") == "2/4"
    assert _after(soc, "--out") == str(fake_node.tmp / "run" / "shard-2")
    bad = _dry(fake_node, SLURM_ARRAY_TASK_ID="9", **array)
    assert bad.returncode == 2
    assert "--array=0-3" in bad.stderr


def test_dry_run_resumes_a_run_directory(fake_node: FakeNode) -> None:
    """When RUN_DIR already holds a run (its config.toml), the job resumes it: --resume,
    no --config or --out."""
    (fake_node.tmp / "run").mkdir()
    (fake_node.tmp / "run" / "config.toml").write_text("seed = 1\n")
    result = _dry(fake_node, CONFIG="/cfg/run.toml")
    assert result.returncode == 0, result.stderr
    soc = _commands(result.stdout)[-1]
    assert soc[:4] == ["soc-async", "run", "--resume", str(fake_node.tmp / "run")]
    assert "--config" not in soc and "--out" not in soc


@pytest.mark.parametrize(
    "settings",
    [
        {"SERVERS": "two"},
        {"NGPUS": "zero"},
        {"SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0,1"},
        {"SLURM_GPUS_ON_NODE": "2", "TP_SIZE": "4"},
        {"PORT": "http"},
        {"MODEL": "org/not-downloaded"},
        {"TP_SIZE": "x"},
    ],
    ids=[
        "unknown-mode",
        "bad-ngpus",
        "too-few-devices",
        "tp-over-gpus",
        "bad-port",
        "model-not-in-cache",
        "bad-tp",
    ],
)
def test_bad_settings_are_refused(fake_node: FakeNode, settings: dict[str, str]) -> None:
    """A setting the job cannot honour ends it with exit code 2 and a message naming it."""
    result = _dry(fake_node, **settings)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error" in result.stderr


# -- end to end on the fake node --------------------------------------------------------------

TARGETS = {"personas": 4, "experiences": 3, "chats": 3}


def _config(tmp_path: Path, seed: int = 11, fixed: int | None = None, **targets: int) -> Path:
    t = {**TARGETS, **targets}
    path = tmp_path / "run.toml"
    path.write_text(
        f"seed = {seed}\n"
        f"[targets]\npersonas = {t['personas']}\nexperiences = {t['experiences']}\n"
        f"chats = {t['chats']}\n"
        "[chat]\nmax_turns = 4\n"
        "[client]\nshutdown_grace_s = 5.0\nmax_retries = 4\nprobe_interval_s = 0.5\n"
        + (f"[concurrency]\nfixed = {fixed}\n" if fixed else "")
    )
    return path


def _free_ports(span: int = 100) -> int:
    """A port p such that p .. p+span-1 are free now (a job's block of ports), below the
    kernel's range of ephemeral ports, which outgoing connections may take at any time."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 32000 - span)
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + span):
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


def _job_env(node: FakeNode, **settings: str) -> dict[str, str]:
    env = _base_env(node)
    env.update(
        FAKE_VLLM_RECORD=str(node.tmp / "servers.log"),
        CONFIG=str(_config(node.tmp)),
        HEALTH_TIMEOUT="60",
        STOP_TIMEOUT="20",
        STAGGER_S="0.2",
        RESTART_DELAY_S="0.5",
    )
    env.update(settings)
    return env


@pytest.fixture
def reap_servers(tmp_path: Path) -> Iterator[None]:
    """After the test, ends any fake engine a failed job left behind (by the pids the
    fake recorded), so a broken stop path fails one test, not the machine."""
    yield
    record = tmp_path / "servers.log"
    if not record.exists():
        return
    for line in record.read_text().splitlines():
        pid = int(line.split()[1].removeprefix("pid="))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _engine_ports(env: dict[str, str], engines: int) -> list[int]:
    return [int(env["PORT"]) + 10 * k for k in range(engines)]


def _run_job(
    env: dict[str, str], tmp_path: Path, engines: int = 8
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SBATCH)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    assert all(_port_closed(p) for p in _engine_ports(env, engines)), "an engine outlived the job"
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
    logs = "".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").glob("*.log")))
    return f"exit {result.returncode}\n{result.stderr[-8000:]}\n--- engine logs ---\n{logs}"


def _starts(tmp_path: Path) -> list[str]:
    return (tmp_path / "servers.log").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
def test_default_layout_job_with_an_engine_dying_mid_run(fake_node: FakeNode) -> None:
    """On 8 fake GPUs with the 28-head model and no TP_SIZE: 8 engines of TP 1 start
    staggered, each on its own device and port. Engine 2 crashes after its third request:
    it is restarted on the same device and port while the others serve on, its
    conversations move, and the run completes with every target met. Executed again on
    other ports (a requeued job), it resumes the same directory with the new engines and
    keeps everything it had."""
    targets = {"personas": 8, "experiences": 8, "chats": 8}
    env = _job_env(
        fake_node,
        FAKE_VLLM_DIE_AFTER="1",
        FAKE_VLLM_DIE_DEVICES="2",
        FAKE_VLLM_DIE_ONCE=str(fake_node.tmp / "deaths"),
        # Slow enough replies that the run outlasts the restart (seconds, not minutes).
        FAKE_VLLM_ARGS="--ttft-s 1.0",
    )
    env["CONFIG"] = str(_config(fake_node.tmp, **targets))
    first = _run_job(env, fake_node.tmp)
    assert first.returncode == 0, _explain(first, fake_node.tmp)
    assert "new run in" in first.stderr
    before = _check_run(fake_node.tmp / "run", targets=targets)
    starts = _starts(fake_node.tmp)
    devices = Counter(line.split()[0] for line in starts)
    assert devices["CUDA_VISIBLE_DEVICES=2"] == 2, starts  # died once, started again
    assert all(devices[f"CUDA_VISIBLE_DEVICES={k}"] == 1 for k in (0, 1, 3, 4, 5, 6, 7))
    assert all("--tensor-parallel-size 1" in s for s in starts)
    assert (fake_node.tmp / "deaths" / "died-2").exists()
    assert "engine down; restarting" in first.stderr + first.stdout
    # Several engines answered: the conversations were spread over the node.
    served = []
    for log in sorted((fake_node.tmp / "logs").glob("vllm-*.log")):
        served += [int(n) for n in re.findall(r"stopped after (\d+) requests", log.read_text())]
    assert sum(1 for n in served if n > 0) >= 2, served

    env.pop("FAKE_VLLM_DIE_AFTER")
    env["PORT"] = str(_free_ports())  # the requeued job gets other ports: the run follows
    second = _run_job(env, fake_node.tmp)
    assert second.returncode == 0, _explain(second, fake_node.tmp)
    assert "resuming" in second.stderr
    assert _ids(before) <= _ids(_check_run(fake_node.tmp / "run", targets=targets))


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
def test_the_job_fails_when_every_engine_is_given_up(fake_node: FakeNode) -> None:
    """Two engines that crash on every request, no restarts allowed: the job stops
    soc-async and exits 1 once none is left, and nothing is left running."""
    env = _job_env(
        fake_node,
        SLURM_GPUS_ON_NODE="2",
        FAKE_VLLM_DIE_AFTER="1",
        MAX_RESTARTS="0",
    )
    result = _run_job(env, fake_node.tmp, engines=2)
    assert result.returncode == 1, _explain(result, fake_node.tmp)
    assert "no engine is left" in result.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
def test_array_tasks_on_engines_merge_into_the_whole_run(fake_node: FakeNode) -> None:
    """Two array tasks, each with two engines (one per GPU) and affinity routing, write
    the disjoint shards 0/2 and 1/2 into RUN_DIR/shard-i; merged, they are the whole run
    with no id twice."""
    shards = []
    for task in (0, 1):
        env = _job_env(
            fake_node,
            SLURM_GPUS_ON_NODE="2",
            SLURM_ARRAY_JOB_ID="4240",
            SLURM_ARRAY_TASK_ID=str(task),
            SLURM_ARRAY_TASK_COUNT="2",
            SLURM_JOB_ID=str(4240 + task + 1),
        )
        result = _run_job(env, fake_node.tmp, engines=2)
        assert result.returncode == 0, _explain(result, fake_node.tmp)
        shards.append(_check_run(fake_node.tmp / "run" / f"shard-{task}", (task, 2)))
    starts = _starts(fake_node.tmp)
    assert (
        sorted(s.split()[0] for s in starts)
        == ["CUDA_VISIBLE_DEVICES=0"] * 2 + ["CUDA_VISIBLE_DEVICES=1"] * 2
    )
    run = fake_node.tmp / "run"
    summary = merge([run / "shard-0", run / "shard-1"], fake_node.tmp / "m")
    assert summary.merged == ["0/2", "1/2"] and summary.missing == []
    merged = _read(fake_node.tmp / "m")
    assert _ids(merged) == _ids(shards[0]) | _ids(shards[1])
    assert not _ids(shards[0]) & _ids(shards[1])
    _check_run(fake_node.tmp / "m")


def _signal_job(
    env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> subprocess.CompletedProcess[str]:
    """Starts the job, sends ``sig`` once a persona is written, returns its result."""
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
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and job.poll() is None:
            if personas.exists() and personas.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before it could be signalled"
        job.send_signal(sig)
        stdout, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()  # the script's EXIT trap does not run: its engines die with the test
            job.communicate()
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM], ids=["USR1", "TERM"])
def test_stop_signal_flushes_and_the_next_execution_finishes(
    fake_node: FakeNode, sig: signal.Signals
) -> None:
    """SIGUSR1 (SLURM's --signal=B:USR1 before the time limit) or SIGTERM to the job
    script stops soc-async with SIGTERM: it flushes and exits 130 and the engines stop;
    after USR1 the job asks `scontrol requeue` for itself, after TERM (scancel) it does
    not. What it wrote is valid; the next execution resumes it to completion without
    writing an id twice."""
    targets = {"personas": 8, "experiences": 6, "chats": 6}
    env = _job_env(fake_node, SLURM_GPUS_ON_NODE="2", FAKE_VLLM_ARGS="--ttft-s 0.4")
    env["CONFIG"] = str(_config(fake_node.tmp, fixed=2, **targets))
    result = _signal_job(env, fake_node.tmp, sig)
    assert result.returncode == 130, _explain(result, fake_node.tmp)
    assert all(_port_closed(p) for p in _engine_ports(env, 2))
    requeues = fake_node.tmp / "scontrol.log"
    if sig == signal.SIGUSR1:
        assert requeues.read_text().split() == ["requeue", "4242"]
    else:
        assert not requeues.exists()
    partial = _read(fake_node.tmp / "run")
    for recs in partial.values():
        assert len({record_id(r) for r in recs}) == len(recs)
    assert len(partial["conversations.jsonl"]) < targets["chats"], "the run was not cut short"

    env.pop("FAKE_VLLM_ARGS")
    again = _run_job(env, fake_node.tmp, engines=2)
    assert again.returncode == 0, _explain(again, fake_node.tmp)
    assert "resuming" in again.stderr
    finished = _check_run(fake_node.tmp / "run", targets=targets)
    assert _ids(partial) <= _ids(finished)


@pytest.mark.slow
@pytest.mark.usefixtures("reap_servers")
def test_requeues_are_capped(fake_node: FakeNode) -> None:
    """A job SLURM has already restarted MAX_REQUEUES times flushes on USR1 but does not
    requeue itself again; it says so and how to resume."""
    env = _job_env(
        fake_node,
        SLURM_GPUS_ON_NODE="1",
        FAKE_VLLM_ARGS="--ttft-s 0.4",
        MAX_REQUEUES="2",
        SLURM_RESTART_COUNT="2",
    )
    env["CONFIG"] = str(_config(fake_node.tmp, fixed=2, personas=8, experiences=6, chats=6))
    result = _signal_job(env, fake_node.tmp, signal.SIGUSR1)
    assert result.returncode == 130, _explain(result, fake_node.tmp)
    assert not (fake_node.tmp / "scontrol.log").exists()
    assert "not requeued: already requeued 2 times (MAX_REQUEUES=2)" in result.stderr


# -- VLLM_ARGS and CONTAINER, each once refused by the real job ------------------------------


def test_vllm_args_leave_the_plan_a_dry_run(fake_node: FakeNode) -> None:
    """VLLM_ARGS go after `--` to vLLM; the plan's --dry-run stays soc-async serve's own, so
    DRY_RUN=1 starts no engine and every engine line carries the user's flags. Before, the
    plan ran `serve ... -- --max-model-len 8192 --dry-run`: vLLM started and refused
    --dry-run, and the job exited at the plan step."""
    result = _dry(
        fake_node, VLLM_ARGS="--max-model-len 8192", FAKE_VLLM_RECORD=str(fake_node.tmp / "s.log")
    )
    assert result.returncode == 0, result.stderr
    assert not (fake_node.tmp / "s.log").exists(), "the dry run started vLLM"
    engines = [line for line in result.stdout.splitlines() if "CUDA_VISIBLE_DEVICES=" in line]
    assert len(engines) == 8 and all("--max-model-len 8192" in e for e in engines)
    serve, _ = _commands(result.stdout)
    assert serve[-3:] == ["--", "--max-model-len", "8192"] and "--dry-run" not in serve


def _container_env(node: FakeNode, **settings: str) -> dict[str, str]:
    image = node.tmp / "soc-async.sif"
    image.write_bytes(b"SIF")
    fresh = node.tmp / "scratch"
    return {
        "CONTAINER": str(image),
        "RUN_DIR": str(fresh / "runs" / "r1"),
        "LOG_DIR": str(fresh / "logs"),
        **settings,
    }


def test_container_dry_run_binds_what_the_job_will_create(fake_node: FakeNode) -> None:
    """CONTAINER= with LOG_DIR and the run directory's parent not created yet: the dry run
    (through the stand-in apptainer, which refuses a missing bind source as Apptainer
    does) plans without creating them, and the commands it prints bind them all. Before,
    the binds named directories made only later and the plan died with exit 255."""
    env = _container_env(fake_node)
    result = _dry(fake_node, **env)
    assert result.returncode == 0, result.stderr
    serve, soc = _commands(result.stdout)
    assert serve[:3] == ["apptainer", "exec", "--nv"]
    binds = [serve[i + 1] for i, word in enumerate(serve) if word == "--bind"]
    fresh = fake_node.tmp / "scratch"
    assert str(fresh / "logs") in binds and str(fresh / "runs") in binds
    assert soc[: soc.index(env["CONTAINER"]) + 1] == serve[: serve.index(env["CONTAINER"]) + 1]
    assert not fresh.exists()


def test_the_stand_in_apptainer_brings_the_gpus_only_with_nv(fake_node: FakeNode) -> None:
    """Apptainer's rule that the driver comes in only with --nv: without it nvidia-smi
    cannot reach a driver (exit 9) and vLLM finds none; with it the node's 8 GPUs show."""
    image = fake_node.tmp / "img.sif"
    image.write_bytes(b"SIF")
    env = {**fake_node.env, "CUDA_VISIBLE_DEVICES": "0"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    plain = run("apptainer", "exec", str(image), "nvidia-smi", "-L")
    assert plain.returncode == 9 and "couldn't communicate with the NVIDIA driver" in plain.stdout
    fake_node.model(MODEL)
    engine = run("apptainer", "exec", str(image), "vllm", "serve", MODEL, "--port", "0")
    assert engine.returncode == 1 and "Found no NVIDIA driver" in engine.stderr
    gpus = run("apptainer", "exec", "--nv", str(image), "nvidia-smi", "-L")
    assert gpus.returncode == 0 and len(gpus.stdout.splitlines()) == 8


def test_the_stand_in_apptainer_refuses_a_missing_bind_source(fake_node: FakeNode) -> None:
    """Apptainer's rule, in its words: a bind whose source does not exist stops the
    container before the command runs, exit 255; an existing one runs the command."""
    image = fake_node.tmp / "img.sif"
    image.write_bytes(b"SIF")
    missing = fake_node.tmp / "not-yet"
    argv = ["apptainer", "exec", "--nv", "--bind", str(missing), str(image), "true"]
    refused = subprocess.run(argv, env=fake_node.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 255
    assert f"mount source {missing} doesn't exist" in refused.stderr
    missing.mkdir()
    ran = subprocess.run(argv, env=fake_node.env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr


def _docker_runs(text: str) -> list[list[str]]:
    """The `docker run ...` commands of a text (continued lines joined, `#` dropped)."""
    joined = re.sub(r"\\\n\s*#?\s*", " ", text)
    lines = [re.sub(r"^\s*#\s*", "", line) for line in joined.splitlines()]
    return [shlex.split(line.strip()) for line in lines if line.strip().startswith("docker run")]


def test_the_docker_examples_publish_every_engine_port(fake_node: FakeNode) -> None:
    """Inside a Docker container 127.0.0.1 is the container's own: each `docker run ...
    serve` example binds the engines to all addresses and publishes, on the host's
    loopback, every port soc-async serve gives 8 engines by default (which the dry run
    of serve prints); before, the docs' example published none."""
    fake_node.model(MODEL)
    plan = subprocess.run(
        [*shlex.split("soc-async serve --dry-run --host 0.0.0.0 --model"), MODEL],
        env={**fake_node.env, "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    ports = [int(p) for p in re.findall(r"--port (\d+)", plan.stdout)]
    assert len(ports) == 8
    examples = [
        *_docker_runs((ROOT / "docs" / "deploy.md").read_text()),
        *_docker_runs((ROOT / "deploy" / "docker" / "Dockerfile").read_text()),
    ]
    serving = [argv for argv in examples if "serve" in argv]
    assert len(serving) == 2
    for argv in serving:
        assert _after(argv, "--host") == "0.0.0.0", argv
        host, first, last = re.fullmatch(r"([\d.]+):(\d+)-(\d+):\2-\3", _after(argv, "-p")).groups()
        assert host == "127.0.0.1" and all(int(first) <= p <= int(last) for p in ports), argv


def test_vllms_engine_wait_follows_the_health_timeout(fake_node: FakeNode) -> None:
    """vLLM gives up on its engine after VLLM_ENGINE_READY_TIMEOUT_S (600 s by default)
    whatever soc-async waits: the job passes HEALTH_TIMEOUT on, unless the user set it."""
    result = _dry(fake_node, HEALTH_TIMEOUT="2400")
    assert result.returncode == 0, result.stderr
    assert "# VLLM_ENGINE_READY_TIMEOUT_S=2400 " in result.stdout
    mine = _dry(fake_node, HEALTH_TIMEOUT="2400", VLLM_ENGINE_READY_TIMEOUT_S="900")
    assert "# VLLM_ENGINE_READY_TIMEOUT_S=900 " in mine.stdout
