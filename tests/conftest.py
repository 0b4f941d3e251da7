"""Fixtures shared across the test suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from soc_async.testing.fake_server import FakeConfig, FakeServer

FakeServerFactory = Callable[..., Awaitable[FakeServer]]


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServerFactory]:
    """A factory of started fake vLLM servers, all stopped when the test ends.

    ``await fake_server(reply=fn, ttft_s=0.05, p_503=0.1)``: keyword arguments other
    than ``reply`` and ``config`` are FakeConfig fields.
    """
    servers: list[FakeServer] = []

    async def make(
        config: FakeConfig | None = None, *, reply: Any = None, **fields: Any
    ) -> FakeServer:
        server = FakeServer(config or FakeConfig(**fields), reply=reply)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()
