"""Fixtures shared across the test suite."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from annotate.annotate_server import annotate_server  # noqa: F401  (the annotate tests' fixture)

import soc_async
from soc_async.testing.fake_node import write_model
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


class FakeNode:
    """A fake GPU node in a test's environment: tests/deploy/bin first on PATH (a fake
    ``nvidia-smi``, ``vllm`` and ``hf``, soc_async/testing/fake_node.py), a Hugging Face
    cache and vLLM cache under the test's tmp_path, and children that import this
    checkout's soc_async."""

    BIN = Path(__file__).resolve().parent / "deploy" / "bin"

    def __init__(self, tmp_path: Path, gpus: int = 8) -> None:
        self.tmp = tmp_path
        self.hub = tmp_path / "hf" / "hub"
        src = str(Path(soc_async.__file__).resolve().parents[1])
        path = os.environ.get("PATH", "")
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_", "FAKE_"))
        }
        self.env.update(
            PATH=f"{self.BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{path}",
            PYTHONPATH=src
            + (os.pathsep + os.environ["PYTHONPATH"] if "PYTHONPATH" in os.environ else ""),
            FAKE_VLLM_PYTHON=sys.executable,
            FAKE_GPUS=str(gpus),
            HF_HOME=str(tmp_path / "hf"),
            HF_HUB_OFFLINE="1",
            VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"),
            HOME=str(tmp_path),
            PYTHONUNBUFFERED="1",
        )

    def model(self, repo: str = "Qwen/Qwen2.5-7B-Instruct", **config: Any) -> Path:
        """``repo`` in the node's Hugging Face cache (a config.json, shaped like the real
        one unless ``config`` gives the dimensions)."""
        return write_model(self.hub, repo, config or None)

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> FakeNode:
        """This process sees the node too (for code under test that runs in-process)."""
        for key in [k for k in os.environ if k.startswith(("SLURM_", "CUDA_", "FAKE_"))]:
            monkeypatch.delenv(key)
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        return self


@pytest.fixture
def fake_node(tmp_path: Path) -> FakeNode:
    """A fake 8-GPU node (H100s) for tests of layouts, engines and deploy scripts."""
    return FakeNode(tmp_path)
