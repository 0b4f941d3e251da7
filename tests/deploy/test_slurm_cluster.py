"""deploy/slurm through a real SLURM cluster (tests/deploy/slurm_cluster.py): real
``sbatch``, GRES allocation, signals, requeue, job arrays, dependencies and time limits.

The jobs run the project's fake GPU node (tests/deploy/bin: the fake ``vllm``,
``nvidia-smi`` and a stand-in ``apptainer``), so no GPU is needed; everything between
the submission and the job script is SLURM's. The cluster is started once per session
and torn down after; where slurm-wlm or munge cannot be installed the tests are skipped
with the reason.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import FakeNode
from slurm_cluster import ClusterUnavailable, SlurmCluster, running_cluster
from test_sbatch import MODEL, _check_run, _config, _free_ports, _ids, _read

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "deploy" / "slurm"
SBATCH = SLURM / "soc-async.sbatch"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
# Two personas per shard of 3 at least: experiences need two personas to choose from.
TARGETS = {"personas": 6, "experiences": 3, "chats": 3}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    root = tmp_path_factory.mktemp("slurm")
    try:
        with running_cluster(root) as started:
            yield started
    except ClusterUnavailable as exc:
        pytest.skip(f"no SLURM cluster here: {exc}")


# A stand-in `vllm serve` that replies slowly in chosen executions of a job, so that a
# signal reliably lands mid-run; the others reply at full speed. SLOW_WHEN: "first" (the
# job's first execution, before any requeue) or "task:N" (array task N).
SLOW_VLLM = """#!/bin/sh
case "${SLOW_WHEN:-}" in
  first) [ "${SLURM_RESTART_COUNT:-0}" = 0 ] && export FAKE_VLLM_ARGS="$SLOW_ARGS" ;;
  task:*) [ "${SLURM_ARRAY_TASK_ID:-}" = "${SLOW_WHEN#task:}" ] &&
    export FAKE_VLLM_ARGS="$SLOW_ARGS" ;;
esac
exec vllm "$@"
"""


def _job_env(node: FakeNode, cluster: SlurmCluster, **settings: str) -> dict[str, str]:
    """The submitting shell's environment: the fake node on PATH, this cluster's
    SLURM_CONF, the job's settings; sbatch passes it all on (--export=ALL)."""
    node.model(MODEL)
    slow = node.tmp / "slow-vllm"
    slow.write_text(SLOW_VLLM)
    slow.chmod(0o755)
    env = dict(node.env)
    env.update(cluster.env)
    env.update(
        RUN_DIR=str(node.tmp / "run"),
        LOG_DIR=str(node.tmp / "logs"),
        CONFIG=str(_config(node.tmp, fixed=2, **TARGETS)),
        MODEL=MODEL,
        PORT=str(_free_ports()),
        VLLM_CMD=f"{slow} serve",
        FAKE_VLLM_RECORD=str(node.tmp / "servers.log"),
        HEALTH_TIMEOUT="60",
        STOP_TIMEOUT="20",
        STAGGER_S="0.2",
        RESTART_DELAY_S="0.5",
        SLOW_ARGS="--ttft-s 1.0",
    )
    env.update(settings)
    return env


def _sbatch(cluster: SlurmCluster, env: dict[str, str], cwd: Path, *flags: str) -> str:
    out = cluster.run("sbatch", "--parsable", *flags, str(SBATCH), env=env, cwd=cwd)
    return out.stdout.strip().split(";")[0]


def _output(job: dict[str, str]) -> str:
    """The job's output file (the script's %x-%j.out in the submit directory)."""
    path = Path(job["StdOut"])
    return path.read_text(errors="replace") if path.exists() else f"(no {path})"


def _explain(infos: list[dict[str, str]]) -> str:
    parts = [f"{i.get('JobId')} {i.get('JobState')} {i.get('ExitCode')}" for i in infos]
    outputs = "\n".join(_output(i)[-4000:] for i in infos)
    return "\n".join(parts) + "\n" + outputs


def _wait_for_records(path: Path, lines: int = 1, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing written to {path} in {timeout_s:.0f}s")


# -- the job's requests against SLURM's rules ---------------------------------------------


def test_the_jobs_request_fits_an_8_gpu_node_of_1_tb(
    cluster: SlurmCluster, fake_node: FakeNode
) -> None:
    """sbatch --test-only checks a request against the node as SLURM knows it (8 GPUs,
    96 CPUs, 900 GiB offered of a "1 TB" node): the job's own #SBATCH lines fit; 120 G per
    GPU, as they asked before, is refused, so the node is the one that refused it."""
    env = {**fake_node.env, **cluster.env}
    fits = cluster.run(
        "sbatch", "--test-only", str(SBATCH), env=env, cwd=fake_node.tmp, check=False
    )
    assert fits.returncode == 0 and "to start at" in fits.stderr, fits.stderr
    old = cluster.run(
        "sbatch", "--test-only", "--mem-per-gpu=120G", str(SBATCH), env=env, cwd=fake_node.tmp,
        check=False,
    )  # fmt: skip
    assert old.returncode != 0
    assert "Requested node configuration is not available" in old.stderr


# -- whole jobs ----------------------------------------------------------------------------


def test_an_8_gpu_job_with_vllm_args_runs_to_completion(
    cluster: SlurmCluster, fake_node: FakeNode
) -> None:
    """The job as shipped (8 GPUs from SLURM's GRES) with VLLM_ARGS: SLURM hands it
    CUDA_VISIBLE_DEVICES 0-7, 8 engines start, one per device, each with the user's vLLM
    flags, and the run completes with every target met. Before the fix the plan step
    passed --dry-run to vLLM after `--` and the job exited 1 at once."""
    env = _job_env(fake_node, cluster, VLLM_ARGS="--max-model-len 8192", SLOW_WHEN="")
    job_id = _sbatch(cluster, env, fake_node.tmp)
    (info,) = cluster.wait(job_id, timeout_s=180)
    assert info["JobState"] == "COMPLETED", _explain([info])
    _check_run(fake_node.tmp / "run", targets=TARGETS)
    starts = (fake_node.tmp / "servers.log").read_text().splitlines()
    assert sorted(s.split()[0] for s in starts) == [f"CUDA_VISIBLE_DEVICES={g}" for g in range(8)]
    assert all(s.endswith("--max-model-len 8192") for s in starts), starts
    assert "--dry-run" not in "".join(starts)


class Background(NamedTuple):
    """Jobs submitted together once the 8-GPU test is done, so that their waits (SLURM's
    30 s time-limit period, requeues, dependencies) overlap; each test then checks one."""

    time_limited: tuple[str, Path]
    usr1: tuple[str, Path]
    array: tuple[str, str, Path]
    exhausted: tuple[str, str, Path]
    container: tuple[str, Path]


def _submit_array(
    cluster: SlurmCluster, env: dict[str, str], cwd: Path, *flags: str
) -> tuple[str, str]:
    # No PORT: each task takes the block of ports its own job id gives it, as on a cluster
    # (one PORT for all would make the tasks sharing this node collide).
    env = {k: v for k, v in env.items() if k != "PORT"}
    out = cluster.run("bash", str(SLURM / "submit-array.sh"), *flags, env=env, cwd=cwd)
    words = out.stdout.split()
    return words[words.index("array") + 2], words[words.index("merge") + 2].rstrip(";")


@pytest.fixture(scope="module")
def background(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Background:
    """Submits, one GPU per task (the node's 8):

    - time_limited: --time=2 with --signal=B:USR1@60. SLURM handles time limits
      periodically and may send the warning up to 60 s early (its sbatch manual); here
      it comes 30 to 60 s after the start. Its first execution replies slowly (never done by
      then); the requeued one at full speed, done long before its own warning.
    - usr1: a job whose first execution replies slowly (its test sends it USR1 mid-run).
    - array: submit-array.sh with SHARDS=3 and its merge job.
    - exhausted: SHARDS=2 with MAX_REQUEUES=0, task 1 replying so slowly (20 s a reply)
      that it is still running whenever its test comes to send it USR1.
    - container: CONTAINER= with the stand-in apptainer, LOG_DIR and the run directory's
      parent not created yet.
    """
    nodes = {
        name: FakeNode(tmp_path_factory.mktemp(name))
        for name in ("time-limit", "usr1", "array", "exhausted", "container")
    }
    node = nodes["time-limit"]
    env = _job_env(node, cluster, SLOW_WHEN="first", SLOW_ARGS="--ttft-s 5.0")
    flags = ("--time=2", "--signal=B:USR1@60", "--gpus-per-node=1")
    time_limited = (_sbatch(cluster, env, node.tmp, *flags), node.tmp)

    node = nodes["usr1"]
    env = _job_env(node, cluster, SLOW_WHEN="first", SLOW_ARGS="--ttft-s 5.0")
    usr1 = (_sbatch(cluster, env, node.tmp, "--gpus-per-node=1"), node.tmp)

    node = nodes["array"]
    env = _job_env(node, cluster, SHARDS="3", SLOW_WHEN="")
    array = (*_submit_array(cluster, env, node.tmp, "--gpus-per-node=1"), node.tmp)

    node = nodes["exhausted"]
    env = _job_env(
        node, cluster, SHARDS="2", MAX_REQUEUES="0", SLOW_WHEN="task:1", SLOW_ARGS="--ttft-s 20"
    )
    exhausted = (*_submit_array(cluster, env, node.tmp, "--gpus-per-node=1"), node.tmp)

    node = nodes["container"]
    image = node.tmp / "soc-async.sif"
    image.write_bytes(b"SIF")
    fresh = node.tmp / "scratch"
    env = _job_env(
        node,
        cluster,
        CONTAINER=str(image),
        RUN_DIR=str(fresh / "runs" / "r1"),
        LOG_DIR=str(fresh / "logs"),
        SLOW_WHEN="",
    )
    container = (_sbatch(cluster, env, node.tmp, "--gpus-per-node=1"), node.tmp)
    return Background(time_limited, usr1, array, exhausted, container)


def test_usr1_drains_requeues_and_resumes_the_same_run(
    cluster: SlurmCluster, background: Background
) -> None:
    """`scancel --signal=USR1 --batch` mid-run: the job flushes what is finished, stops its
    engines and requeues itself through scontrol; SLURM starts it again
    (SLURM_RESTART_COUNT=1) and it resumes the same run directory to completion. Every
    record written before the requeue is still there, none twice."""
    job_id, tmp = background.usr1
    _wait_for_records(tmp / "run" / "personas.jsonl")
    cluster.run("scancel", "--signal=USR1", "--batch", job_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the requeued job, pending again before it restarts
        info = cluster.job(job_id)
        if info.get("Restarts") == "1" and info["JobState"] != "RUNNING":
            break
        time.sleep(0.2)
    partial = _read(tmp / "run")
    (info,) = cluster.wait(job_id, timeout_s=180)
    output = _output(info)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", output
    assert "received SIGUSR1" in output and "requeueing job" in output
    assert "resuming" in output
    assert len(partial["conversations.jsonl"]) < TARGETS["chats"], "the run was not cut short"
    finished = _check_run(tmp / "run", targets=TARGETS)
    assert _ids(partial) <= _ids(finished)


def test_a_task_out_of_requeues_ends_the_merge_with_an_error(
    cluster: SlurmCluster, background: Background
) -> None:
    """Task 1 of 2 gets USR1 with MAX_REQUEUES=0: it flushes and ends without requeueing
    (FAILED, exit 130). The merge job still starts (afterany) and ends with an error naming
    shard-1, instead of pending forever in DependencyNeverSatisfied as with afterok;
    ALLOW_PARTIAL=1 then merges what there is."""
    array, merge, tmp = background.exhausted
    _wait_for_records(tmp / "run" / "shard-1" / "personas.jsonl")
    cluster.run("scancel", "--signal=USR1", "--batch", f"{array}_1")
    tasks = cluster.wait(array, timeout_s=180)
    states = {t["ArrayTaskId"]: (t["JobState"], t["ExitCode"]) for t in tasks}
    assert states == {"0": ("COMPLETED", "0:0"), "1": ("FAILED", "130:0")}, _explain(tasks)
    task1 = next(t for t in tasks if t["ArrayTaskId"] == "1")
    assert "not requeued: already requeued 0 times (MAX_REQUEUES=0)" in _output(task1)
    (info,) = cluster.wait(merge, timeout_s=60)
    output = _output(info)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0", output
    assert "not every shard finished its run: shard-1 (finished, interrupted)" in output
    assert not (tmp / "run" / "merged").exists()
    # ALLOW_PARTIAL=1 merges what there is, saying which shard is short.
    partial = subprocess.run(
        ["bash", str(SLURM / "merge.sbatch")],
        env={**FakeNode(tmp).env, "RUN_DIR": str(tmp / "run"), "ALLOW_PARTIAL": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert partial.returncode == 0, partial.stderr
    assert "merging shards that did not finish: shard-1 (finished, interrupted)" in partial.stderr
    assert (tmp / "run" / "merged" / "merge.json").exists()


def test_an_array_of_3_shards_and_its_merge_end_in_one_dataset(
    cluster: SlurmCluster, background: Background
) -> None:
    """submit-array.sh with SHARDS=3: three tasks on one GPU each write shards 0/3..2/3;
    the merge job, held by its dependency until all have ended, joins them into
    RUN_DIR/merged: the whole run, no id twice."""
    array, merge, tmp = background.array
    tasks = cluster.wait(array, timeout_s=180)
    assert [t["JobState"] for t in tasks] == ["COMPLETED"] * 3, _explain(tasks)
    (merged,) = cluster.wait(merge, timeout_s=120)
    assert merged["JobState"] == "COMPLETED", _explain([merged])
    run = tmp / "run"
    shards = [_check_run(run / f"shard-{i}", (i, 3), TARGETS) for i in range(3)]
    whole = _check_run(run / "merged", targets=TARGETS)
    assert _ids(whole) == _ids(shards[0]) | _ids(shards[1]) | _ids(shards[2])
    assert (run / "merged" / "merge.json").exists()


def test_a_container_job_binds_the_directories_it_creates(
    cluster: SlurmCluster, background: Background
) -> None:
    """CONTAINER= with the stand-in apptainer (which refuses a bind whose source does not
    exist, exit 255, and gives no GPU without --nv): LOG_DIR and the run directory's
    parent do not exist at submission; the job creates them before its first container
    command and runs to completion. Before the fix the first submission failed with
    "mount source ... doesn't exist"."""
    job_id, tmp = background.container
    (info,) = cluster.wait(job_id, timeout_s=180)
    output = _output(info)
    assert info["JobState"] == "COMPLETED", output
    assert "doesn't exist" not in output
    _check_run(tmp / "scratch" / "runs" / "r1", targets=TARGETS)


def test_the_time_limit_signal_requeues_and_the_next_execution_finishes(
    cluster: SlurmCluster, background: Background
) -> None:
    """--time=2 with --signal=B:USR1@60: SLURM's own warning before the limit reaches the
    script, which flushes, requeues itself and exits before the limit kills it; the
    requeued execution resumes and completes the run, nothing written twice."""
    job_id, tmp = background.time_limited
    (info,) = cluster.wait(job_id, timeout_s=240)
    output = _output(info)
    assert info["JobState"] == "COMPLETED", output
    assert info["Restarts"] == "1", output
    assert "received SIGUSR1" in output and "resuming" in output
    assert "DUE TO TIME LIMIT" not in output
    _check_run(tmp / "run", targets=TARGETS)
