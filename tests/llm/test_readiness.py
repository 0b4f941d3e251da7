"""Waiting for servers that are still starting: /health and the model list, what is
shown while waiting, the timeout, and the endpoints file of `soc-async serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from factories import free_port

from soc_async.errors import InputError, ServerError
from soc_async.llm.readiness import (
    EndpointsFile,
    ServedEngine,
    read_endpoints_file,
    wait_for_endpoints_file,
    wait_until_ready,
)
from soc_async.testing.fake_server import FakeConfig, FakeServer


async def test_ready_servers_are_not_waited_for(fake_server) -> None:
    """Every endpoint answers /health and lists a model: nothing is left, at once."""
    a, b = await fake_server(), await fake_server()
    async with aiohttp.ClientSession() as session:
        assert await wait_until_ready(session, [a.url, b.url], 5.0) == []


async def test_a_server_that_comes_up_later_is_waited_for_and_shown() -> None:
    """A server that starts listening half a second later: the wait reports it (with why
    it is not ready) and ends once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shown: list[dict[str, str]] = []
    server = FakeServer(FakeConfig(port=port))
    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tg:

        async def late() -> None:
            await anyio.sleep(0.5)
            await server.start()

        tg.start_soon(late)
        left = await wait_until_ready(
            session, [url], 10.0, poll_s=0.05, report_s=0.1, on_wait=lambda w, t: shown.append(w)
        )
    await server.stop()
    assert left == []
    assert shown and url in shown[0] and "not listening" in shown[0][url]


async def test_no_server_ready_is_a_server_error_naming_each(fake_server) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerError, match=rf"no server ready after 0\.2 s: {url} \(not"):
            await wait_until_ready(session, [url], 0.2, poll_s=0.05)


async def test_some_ready_at_the_timeout_start_without_the_rest(fake_server) -> None:
    """One answers, one never does: the late one is handed back, no error."""
    up = await fake_server()
    down = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        assert await wait_until_ready(session, [up.url, down], 0.3, poll_s=0.05) == [down]


def test_the_endpoints_file_is_read_and_a_stale_one_ignored(tmp_path: Path) -> None:
    """A file whose serve process runs is read; one whose writer is gone is as good as
    absent; one that is not an endpoints file is an input error naming it."""
    path = tmp_path / "engines.json"
    assert read_endpoints_file(path) is None
    served = EndpointsFile(
        model="m",
        pid=os.getpid(),
        engines=[ServedEngine(url="http://127.0.0.1:8000", max_num_seqs=1024, priority=True)],
    )
    path.write_bytes(msgspec.json.encode(served))
    assert read_endpoints_file(path) == served
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    served.pid = int(gone.stdout)
    path.write_bytes(msgspec.json.encode(served))
    assert read_endpoints_file(path) is None
    path.write_text("not json")
    with pytest.raises(InputError, match=str(path)):
        read_endpoints_file(path)


async def test_waiting_for_the_endpoints_file_times_out_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="--endpoints-file"):
        await wait_for_endpoints_file(tmp_path / "never.json", 0.2, poll_s=0.05)
