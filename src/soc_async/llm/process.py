"""Process groups: a child started in a session of its own is signalled and waited for
as a whole, and dies with soc-async.

vLLM's server is a tree of processes (API server, engine core, model workers); stopping
only the child would leave the workers holding the GPU and the port, so everything goes
to the group, and "stopped" means no live process is left in it (zombies excepted).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "die_with_parent",
    "group_alive",
    "prepare_die_with_parent",
    "signal_group",
    "stop_group",
]


def stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to ``proc``'s whole group (``proc`` leads it: start_new_session), SIGKILL
    after ``grace_s``; returns once no live process of the group is left."""
    pgid = proc.pid
    if group_alive(pgid):
        signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while group_alive(pgid, reap=proc) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(pgid, reap=proc):
            signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while group_alive(pgid, reap=proc) and time.monotonic() < deadline:
                time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int, reap: subprocess.Popen[bytes] | None = None) -> bool:
    """True while a live (not zombie) process remains in group ``pgid``."""
    if reap is not None:
        reap.poll()  # our own child becomes a zombie until we reap it
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; fields resume after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's own symbols include libc's; no library search (which runs ldconfig).
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    # If soc-async itself is killed (SIGKILL, OOM), the server gets SIGTERM instead of
    # running on as an orphan holding the port and the memory. Runs in the child between
    # fork and exec, so _prctl() was already loaded by the parent.
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def prepare_die_with_parent() -> None:
    """Load libc's prctl in the parent, so that :func:`die_with_parent`, run in the child
    between fork and exec, does as little as it can."""
    _prctl()
