"""The deploy scripts parse, pass shellcheck, say how to launch and dry-run, and their
dry runs print the commands they would run without touching anything."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_BIN = ROOT / "tests" / "deploy" / "bin"
FAKES = sorted(FAKE_BIN.iterdir())


def _scripts() -> list[Path]:
    found = sorted(
        p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.suffix in {".sh", ".sbatch"}
    )
    return [*found, *FAKES]


SCRIPTS = _scripts()
IDS = [str(p.relative_to(ROOT)) for p in SCRIPTS]


def test_every_kind_of_script_is_found() -> None:
    """The list the lint tests run over holds the sbatch scripts, the local server
    scripts, the smoke script and the fake node's commands, so a script cannot drop out
    of linting unnoticed."""
    names = {p.name for p in SCRIPTS}
    expected = {
        "soc-async.sbatch",
        "merge.sbatch",
        "submit-array.sh",
        "serve-cpu.sh",
        "serve-gpu.sh",
        "smoke-gpu.sh",
        "vllm",
        "nvidia-smi",
        "hf",
    }
    assert expected <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_bash_parses(script: Path) -> None:
    """`bash -n` reads every script without a syntax error."""
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("shellcheck is missing in CI: the CI script must install it")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); CI installs it")
    return path


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_shellcheck_is_clean(script: Path) -> None:
    """shellcheck reports nothing, infos included, for every script (as bash)."""
    result = subprocess.run(
        [_shellcheck(), "--shell=bash", "--severity=info", str(script)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_header_says_how_to_launch_and_dry_run(script: Path) -> None:
    """Each script starts with a bash shebang and a header comment naming how to launch
    it and how to dry-run it (or, for the fake node's commands, how they are used)."""
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = "\n".join(line for line in lines[1:40] if line.startswith("#"))
    if script in FAKES:
        assert "PATH=tests/deploy/bin" in header
    else:
        assert "Launch" in header and "Dry-run" in header and "DRY_RUN=1" in header


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.suffix == ".sh" or p in FAKES], ids=str)
def test_directly_run_scripts_are_executable(script: Path) -> None:
    """Scripts meant to be run by path (and the fake node's commands, found on PATH)
    carry the executable bit."""
    assert os.access(script, os.X_OK)


def _dry(script: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_"))}
    return subprocess.run(
        ["bash", str(ROOT / script), *args],
        env={**base, "DRY_RUN": "1", "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_local_server_dry_runs_print_the_serve_command(tmp_path: Path) -> None:
    """The local scripts wrap `soc-async serve`: the CPU one with no model (the embedded
    one), the GPU one with the model, the endpoints file, a tensor-parallel size only
    when given (else serve's layout decides); extra arguments go after `--` to vLLM.
    Nothing is started or written."""
    cpu = _dry("deploy/local/serve-cpu.sh", tmp_path, "--max-model-len", "2048", PORT="8123")
    assert cpu.returncode == 0, cpu.stderr
    assert "soc-async serve --host 127.0.0.1 --port 8123 -- --max-model-len 2048" in cpu.stdout
    assert "--model" not in cpu.stdout
    gpu = _dry(
        "deploy/local/serve-gpu.sh",
        tmp_path,
        "--enforce-eager",
        MODEL="org/m",
        CUDA_VISIBLE_DEVICES="2,3",
    )
    assert gpu.returncode == 0, gpu.stderr
    assert (
        "soc-async serve --model org/m --host 127.0.0.1 --port 8000 --endpoints-file "
        "engines.json -- --enforce-eager" in gpu.stdout
    )
    given = _dry("deploy/local/serve-gpu.sh", tmp_path, MODEL="org/m", TP_SIZE="2")
    assert "--endpoints-file engines.json --tp 2" in given.stdout
    smoke = _dry("deploy/smoke-gpu.sh", tmp_path, MODEL="org/m", OUT="/o", VLLM_ARGS="--x 1")
    assert smoke.returncode == 0, smoke.stderr
    assert "soc-async smoke --model org/m --out /o --chats 50 -- --x 1" in smoke.stdout
    assert list(tmp_path.iterdir()) == []


def test_merge_job_dry_run_names_every_shard(tmp_path: Path) -> None:
    """merge.sbatch merges every shard-* directory of RUN_DIR into RUN_DIR/merged, and
    refuses (exit 2) a RUN_DIR without shards."""
    run = tmp_path / "run"
    for i in range(3):
        (run / f"shard-{i}").mkdir(parents=True)
    result = _dry("deploy/slurm/merge.sbatch", tmp_path, RUN_DIR=str(run))
    assert result.returncode == 0, result.stderr
    shards = " ".join(str(run / f"shard-{i}") for i in range(3))
    assert f"soc-async merge {shards} --out {run / 'merged'}" in result.stdout
    empty = _dry("deploy/slurm/merge.sbatch", tmp_path, RUN_DIR=str(tmp_path / "none"))
    assert empty.returncode == 2


def test_array_submission_dry_run_chains_the_merge_on_the_same_account(tmp_path: Path) -> None:
    """submit-array.sh submits SHARDS array tasks of the GPU job and a merge job that
    depends on the whole array and keeps the array's partition, account and QOS (in
    every spelling sbatch takes), but not its GPU requests; without SHARDS it refuses."""
    result = _dry(
        "deploy/slurm/submit-array.sh",
        tmp_path,
        "-p",
        "gpu",
        "-A",
        "proj",
        "--qos=high",
        "--gpus-per-node=4",
        SHARDS="4",
        RUN_DIR="runs/r",
        MERGE_ARGS="--time 01:00:00",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "sbatch --parsable --array=0-3 --export=ALL -p gpu -A proj --qos=high --gpus-per-node=4 "
    )
    assert lines[0].endswith("deploy/slurm/soc-async.sbatch")
    assert lines[1].startswith(
        "sbatch --parsable --export=ALL -p gpu -A proj --qos=high --time 01:00:00 "
        "--dependency=afterany:"
    )
    assert "gpus" not in lines[1]
    assert lines[1].endswith("deploy/slurm/merge.sbatch")
    joined = _dry(
        "deploy/slurm/submit-array.sh",
        tmp_path,
        "--partition=gpu",
        "-Aproj",
        SHARDS="2",
        RUN_DIR="runs/r",
    )
    assert "--export=ALL --partition=gpu -Aproj --dependency" in joined.stdout.splitlines()[1]
    missing = _dry("deploy/slurm/submit-array.sh", tmp_path, RUN_DIR="r")
    assert missing.returncode != 0


def test_the_smoke_examples_ask_only_for_one_gpus_resources() -> None:
    """The GPU job asks for CPUs and memory per GPU (no --mem=0, the whole node), so
    `sbatch --gpus-per-node=1` asks for one GPU's share; the smoke script asks for one."""
    job = (ROOT / "deploy/slurm/soc-async.sbatch").read_text()
    assert "#SBATCH --mem=0" not in job and "#SBATCH --cpus-per-task" not in job
    assert "#SBATCH --cpus-per-gpu=" in job and "#SBATCH --mem-per-gpu=" in job
    smoke = (ROOT / "deploy/smoke-gpu.sh").read_text()
    assert "#SBATCH --gpus-per-node=1" in smoke and "#SBATCH --mem=" not in smoke
    deploy = (ROOT / "docs/deploy.md").read_text()
    assert "--mem=0" not in deploy


def test_the_container_pins_vllm_inside_the_gpu_extras_range() -> None:
    """The image's vLLM tag lies in the `gpu` extra's range, and the image sets no
    HF_HOME (under Apptainer it would hide the job's cache)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    tag = re.search(r"ARG VLLM_IMAGE=vllm/vllm-openai:v([\d.]+)", dockerfile)
    assert tag is not None
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["gpu"]
    (requirement,) = extra
    assert requirement.startswith("vllm")
    assert tag.group(1) in SpecifierSet(requirement.removeprefix("vllm"))
    assert "HF_HOME" not in re.sub(r"#.*", "", dockerfile)
