"""The fake vLLM server: its API, latency and queue model, faults, restart and CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from soc_async.llm.metrics import parse_metrics
from soc_async.testing.fake_model import (
    FakeConfig,
    PrefixCache,
    count_tokens,
    even_faults,
    fit_reply,
    latency_s,
)

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any] = BODY) -> Any:
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        return resp.status, resp.headers, await resp.read()


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for ``predicate`` to hold, polling: the fake server has no events to await."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


def test_latency_grows_with_tokens_and_batch() -> None:
    """ttft + tokens * tpot * (1 + slowdown * others); zero config means zero latency."""
    config = FakeConfig(ttft_s=0.1, tpot_s=0.01, batch_slowdown=0.5)
    assert latency_s(config, 10, 0) == pytest.approx(0.2)
    assert latency_s(config, 10, 2) == pytest.approx(0.3)
    assert latency_s(FakeConfig(), 1000, 100) == 0.0


def test_fit_reply_honours_max_tokens_and_ignore_eos() -> None:
    """A reply over budget is cut with finish "length"; ignore_eos fills the budget."""
    assert fit_reply("short", 100, False) == ("short", count_tokens("short"), "stop")
    text, tokens, finish = fit_reply("x" * 400, 10, False)
    assert (len(text), tokens, finish) == (40, 10, "length")
    text, tokens, finish = fit_reply("hi", 25, True)
    assert (len(text), tokens, finish) == (100, 25, "length") and text.startswith("hi")


def test_prefix_cache_counts_the_longest_seen_prefix() -> None:
    """A shared leading message hits; a different first message hits nothing."""
    cache = PrefixCache()
    system = {"role": "system", "content": "s" * 400}
    assert cache.lookup([system, {"role": "user", "content": "a"}]) == 0
    assert cache.lookup([system, {"role": "user", "content": "b"}]) == 100 + 4
    assert cache.lookup([{"role": "system", "content": "t"}, system]) == 0


async def test_api_answers_like_vllm(fake_server) -> None:
    """Chat completions, models, health and a parseable /metrics with vLLM's names."""
    server = await fake_server(model="smol")
    async with aiohttp.ClientSession() as s:
        status, _, raw = await post(s, server.url)
        reply = msgspec.json.decode(raw)
        assert status == 200 and reply["choices"][0]["message"]["content"]
        assert reply["choices"][0]["finish_reason"] == "stop"
        assert reply["usage"]["prompt_tokens"] > 0 and reply["model"] == "fake-model"
        async with s.get(server.url + "/v1/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "smol"
        async with s.get(server.url + "/health") as resp:
            assert resp.status == 200
        async with s.get(server.url + "/metrics") as resp:
            text = await resp.text()
        bad_status, _, bad_raw = await post(s, server.url, {"no": "messages"})
    assert "vllm:kv_cache_usage_perc" in text and "vllm:prefix_cache_hits_total" in text
    assert parse_metrics(text).generation_tokens == reply["usage"]["completion_tokens"]
    assert bad_status == 400 and b"messages" in bad_raw


async def test_requests_past_max_num_seqs_wait_and_load_shows_on_metrics(fake_server) -> None:
    """With 2 sequences allowed and 6 sent, /metrics shows 2 running, 4 waiting, KV in use."""
    server = await fake_server(ttft_s=0.3, max_num_seqs=2, kv_capacity_tokens=100)
    async with aiohttp.ClientSession() as s:
        sends = [asyncio.create_task(post(s, server.url)) for _ in range(6)]
        await until(lambda: server.stats.received >= 6)
        async with s.get(server.url + "/metrics") as resp:
            snap = parse_metrics(await resp.text())
        await asyncio.gather(*sends)
        async with s.get(server.url + "/metrics") as resp:
            after = parse_metrics(await resp.text())
    assert (snap.running, snap.waiting) == (2, 4) and 0 < snap.kv_cache_usage <= 1
    assert (after.running, after.waiting, after.kv_cache_usage) == (0, 0, 0)


async def test_faults_follow_the_seed(fake_server) -> None:
    """The same seed gives the same outcome sequence; another seed a different one."""

    async def outcomes(seed: int) -> list[str]:
        rates = {**even_faults(0.5), "p_stall": 0.0}
        server = await fake_server(seed=seed, retry_after_s=0.01, **rates)
        async with aiohttp.ClientSession() as s:
            for _ in range(60):
                with contextlib.suppress(aiohttp.ClientError):
                    await post(s, server.url)
        return [h.outcome for h in server.stats.log]

    first, again, other = await outcomes(3), await outcomes(3), await outcomes(4)
    assert first == again and first != other
    assert {"ok", "500", "503", "429", "reset", "bad_json"} <= set(first)


async def test_each_fault_looks_like_it_should_on_the_wire(fake_server) -> None:
    """429 carries Retry-After, bad_json is not JSON, reset drops the connection, and a
    stall sends nothing until the client gives up."""
    server = await fake_server(retry_after_s=2)
    server.script("429", "bad_json", "reset", "stall", "503")
    async with aiohttp.ClientSession() as s:
        status, headers, _ = await post(s, server.url)
        assert status == 429 and headers["Retry-After"] == "2"
        status, _, raw = await post(s, server.url)
        assert status == 200
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(raw)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(s, server.url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(s, server.url)
        status, _, raw = await post(s, server.url)
        assert status == 503 and b"injected" in raw
    assert [h.outcome for h in server.stats.log] == ["429", "bad_json", "reset", "stall", "503"]


async def test_restart_keeps_the_port_and_refuses_while_stopped(fake_server) -> None:
    """Stopped, connections are refused; restarted, the same URL answers again."""
    server = await fake_server()
    url = server.url
    await server.stop()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await post(s, url)
        await server.restart()
        assert server.url == url
        status, _, _ = await post(s, url)
    assert status == 200 and server.stats.received == 1


async def test_command_line_serves_with_a_reply_function_until_sigterm(tmp_path: Path) -> None:
    """``python -m soc_async.testing.fake_server`` prints its URL, answers through
    --reply module:function, and exits cleanly on SIGTERM."""
    (tmp_path / "shout.py").write_text(
        "def reply(body):\n    return body['messages'][-1]['content'].upper()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "soc_async.testing.fake_server",
        "--port",
        "0",
        "--reply",
        "shout:reply",
        "--no-uvloop",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        async with aiohttp.ClientSession() as s:
            status, _, raw = await post(s, line.split()[-1])
        assert status == 200
        assert msgspec.json.decode(raw)["choices"][0]["message"]["content"] == "HI"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
