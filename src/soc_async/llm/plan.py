"""From a ``[server]`` section to the vLLM servers to start: layout, ports, environment.

:func:`plan_engines` reads the node (GPUs, the model's config.json; llm/node.py), lets
:func:`~soc_async.llm.layout.plan_layout` choose or check the layout, and gives each
engine its :class:`~soc_async.llm.server.ServerSpec`:

- its own devices (``CUDA_VISIBLE_DEVICES``);
- its own port, ``port + k * PORT_STEP``, and vLLM's internal ports from the next one up
  (``VLLM_PORT``), so engines starting side by side never race for the same free port;
- its own compile caches (``VLLM_CACHE_ROOT``, TorchInductor's and Triton's), kept from
  one start to the next, so concurrent starts never write one cache at once;
- the batch size it is started with (``--max-num-seqs``: vLLM's own default for these
  GPUs unless the extra arguments set it), which the client takes as its in-flight bound;
- the quiet, run-driven flags of :data:`~soc_async.llm.server.QUIET_ARGS`.

Without GPUs (or with the embedded model) it is the single CPU server of before.
Everything that cannot start is refused here, before any process exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from soc_async import logs
from soc_async.config import ServerConfig
from soc_async.errors import InputError
from soc_async.llm import node
from soc_async.llm.layout import GpuSet, Layout, LayoutError, default_max_num_seqs, plan_layout
from soc_async.llm.server import (
    QUIET_ARGS,
    ManagedServer,
    ServerSpec,
    check_port_free,
    default_cpu_spec,
    ephemeral_ports,
    flag_value,
    has_gpu,
    pick_free_port,
)

__all__ = [
    "ENGINE_SITE",
    "PORT_STEP",
    "EnginePlan",
    "EngineSpec",
    "grammar_env",
    "job_cpus",
    "plan_engines",
]

log = logs.get("plan")

PORT_STEP = 10  # engine k listens on port + 10k; vLLM's internal ports start at +1
ENGINE_SITE = Path(__file__).resolve().parent / "engine_site"


class EngineSpec(msgspec.Struct, kw_only=True):
    """One server to start and what the client should know of it."""

    spec: ServerSpec
    gpus: str = ""  # its CUDA_VISIBLE_DEVICES ("" on CPU)
    max_num_seqs: int | None = None  # the batch of the whole endpoint (x data-parallel)
    priority: bool = False  # --scheduling-policy priority

    @property
    def url(self) -> str:
        host = self.spec.host
        client = "127.0.0.1" if host in ("", "0.0.0.0") else host
        return f"http://{client}:{self.spec.port}"


class EnginePlan(msgspec.Struct, kw_only=True):
    """The servers of a job, and the layout they come from (None on CPU)."""

    model: str
    engines: list[EngineSpec]
    layout: Layout | None = None
    gpus: GpuSet | None = None

    def describe(self) -> str:
        """One line: the layout and why."""
        if self.layout is None:
            return f"{self.model}: one server on the CPU"
        lay = self.layout
        idle = f"; GPUs {','.join(lay.idle)} idle" if lay.idle else ""
        where = "behind one port (vLLM data parallel)" if lay.dp_mode == "vllm" else "ports"
        ports = ", ".join(str(e.spec.port) for e in self.engines)
        return (
            f"{self.model}: {lay.engines} engine(s) of tensor-parallel size {lay.tp} on "
            f"{len(self.gpus.ids) if self.gpus else 0} GPU(s), {where} {ports} "
            f"({lay.reason}){idle}"
        )


def _checked(plan: EnginePlan) -> EnginePlan:
    """``plan`` once every server in it could start (model path, a vLLM to run)."""
    for engine in plan.engines:
        ManagedServer(engine.spec).check()
    return plan


def plan_engines(
    server: ServerConfig,
    *,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    gpus: GpuSet | None = None,
    dp_mode: Literal["engines", "vllm"] = "engines",
    log_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    tag: str = "",
    env: Mapping[str, str] | None = None,
) -> EnginePlan:
    """The servers for ``server``; raises InputError (a LayoutError, a busy port) before
    anything starts. ``gpus`` None: the visible ones (none without nvidia-smi)."""
    env = os.environ if env is None else env
    # Ours before the config's extra arguments, so that those still win.
    kv = ["--kv-cache-dtype", server.kv_cache_dtype] if server.kv_cache_dtype != "auto" else []
    if not server.model:
        spec = default_cpu_spec(
            host=host,
            port=server.port,
            kvcache_gib=server.kvcache_gib,
            extra_args=[*kv, *server.extra_args],
            api_key=api_key,
            startup_timeout_s=server.startup_timeout_s,
            log_path=_log(log_dir, tag, 0),
        )
        spec.port = spec.port or pick_free_port(host)  # below the ephemeral range
        return _checked(EnginePlan(model="embedded", engines=[_cpu_engine(spec)]))
    if gpus is None:
        gpus = node.visible_gpus(env=env) if has_gpu() else GpuSet(ids=())
    if not gpus.ids:
        spec = ServerSpec(
            model=server.model,
            host=host,
            port=server.port or pick_free_port(host),
            extra_args=[*QUIET_ARGS, *kv, *server.extra_args],
            api_key=api_key,
            cpu=True,
            kvcache_gib=server.kvcache_gib,
            startup_timeout_s=server.startup_timeout_s,
            log_path=_log(log_dir, tag, 0),
            launcher=list(server.command),
        )
        return _checked(EnginePlan(model=server.model, engines=[_cpu_engine(spec)]))
    shape = node.model_shape(server.model, env)
    if shape is None and server.tensor_parallel is None:
        raise LayoutError(
            f"{server.model} is neither a checkpoint directory nor in the Hugging Face cache "
            f"{node.hf_hub_cache(env)}, so its config.json cannot be read to choose a layout: "
            f"download it first (hf download {server.model}, with the job's HF_HOME) or give "
            "the tensor-parallel size"
        )
    layout = plan_layout(
        shape, gpus, tp=server.tensor_parallel, engines=server.engines, dp_mode=dp_mode
    )
    servers = 1 if dp_mode == "vllm" else layout.engines
    ports = _ports(host, server.port, servers)
    given = flag_value(server.extra_args, "--max-num-seqs")
    batch = int(given) if given and given.isdigit() else default_max_num_seqs(gpus)
    caches = Path(cache_dir) if cache_dir else _cache_root(env)
    # The job's CPUs shared by its servers (the client's share is small: one event loop).
    grammar = grammar_env(job_cpus(env) // servers, env)
    engines = []
    for k in range(servers):
        if dp_mode == "vllm":
            devices = ",".join(d for group in layout.groups for d in group)
            parallel = ["--data-parallel-size", str(layout.engines)]
            endpoint_batch = batch * layout.engines
        else:
            devices = ",".join(layout.groups[k])
            parallel = []
            endpoint_batch = batch
        args = ["--tensor-parallel-size", str(layout.tp), *parallel]
        if given is None:
            args += ["--max-num-seqs", str(batch)]
        args += [*QUIET_ARGS, *kv, *server.extra_args]
        cache = caches / f"engine-{k}"
        spec = ServerSpec(
            model=server.model,
            host=host,
            port=ports[k],
            extra_args=args,
            api_key=api_key,
            startup_timeout_s=server.startup_timeout_s,
            log_path=_log(log_dir, tag, k),
            launcher=list(server.command),
            env={
                "CUDA_VISIBLE_DEVICES": devices,
                "VLLM_PORT": str(ports[k] + 1),
                "VLLM_CACHE_ROOT": str(cache),
                "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
                "TRITON_CACHE_DIR": str(cache / "triton"),
                **grammar,
            },
        )
        engines.append(
            EngineSpec(
                spec=spec,
                gpus=devices,
                max_num_seqs=endpoint_batch,
                priority=flag_value(args, "--scheduling-policy") == "priority",
            )
        )
    return _checked(EnginePlan(model=server.model, engines=engines, layout=layout, gpus=gpus))


def _cpu_engine(spec: ServerSpec) -> EngineSpec:
    return EngineSpec(
        spec=spec,
        max_num_seqs=None,
        priority=flag_value(spec.extra_args, "--scheduling-policy") == "priority",
    )


def _log(log_dir: str | os.PathLike[str] | None, tag: str, k: int) -> str | None:
    if log_dir is None:
        return None
    name = f"vllm-{tag}-{k}.log" if tag else f"vllm-{k}.log"
    return str(Path(log_dir) / name)


def _cache_root(env: Mapping[str, str]) -> Path:
    base = env.get("VLLM_CACHE_ROOT") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vllm"
    )
    return Path(base).expanduser() / "soc-async"


def _ports(host: str, first: int, count: int) -> list[int]:
    """``first + k * PORT_STEP`` for each engine, every one free now; with ``first`` 0, a
    free block below the ephemeral range found here. InputError naming a port that is
    taken; a warning for a block that reaches into the ephemeral range."""
    if first == 0:
        base = pick_free_port(host, block=count, step=PORT_STEP)
        return [base + k * PORT_STEP for k in range(count)]
    ports = [first + k * PORT_STEP for k in range(count)]
    if ports[-1] >= 65536:
        raise InputError(f"port {first}: {count} engines need ports up to {ports[-1]}")
    low, high = ephemeral_ports()
    if ports[-1] + PORT_STEP - 1 >= low and first <= high:
        log.warning(
            "engine ports reach into the kernel's ephemeral range: any outgoing connection "
            "of the node may take one before vLLM binds it; choose a port below it",
            ports=f"{first}-{ports[-1] + PORT_STEP - 1}",
            ephemeral=f"{low}-{high}",
        )
    for port in ports:
        check_port_free(host, port)
    return ports


def job_cpus(env: Mapping[str, str]) -> int:
    """The CPUs this job may use: SLURM's count for the node when set, else this
    process's affinity (what cgroups and taskset leave), not the node's total."""
    given = env.get("SLURM_CPUS_ON_NODE", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def grammar_env(cpus: int, env: Mapping[str, str]) -> dict[str, str]:
    """What bounds one engine's structured-output thread pools to ``cpus``.

    vLLM 0.32 sizes them from ``multiprocessing.cpu_count()`` (half the node's CPUs for
    grammar compilation, up to 8 for bitmask filling: v1/structured_output/__init__.py);
    on a 224-thread node 8 engines would start 8 x 112 compiler threads in a job given
    64 CPUs. The hook in soc_async/llm/engine_site (a ``sitecustomize`` the engine's
    Python imports at start) makes that one call answer ``cpus``; ``os.cpu_count()``
    stays the node's (vLLM sizes NVML's CPU-affinity masks with it).
    """
    path = [str(ENGINE_SITE), *filter(None, [env.get("PYTHONPATH", "")])]
    return {"SOC_ASYNC_ENGINE_CPUS": str(max(1, cpus)), "PYTHONPATH": os.pathsep.join(path)}
