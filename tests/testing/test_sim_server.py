"""The simulator over HTTP: vLLM's API, /metrics that agree with the replies, the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from soc_async.llm.metrics import parse_metrics
from soc_async.testing.simulator import PROFILES, SimServer
from soc_async.testing.simulator.server import prompt_of

TINY = PROFILES["tiny"]


def chat(text: str, max_tokens: int = 20, **extra: object) -> dict[str, object]:
    return {
        "model": "sim-tiny",
        "messages": [{"role": "system", "content": "x" * 400}, {"role": "user", "content": text}],
        "max_tokens": max_tokens,
        **extra,
    }


async def test_answers_chat_completions_and_its_metrics_agree() -> None:
    """Replies carry usage; /metrics sums to the same totals; a repeated prompt is served
    from the prefix cache, and the reply says how much."""
    async with SimServer([TINY], time_scale=200.0) as server, aiohttp.ClientSession() as s:
        url = server.urls[0]
        bodies = [chat("hello " * 50 + str(i), ignore_eos=True) for i in range(8)]
        bodies.append(bodies[0])
        replies = []
        for body in bodies:  # one at a time: the last finds the first in the cache
            async with s.post(url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                replies.append(await resp.json())
        async with s.get(url + "/metrics") as resp:
            snap = parse_metrics(await resp.text())
    usage = [r["usage"] for r in replies]
    assert all(u["completion_tokens"] == 20 for u in usage)
    assert snap.generation_tokens == sum(u["completion_tokens"] for u in usage)
    assert snap.prompt_tokens == sum(u["prompt_tokens"] for u in usage)
    assert snap.prefix_cache_hits == sum(u["prompt_tokens_details"]["cached_tokens"] for u in usage)
    assert usage[-1]["prompt_tokens_details"]["cached_tokens"] > 100
    assert replies[0]["choices"][0]["finish_reason"] == "length"


async def test_serves_models_health_version_and_server_info() -> None:
    """The endpoints a client and the bench read, in vLLM's shapes; /server_info has the
    engine's batch size and the simulator's time scale."""
    async with SimServer([TINY], time_scale=50.0) as server, aiohttp.ClientSession() as s:
        url = server.urls[0]
        async with s.get(url + "/v1/models") as resp:
            models = await resp.json()
        async with s.get(url + "/health") as resp:
            assert resp.status == 200
        async with s.get(url + "/version") as resp:
            version = await resp.json()
        async with s.get(url + "/server_info") as resp:
            info = await resp.json()
    assert models["data"][0]["id"] == "sim-tiny"
    assert version["version"] == "simulated (tiny)"
    assert info["vllm_config"]["scheduler_config"]["max_num_seqs"] == TINY.max_num_seqs
    assert info["vllm_config"]["cache_config"]["num_gpu_blocks"] == TINY.num_gpu_blocks
    assert info["simulator"]["time_scale"] == 50.0


async def test_each_engine_has_its_own_port_and_books() -> None:
    """Two engines, two URLs; a request to one shows on its /metrics only."""
    async with SimServer([TINY, TINY], time_scale=200.0) as server, aiohttp.ClientSession() as s:
        a, b = server.urls
        assert a != b
        async with s.post(b + "/v1/chat/completions", json=chat("hi")) as resp:
            assert resp.status == 200
        pages = []
        for url in (a, b):
            async with s.get(url + "/metrics") as resp:
                pages.append(parse_metrics(await resp.text()))
    assert pages[0].generation_tokens == 0 and pages[1].generation_tokens > 0


async def test_time_scale_makes_simulated_seconds_pass_faster() -> None:
    """Simulated time runs time_scale times faster than the loop's clock."""
    async with SimServer([TINY], time_scale=100.0) as server:
        loop = asyncio.get_running_loop()
        t0, s0 = loop.time(), server.cluster.now()
        await asyncio.sleep(0.05)
        ratio = (server.cluster.now() - s0) / (loop.time() - t0)
    assert ratio == pytest.approx(100.0, rel=0.01)


async def test_refuses_a_prompt_longer_than_the_model() -> None:
    """A prompt over max_model_len gets vLLM's 400, not a hang."""
    async with SimServer([TINY], time_scale=100.0) as server, aiohttp.ClientSession() as s:
        body = chat("word " * (TINY.max_model_len + 10))
        async with s.post(server.urls[0] + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 400
            error = await resp.json()
    assert "maximum context length" in error["error"]["message"]


def test_prompts_sharing_a_beginning_share_leading_block_hashes() -> None:
    """Two prompts that differ only at the end share the hashes of the blocks before it,
    and none after it (each hash chains over all that precedes it)."""
    head = [{"role": "system", "content": "s" * 2000}]
    a_tokens, a = prompt_of([*head, {"role": "user", "content": "a" * 800}], 16)
    _, b = prompt_of([*head, {"role": "user", "content": "b" * 800}], 16)
    shared = 2000 // 64  # whole 64-character blocks before the messages part ways
    assert a[:shared] == b[:shared]
    assert not set(a[shared + 1 :]) & set(b[shared + 1 :])
    assert a_tokens == 2000 // 4 + 4 + 800 // 4 + 4


def test_command_line_serves_until_terminated() -> None:
    """`python -m soc_async.testing.simulator` prints one URL per engine and stops on
    SIGTERM."""
    with subprocess.Popen(
        [sys.executable, "-m", "soc_async.testing.simulator", "--profile", "tiny", "--engines",
         "2", "--time-scale", "10", "--slow", "1:2.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(2)]
            assert all(line.startswith("listening on http://127.0.0.1:") for line in lines)
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
