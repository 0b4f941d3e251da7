"""A real ``soc-async annotate`` server in a child process, for the annotate tests.

The server is the command users run (``python -m soc_async.cli annotate``), on a free
port of 127.0.0.1, so a test can kill it (SIGKILL: no clean shutdown) and start it again
on the same port, as a crash and a restart would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import free_port

import soc_async

SRC = str(Path(soc_async.__file__).resolve().parents[1])


class Server:
    """One annotate server process; ``start()`` again after ``kill()`` restarts it."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.run_dir = run_dir
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []

    def start(self) -> Server:
        self.stop()  # a restart: the killed process's pipe is closed first
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "soc_async.cli", "annotate", str(self.run_dir)]
        cmd += [*self.args, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"annotate exited: {''.join(self.lines)}")
            self.lines.append(line)
            found = re.search(r"open (http://\S+)", line)
            if found:
                self.url = found.group(1)
                return self
        raise AssertionError(f"annotate did not start: {''.join(self.lines)}")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@pytest.fixture
def annotate_server() -> Iterator[type[Server]]:
    """``annotate_server(run_dir, *args).start()``; every one started is stopped."""
    made: list[Server] = []

    class Tracked(Server):
        def __init__(self, run_dir: Path, *args: str) -> None:
            super().__init__(run_dir, *args)
            made.append(self)

    yield Tracked
    for server in made:
        server.stop()
