"""A real one-node SLURM cluster on this machine, for the tests of deploy/slurm.

Debian's ``slurm-wlm`` and ``munge``: a private ``munged`` (its own key and socket),
``slurmctld`` and ``slurmd`` on 127.0.0.1 with ports of their own, all state, logs and
configuration in one directory, so nothing of the machine's own setup is read or
changed. The node is shaped like an 8xH100 node as SLURM sees one: 8 GPUs as GRES
(``gres.conf`` names character devices the fixture creates, so SLURM's gpu plugin
allocates them and sets ``CUDA_VISIBLE_DEVICES`` as on a real node), 96 CPUs and the
memory of a node sold as 1 TB (900 GiB offered to jobs). ``SlurmdParameters=
config_overrides`` lets the node declare what it does not have; everything else
(allocation, signals, requeue, arrays, dependencies, time limits) is SLURM's own.

Two settings only shorten SLURM's waits, without changing what it does:
``cred_expire=5`` (a requeued job becomes eligible again after the credential lifetime,
120 s by default, 5 s at least) and ``sched_interval=1`` with ``bf_interval=1`` (how
often pending jobs are looked at).

Starting daemons needs root (they run as root here, and jobs run as root); the tests
that use the cluster are skipped, with the reason, only where the packages are missing or
this is not root; scripts/test.sh installs the packages as it installs chromium.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from factories import free_port

NODE = "socnode"
GPUS = 8
CPUS = 96
MEMORY_MIB = 921_600  # 900 GiB: what a "1 TB" node (953,674 MiB) offers jobs
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "scancel", "squeue", "sinfo")

_FIELD = re.compile(r"(\w+)=(\S*)")


class ClusterUnavailable(RuntimeError):
    """Why a cluster cannot run here: the packages are missing, or this is not root (who
    alone can install them and start the daemons). Any other failure to start is an
    error, not a reason to skip."""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing_packages() -> list[str]:
    """The commands of slurm-wlm and munge that are not installed."""
    return [name for name in DAEMONS + CLIENTS if _which(name) is None]


class SlurmCluster:
    """The running cluster: its configuration file and helpers over SLURM's commands."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.jobcomp = root / "log" / "jobcomp.txt"
        self._pids: list[tuple[str, Path]] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, wait until the node
        is idle. Raises :class:`ClusterUnavailable` where the packages or root are missing,
        RuntimeError (with the daemons' logs) when the cluster fails to start."""
        missing = missing_packages()
        if missing:
            raise ClusterUnavailable(f"slurm-wlm/munge not installed (missing {missing})")
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd and munged needs root")
        root = self.root
        for sub in ("state", "spool", "log", "dev", "munge"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(GPUS):
            dev = root / "dev" / f"nvidia{i}"
            # A character device (the null device's numbers): SLURM's gpu plugin takes a
            # GPU's index from its device file and sets CUDA_VISIBLE_DEVICES from it. Where
            # mknod is not allowed, plain files: SLURM still counts and allocates the GPUs
            # but sets no CUDA_VISIBLE_DEVICES, and the job numbers them 0..n-1 itself.
            try:
                os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            except PermissionError:
                dev.touch()
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = root / "munge" / "munge.socket"
        self._spawn(
            "munged",
            [
                _which("munged") or "munged",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={root / 'munge' / 'munged.pid'}",
                f"--log-file={root / 'log' / 'munged.log'}",
                f"--seed-file={root / 'munge' / 'seed'}",
            ],
            root / "munge" / "munged.pid",
        )
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            _slurm_conf(root, host=host, sock=sock, ports=(free_port(), free_port()))
        )
        (root / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={NODE} Name=gpu File={root / 'dev'}/nvidia[0-{GPUS - 1}]\n"
        )
        # The cgroup plugin slurmd loads at start (none of it is used: proctrack/linuxproc
        # and task/none track and bind nothing through cgroups).
        (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")
        self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-i"], root / "slurmctld.pid")
        self._spawn("slurmd", [_which("slurmd") or "slurmd", "-N", NODE], root / "slurmd.pid")
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = out.stdout.strip()
            if out.returncode == 0 and state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle (state {state!r})\n{self.logs()}")

    def _spawn(self, name: str, argv: list[str], pidfile: Path) -> None:
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(
                f"{name} did not start (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}\n{self.logs()}"
            )
        self._pids.append((name, pidfile))

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this cluster started (by their pid files)."""
        if self.conf.exists():
            self.run("scancel", "--full", "--signal=KILL", "--user=root", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                queue = self.run("squeue", "-h", "-o", "%i", check=False)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name, pidfile in reversed(self._pids):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)  # still up after 10 s
            del name
        self._pids.clear()

    def logs(self, tail: int = 3000) -> str:
        """The end of every daemon's log, to explain a failure."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # -- SLURM's commands -----------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """What a client of this cluster needs in its environment."""
        return {"SLURM_CONF": str(self.conf)}

    def run(
        self, *argv: str, env: Mapping[str, str] | None = None, check: bool = True, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        """A SLURM command against this cluster (``SLURM_CONF`` set)."""
        full = {**(env if env is not None else os.environ), **self.env}
        result = subprocess.run(
            [_which(argv[0]) or argv[0], *argv[1:]],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            **kw,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """``scontrol show job`` of a job (one dict per array task), [] once forgotten."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if out.returncode != 0:
            return []
        return [dict(_FIELD.findall(line)) for line in out.stdout.splitlines() if line.strip()]

    def job(self, job_id: str) -> dict[str, str]:
        (info,) = self.jobs(job_id)
        return info

    def wait(
        self, job_id: str, *, timeout_s: float = 120.0, until: str = "ended"
    ) -> list[dict[str, str]]:
        """Waits until every task of ``job_id`` has ended (``until="ended"``) or is running
        (``"running"``); returns their records. On timeout, fails with what SLURM says."""
        deadline = time.monotonic() + timeout_s
        infos: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            infos = self.jobs(job_id)
            states = [i.get("JobState", "") for i in infos]
            if infos and until == "ended" and all(s not in _LIVE for s in states):
                return infos
            if infos and until == "running" and all(s == "RUNNING" for s in states):
                return infos
            time.sleep(0.5)
        summary = [
            {k: i.get(k) for k in ("JobId", "JobState", "Reason", "ExitCode", "Restarts")}
            for i in infos
        ]
        raise AssertionError(
            f"job {job_id} not {until} after {timeout_s:.0f}s: {summary}\n{self.logs()}"
        )


_LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED", "RESIZING"}


def _slurm_conf(root: Path, *, host: str, sock: Path, ports: tuple[int, int]) -> str:
    return f"""\
ClusterName=socasync
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock},cred_expire=5
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root / "log" / "jobcomp.txt"}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=10
GresTypes=gpu
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={CPUS} \
RealMemory={MEMORY_MIB} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=gpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[SlurmCluster]:
    """A started cluster in ``root``, stopped on exit (also when starting failed)."""
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
