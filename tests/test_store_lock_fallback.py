"""The run directory's lock where the file system has no flock (Lustre without -o flock,
some NFS and FUSE mounts answer ENOSYS, EOPNOTSUPP or ENOLCK): a lock file of its own
kind (O_EXCL, "pid host"), a warning naming the risk, and the same one-line refusal."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from soc_async.errors import RunDirError
from soc_async.store import RunDir, RunIdentity
from soc_async.store.rundir import EXCL_LOCK

SEED = 11


def new_run(path: Path) -> RunDir:
    return RunDir.create(path, "seed = 11\n", RunIdentity.new(SEED))


@pytest.fixture(params=[errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK])
def no_flock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    code = int(request.param)

    def refuse(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refuse)
    return code


def test_without_flock_a_lock_file_stands_in_with_a_warning(tmp_path: Path, no_flock: int) -> None:
    """The run goes on (it used to crash on the OSError), the lock file names this
    process and host, the warning names the risk, and closing the run removes it."""
    with capture_logs() as logs:
        run = new_run(tmp_path / "run")
    lock = run.path / EXCL_LOCK
    assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert "no flock" in warning["event"] and "leaves behind" in warning["event"]
    assert warning["lock_file"] == str(lock)
    again = RunDir.open(run.path)  # the same process shares its lock, as with flock
    again.release()
    assert lock.exists()
    run.release()
    assert not lock.exists()


def test_without_flock_a_live_holder_is_refused_by_name(tmp_path: Path, no_flock: int) -> None:
    run = new_run(tmp_path / "run")
    run.release()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run.path / EXCL_LOCK).write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(RunDirError, match=rf"in use by process {holder.pid} on "):
            RunDir.open(run.path)
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone from this host: the file is stale and taken over.
    RunDir.open(run.path).release()
    assert not (run.path / EXCL_LOCK).exists()


def test_without_flock_another_hosts_lock_is_refused_naming_the_file(
    tmp_path: Path, no_flock: int
) -> None:
    run = new_run(tmp_path / "run")
    run.release()
    (run.path / EXCL_LOCK).write_text("4242 gpu-node-17\n")
    with pytest.raises(RunDirError) as caught:
        RunDir.open(run.path)
    message = str(caught.value)
    assert "process 4242 on gpu-node-17" in message and EXCL_LOCK in message
    assert "\n" not in message


def test_another_flock_error_is_a_run_dir_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, operation: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(RunDirError, match="cannot lock"):
        new_run(tmp_path / "run")
