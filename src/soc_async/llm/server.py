"""A managed vLLM server: started as a child process, healthy or a clear error, stopped whole.

vLLM's OpenAI server is a tree of processes (the API server, its engine core, the model
workers). The child is started in a session and process group of its own so that

- Ctrl-C in the terminal reaches soc-async alone, which then stops the server in order
  instead of racing it;
- stopping signals the whole group, workers included, and nothing is left behind.

Readiness is vLLM's own ``GET /health``; a child that exits first, or a timeout, becomes a
:class:`~soc_async.errors.ServerStartError` carrying the end of the server's log, which is
where vLLM explains itself. The API key travels in the child's environment
(``VLLM_API_KEY``), never on its command line: a command line is readable by every user
of the machine and gets printed in logs.

vLLM is started as ``vllm serve MODEL`` (its documented entry point) wherever the
``vllm`` command works; vLLM's CPU build installs that command under another
distribution name, where it fails, so there it is ``python -m
vllm.entrypoints.openai.api_server --model MODEL`` (docs/notes-vllm.md).

The CPU default serves the embedded model (see :mod:`soc_async.llm.embedded`); the flags
chosen for it are measured in docs/notes-vllm.md. Every managed server, CPU or GPU,
writes no access or request log lines and takes its sampling from the request alone
(``--generation-config vllm``: the run's config wins over the model's
generation_config).
"""

from __future__ import annotations

import errno
import importlib.metadata
import importlib.util
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import msgspec

from soc_async.errors import InputError, ServerStartError
from soc_async.llm.process import die_with_parent, prepare_die_with_parent, stop_group

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_LINES = 30
# Every managed server: no line per request in its log (uvicorn's access log; vLLM's
# request log, off by default since 0.10 and said so here), the run's sampling settings
# rather than the model's generation_config, cached-token counts in every reply's usage
# (the prefix-cache figures), and the request's priority honoured (chats nearer their end
# first). Flags checked against vLLM 0.32's parsers (tests/llm/test_vllm_parser.py).
QUIET_ARGS: tuple[str, ...] = (
    "--disable-uvicorn-access-log",
    "--no-enable-log-requests",
    "--generation-config",
    "vllm",
    "--enable-prompt-tokens-details",
    "--scheduling-policy",
    "priority",
)
# Flags for the embedded model on vLLM's CPU build (docs/notes-vllm.md has the figures):
# eager mode starts in ~45 s instead of ~150-200 s, because the CPU build's compile cache
# fails to reload and would recompile on every start, and it is no slower here; the
# model's own context is 8192 tokens; priority scheduling and cached-token counts work on
# the CPU build as on GPUs; the access log would grow a line per request.
CPU_DEFAULT_ARGS: tuple[str, ...] = (
    "--enforce-eager",
    "--max-model-len",
    "8192",
    *QUIET_ARGS,
)
_SECRET_FLAGS = ("--api-key",)
_REDACTED = "***"


class ServerSpec(msgspec.Struct, kw_only=True):
    """Everything needed to start one vLLM server.

    Log it by ``repr`` (the key and secret flags redacted), never by msgspec encoding.
    """

    model: str  # a model name or path, as vLLM's --model takes it
    host: str = "127.0.0.1"  # loopback unless told otherwise: the API has no auth by default
    port: int = 0  # 0: a free port picked at start
    extra_args: list[str] = []  # more vLLM flags, after ours, so they win
    api_key: str | None = None  # given to vLLM by environment, never on the command line
    cpu: bool = False  # vLLM's CPU build: sets VLLM_CPU_KVCACHE_SPACE
    kvcache_gib: int = 4  # KV cache of the CPU build, in GiB
    startup_timeout_s: float = 900.0
    log_path: str | None = None  # None: a new file in the temp directory
    # How vLLM is started; empty: `vllm serve` (GPU build) or this Python with ``-m
    # vllm.entrypoints.openai.api_server`` (CPU build, whose `vllm` command fails).
    launcher: list[str] = []
    env: dict[str, str] = {}  # more environment: devices, internal ports, cache dirs

    def __repr__(self) -> str:
        # The key must not reach a log through a repr (msgspec.to_builtins still has it).
        parts = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "api_key" and value is not None:
                value = _REDACTED
            elif name == "extra_args":
                value = redact(value)
            parts.append(f"{name}={value!r}")
        return f"ServerSpec({', '.join(parts)})"


def has_gpu() -> bool:
    """True when an NVIDIA driver is present: decides which extra an error names.

    Cheap on purpose (no torch import, which takes seconds and may be the CPU build).
    """
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()


def vllm_available() -> bool:
    """True when this Python can import vLLM (without importing it: that takes seconds)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def _distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def default_launcher(*, cpu: bool = False) -> list[str]:
    """How vLLM is started here: ``vllm serve`` when that command works, else the module.

    The ``vllm`` command works when it belongs to vLLM's own distribution (the GPU
    build, or a container's) or lives elsewhere than this Python's scripts (another
    installation, a wrapper); vLLM's CPU build installs one beside this Python that
    fails, so there, and for ``cpu``, this Python runs the server module. InputError
    with the install command when there is no vLLM at all.
    """
    scripts = Path(sysconfig.get_path("scripts"))
    if not cpu:
        found = shutil.which("vllm")
        if found and (Path(found).parent != scripts or _distribution("vllm")):
            return [found, "serve"]
        if _distribution("vllm") and (scripts / "vllm").exists():
            return [str(scripts / "vllm"), "serve"]
    if vllm_available():
        return [sys.executable, "-m", VLLM_MODULE]
    raise InputError(f"vLLM is not installed in this Python; {install_hint()}")


def install_hint() -> str:
    """The command that installs vLLM for this machine, for error messages."""
    if has_gpu():
        return "pip install 'soc-async[gpu]'"
    return "pip install 'soc-async[cpu]' (or run scripts/setup.sh)"


def default_cpu_spec(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    kvcache_gib: int = 4,
    extra_args: Sequence[str] = (),
    api_key: str | None = None,
    startup_timeout_s: float = 900.0,
    log_path: str | None = None,
    cache: Path | None = None,
) -> ServerSpec:
    """The embedded SmolLM2-135M-Instruct on vLLM's CPU build, converted first if needed.

    The conversion (about 30 s, once) happens here rather than in the server so that a
    missing package is an input error before any process starts.
    """
    from soc_async.llm import embedded

    path = embedded.prepare_model(cache)
    return ServerSpec(
        model=str(path),
        host=host,
        port=port,
        extra_args=[*CPU_DEFAULT_ARGS, "--served-model-name", embedded.SERVED_NAME, *extra_args],
        api_key=api_key,
        cpu=True,
        kvcache_gib=kvcache_gib,
        startup_timeout_s=startup_timeout_s,
        log_path=log_path,
    )


def redact(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of every secret flag replaced, for printing and logging."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(_REDACTED)
            hide_next = False
        elif arg in _SECRET_FLAGS:
            out.append(arg)
            hide_next = True
        elif arg.startswith(tuple(f"{flag}=" for flag in _SECRET_FLAGS)):
            out.append(arg.split("=", 1)[0] + "=" + _REDACTED)
        else:
            out.append(arg)
    return out


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux: 32768-60999).

    A server listening inside it can find its port taken by any client socket of the
    node (the engines' own, NCCL's, the client's thousands), so engines listen below.
    """
    try:
        low, high = (int(v) for v in Path(path).read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def pick_free_port(host: str = "127.0.0.1", *, block: int = 1, step: int = 1) -> int:
    """A port free on ``host`` now, below the ephemeral range (another process could
    still take it before vLLM does); with ``block`` > 1, ``port + k * step`` free for
    every k < block. The search starts at a random place so that parallel callers spread.
    """
    low = 1024
    high = min(ephemeral_ports()[0], 65536) - (block - 1) * step
    if high <= low:
        raise InputError(f"{block} ports {step} apart do not fit below the ephemeral range")
    start = low + int.from_bytes(os.urandom(4), "little") % (high - low)
    for i in range(high - low):
        base = low + (start - low + i) % (high - low)
        if all(_bindable(host, base + k * step) for k in range(block)):
            return base
    raise InputError(f"found no free block of {block} ports on {host} below {high}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def check_port_free(host: str, port: int) -> None:
    """Raises InputError naming the port when something already listens on it."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # As uvicorn does: a port held only by connections in TIME_WAIT is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(
                    f"port {port} on {host} is already in use; choose another port "
                    "(or 0 for a free one) or stop what listens there"
                ) from exc
            raise InputError(f"cannot bind {host}:{port}: {exc.strerror}") from exc


class ManagedServer:
    """One vLLM server process group: ``with ManagedServer(spec) as server: ...``.

    Or by hand: :meth:`start`, :meth:`wait_ready`, :meth:`stop` (always call stop, which
    is safe to call more than once).
    """

    def __init__(self, spec: ServerSpec, *, stop_grace_s: float = 20.0) -> None:
        self.spec = spec
        self.stop_grace_s = stop_grace_s
        self._port = spec.port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path = Path(spec.log_path) if spec.log_path else None

    # -- what it is -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port vLLM listens on (the picked one when the spec said 0, once started)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The URL clients use, e.g. ``http://127.0.0.1:8000`` (no ``/v1``)."""
        return f"http://{_client_host(self.spec.host)}:{self._port}"

    @property
    def log_path(self) -> Path | None:
        """The server's combined stdout and stderr (None before start)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The API server's pid, which is also its process group id."""
        return self._proc.pid if self._proc is not None else None

    @property
    def priority_scheduling(self) -> bool:
        """True when the server schedules by the request's ``priority`` field."""
        return flag_value(self.spec.extra_args, "--scheduling-policy") == "priority"

    def command(self) -> list[str]:
        """The argv that starts the server. Carries no API key (that goes by environment).

        ``vllm serve MODEL ...`` takes the model first; the module style ``--model``.
        """
        launcher = self.spec.launcher or default_launcher(cpu=self.spec.cpu)
        model = [self.spec.model] if launcher[-1] == "serve" else ["--model", self.spec.model]
        return [
            *launcher,
            *model,
            "--host",
            self.spec.host,
            "--port",
            str(self._port),
            *self.spec.extra_args,
        ]

    def printable_command(self) -> str:
        """:meth:`command` as one shell line, secrets in pass-through flags redacted."""
        return shlex.join(redact(self.command()))

    def environment(self) -> dict[str, str]:
        """The child's environment: ours, plus what vLLM reads from its environment."""
        env = dict(os.environ)
        env.update(self.spec.env)
        if self.spec.cpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.spec.kvcache_gib)
        if self.spec.api_key:
            env["VLLM_API_KEY"] = self.spec.api_key
        # vLLM reports usage to its authors by default; a dataset job has no business
        # calling out, and on offline nodes the attempt only adds noise to the log.
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("VLLM_DO_NOT_TRACK", "1")
        # vLLM gives its engine core VLLM_ENGINE_READY_TIMEOUT_S (600 s by default) to
        # load, and fails the start after it whatever our own timeout says: a 70B model
        # read from a parallel file system takes longer. Ours is the one the user set.
        ready = math.ceil(self.spec.startup_timeout_s)
        given = env.get("VLLM_ENGINE_READY_TIMEOUT_S", "")
        if not (given.isdigit() and int(given) >= ready):
            env["VLLM_ENGINE_READY_TIMEOUT_S"] = str(ready)
        return env

    # -- lifecycle --------------------------------------------------------------------

    def check(self) -> None:
        """The checks :meth:`start` makes before anything runs: the model path, a vLLM to
        start. InputError when one fails."""
        self._check_model()
        self.command()

    def start(self) -> None:
        """Checks the inputs and starts the process; returns without waiting for health."""
        if self._proc is not None:
            raise RuntimeError("this server was already started")
        self._check_model()
        if self._port == 0:
            self._port = pick_free_port(self.spec.host)
        else:
            check_port_free(self.spec.host, self._port)
        command = self.command()  # InputError when there is no vLLM to start
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="soc-async-vllm-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        shown = " ".join(f"{k}={v}" for k, v in self.spec.env.items())
        line = f"# soc-async starts: {shown + ' ' if shown else ''}{self.printable_command()}\n"
        self._log.write(line.encode())
        self._log.flush()
        prepare_die_with_parent()
        try:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                # Only from the main thread: the kernel sends the signal when the thread
                # that forked exits, which for a worker thread is long before soc-async.
                preexec_fn=die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
            )
        except OSError as exc:
            self._close_log()
            raise ServerStartError(
                f"could not run {shlex.join(redact(self.command()[:1]))}: {exc.strerror}"
            ) from exc

    @property
    def returncode(self) -> int | None:
        """The API server's exit code once it has exited, else None."""
        return self._proc.poll() if self._proc is not None else None

    def alive(self) -> bool:
        """True while the server process runs."""
        return self._proc is not None and self._proc.poll() is None

    def ready(self) -> bool:
        """One look: True when the server answers ``/health`` with 200 now."""
        return self._proc is not None and _healthy(self.base_url + "/health")

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Polls ``/health`` until it answers 200; raises ServerStartError otherwise.

        On failure the process group is stopped before raising, so the caller has
        nothing to clean up.
        """
        if self._proc is None:
            raise RuntimeError("start() the server first")
        limit = self.spec.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        url = self.base_url + "/health"
        while True:
            code = self._proc.poll()
            if code is not None:
                self.stop()
                raise ServerStartError(
                    f"vLLM exited with code {code} before it was ready (log: {self._log_path})",
                    self.log_tail(),
                )
            if _healthy(url):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"vLLM was not ready after {limit:g} s (log: {self._log_path})",
                    self.log_tail(),
                )
            time.sleep(0.5)

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace_s``; waits for both."""
        proc = self._proc
        if proc is None:
            return
        grace = self.stop_grace_s if grace_s is None else grace_s
        try:
            stop_group(proc, grace)
        finally:
            self._close_log()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, where vLLM says why it failed."""
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()[-256 * 1024 :]
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        # Progress bars redraw with carriage returns; keep what the last redraw shows.
        rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
        return "\n".join(row for row in rows[-lines:])

    def __enter__(self) -> ManagedServer:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------

    def _check_model(self) -> None:
        model = self.spec.model
        if not model:
            raise InputError("no model given for the vLLM server")
        path = Path(model).expanduser()
        if path.exists():
            if path.is_dir() and not (path / "config.json").exists():
                raise InputError(f"model directory {model} has no config.json")
            return
        # "org/name" is a hub id that vLLM downloads; anything else shaped like a path
        # and missing is a typo better caught now than after vLLM's start-up.
        if model.startswith(("/", ".", "~")) or model.count("/") > 1:
            raise InputError(f"model path {model} does not exist")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def flag_value(args: Sequence[str], flag: str) -> str | None:
    # argparse keeps the last occurrence, so the last one here is what vLLM uses.
    value: str | None = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _client_host(host: str) -> str:
    # A server bound to every address is reached through loopback from here.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# No proxy for health checks: a proxy from the environment cannot reach our loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _OPENER.open(url, timeout=2.0) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
