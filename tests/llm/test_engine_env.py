"""What a managed engine's environment carries beyond devices and caches: vLLM's own
engine-ready timeout from ours, ports below the kernel's ephemeral range, and the job's
CPU share for vLLM's grammar thread pools (checked in a real child Python)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeNode

from soc_async.config import ServerConfig
from soc_async.llm import server as server_mod
from soc_async.llm.plan import ENGINE_SITE, PORT_STEP, job_cpus, plan_engines
from soc_async.llm.server import ManagedServer, ServerSpec, ephemeral_ports, pick_free_port

ROOT = Path(__file__).resolve().parents[2]


def test_vllms_engine_ready_timeout_follows_the_startup_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """vLLM's VLLM_ENGINE_READY_TIMEOUT_S (600 s) would stop a 30-minute load whatever
    --startup-timeout says; the engine gets ours, rounded up, unless one larger is set."""
    monkeypatch.delenv("VLLM_ENGINE_READY_TIMEOUT_S", raising=False)
    env = ManagedServer(ServerSpec(model="m", startup_timeout_s=1800.5)).environment()
    assert env["VLLM_ENGINE_READY_TIMEOUT_S"] == "1801"
    monkeypatch.setenv("VLLM_ENGINE_READY_TIMEOUT_S", "7200")
    env = ManagedServer(ServerSpec(model="m", startup_timeout_s=1800)).environment()
    assert env["VLLM_ENGINE_READY_TIMEOUT_S"] == "7200"
    monkeypatch.setenv("VLLM_ENGINE_READY_TIMEOUT_S", "600")
    env = ManagedServer(ServerSpec(model="m", startup_timeout_s=1800)).environment()
    assert env["VLLM_ENGINE_READY_TIMEOUT_S"] == "1800"


def test_picked_engine_ports_lie_below_the_ephemeral_range(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 0: a free block of 8 ports, 10 apart, all below the kernel's
    ip_local_port_range, where no outgoing connection can take one first."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    low, _ = ephemeral_ports()
    for _ in range(5):
        plan = plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", port=0))
        ports = [e.spec.port for e in plan.engines]
        assert ports == [ports[0] + PORT_STEP * k for k in range(8)]
        assert ports[0] >= 1024 and ports[-1] + PORT_STEP <= low
    assert pick_free_port() < low


def test_the_ephemeral_range_is_the_kernels(tmp_path: Path) -> None:
    given = tmp_path / "range"
    given.write_text("40000\t50000\n")
    assert ephemeral_ports(str(given)) == (40000, 50000)
    assert ephemeral_ports(str(tmp_path / "missing")) == (32768, 60999)


def test_the_sbatch_port_formula_stays_below_the_ephemeral_range() -> None:
    """Every job id gives a first port whose 8 engines (10 apart, vLLM's internal ports
    just above) end below 32768."""
    line = next(
        row
        for row in (ROOT / "deploy/slurm/soc-async.sbatch").read_text().splitlines()
        if row.startswith("PORT=")
    )
    for job in (0, 1, 119, 120, 399, 12345678, 99999999):
        port = subprocess.run(
            ["bash", "-c", f"{line}\necho $PORT"],
            env={"SLURM_JOB_ID": str(job), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert int(port) >= 1024 and int(port) + 8 * PORT_STEP <= 32768, (job, port)


def test_job_cpus_come_from_slurm_then_the_affinity() -> None:
    assert job_cpus({"SLURM_CPUS_ON_NODE": "64"}) == 64
    import os

    assert job_cpus({}) == len(os.sched_getaffinity(0))


def test_grammar_pools_are_sized_from_the_jobs_cpus_in_the_engine(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job of 64 CPUs on the 8-engine layout: each engine's Python sees 8 CPUs where
    vLLM sizes its grammar pools (multiprocessing.cpu_count()), and the node's count in
    os.cpu_count(). Run in a real child with the engine's own environment."""
    fake_node.apply(monkeypatch)
    fake_node.model()
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "64")
    plan = plan_engines(ServerConfig(model="Qwen/Qwen2.5-7B-Instruct", port=0))
    env = ManagedServer(plan.engines[0].spec).environment()
    assert env["SOC_ASYNC_ENGINE_CPUS"] == "8"
    assert env["PYTHONPATH"].split(":")[0] == str(ENGINE_SITE)
    probe = "import multiprocessing as m, os; print(m.cpu_count(), os.cpu_count())"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    seen, node_count = map(int, out.stdout.split())
    assert seen == 8
    assert node_count == __import__("os").cpu_count()


def test_the_engine_hook_chains_to_the_sitecustomize_it_shadows(tmp_path: Path) -> None:
    other = tmp_path / "site"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['SHADOWED'] = 'ran'\n")
    env = {"PYTHONPATH": f"{ENGINE_SITE}:{other}", "SOC_ASYNC_ENGINE_CPUS": "3"}
    probe = (
        "import multiprocessing, os; print(multiprocessing.cpu_count(), os.environ.get('SHADOWED'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["3", "ran"]


def test_vllm_sizes_its_grammar_pools_where_the_hook_bounds_them() -> None:
    """The installed vLLM still sizes both structured-output pools from
    multiprocessing.cpu_count() (a vLLM that moved to os.cpu_count or a setting would
    make the hook useless: this fails then)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vLLM is not installed: pip install 'soc-async[cpu]'")
    source = (Path(spec.origin).parent / "v1/structured_output/__init__.py").read_text()
    pools = re.findall(r"max_workers = (.+)\n\s+self\.(executor\w*) = ThreadPoolExecutor", source)
    assert {name for _, name in pools} == {"executor", "executor_for_fillmask"}
    assert all("multiprocessing.cpu_count()" in size for size, _ in pools)
    assert server_mod.vllm_available()
