"""LLMClient over real HTTP against the fake server: fields, retries, faults, outages."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import pytest

from soc_async.config import ClientConfig
from soc_async.errors import RequestError, RetriesExhausted
from soc_async.llm.client import LLMClient
from soc_async.llm.types import ChatRequest, Completion
from soc_async.testing.fake_model import even_faults
from soc_async.testing.fake_server import FakeServer, ReplyError

FAST = ClientConfig(
    timeout_s=1.0,
    connect_timeout_s=1.0,
    max_retries=3,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    probe_interval_s=0.05,
    down_timeout_s=60,
)


def ask(request_id: str, text: str = "hello") -> ChatRequest:
    """A request the fake server logs under ``request_id``."""
    return ChatRequest(
        messages=[{"role": "user", "content": text}],
        max_tokens=32,
        extra={"request_id": request_id},
    )


def client_for(*servers: FakeServer, config: ClientConfig = FAST, **kw: Any) -> LLMClient:
    return LLMClient(
        [s.url for s in servers],
        api_key=kw.pop("api_key", None),
        config=config,
        pool_size=kw.pop("pool_size", 64),
        **kw,
    )


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for ``predicate`` to hold, polling: the fake server has no events to await."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


async def run_batch(
    client: LLMClient, ids: list[str], concurrency: int, affinity: bool = False
) -> dict[str, Completion | BaseException]:
    """Every id's outcome: its Completion, or the error it finally failed with."""
    results: dict[str, Completion | BaseException] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(rid: str) -> None:
        async with gate:
            key = rid.split("/")[0] if affinity else None
            try:
                results[rid] = await client.chat(ask(rid), affinity=key)
            except RequestError as exc:
                results[rid] = exc

    async with asyncio.TaskGroup() as tg:
        for rid in ids:
            tg.create_task(one(rid))
    return results


async def test_chat_sends_every_field_and_reads_text_and_usage(fake_server) -> None:
    """The body carries the request's fields; the reply's text, usage and cache hits come back."""
    seen: list[dict[str, Any]] = []

    def reply(body: dict[str, Any]) -> str:
        seen.append(body)
        return "fine, see you at eight"

    server = await fake_server(reply=reply, api_key="sk-test")
    request = ChatRequest(
        messages=[
            {"role": "system", "content": "be brief " * 20},
            {"role": "user", "content": "hi"},
        ],
        model="smol",
        max_tokens=64,
        temperature=0.7,
        top_p=0.9,
        seed=11,
        stop=["</turn>"],
        grammar='root ::= "fine"',
        priority=3,
        extra={"ignore_eos": False, "min_tokens": 2},
    )
    async with client_for(server, api_key="sk-test") as client:
        first = await client.chat(request)
        second = await client.chat(request)
    body = seen[0]
    assert body["model"] == "smol" and body["messages"] == request.messages
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (64, 0.7, 0.9)
    assert (body["seed"], body["stop"], body["priority"]) == (11, ["</turn>"], 3)
    assert body["structured_outputs"] == {"grammar": 'root ::= "fine"'}
    assert body["min_tokens"] == 2 and body["ignore_eos"] is False
    assert first.text == "fine, see you at eight" and first.finish_reason == "stop"
    assert first.usage.prompt > 0 and first.usage.completion > 0 and first.usage.cached == 0
    assert second.usage.cached > 0  # the same prompt again: its prefix is cached
    assert first.attempts == 1 and first.endpoint == server.url and first.latency_s > 0


async def test_a_json_schema_is_sent_as_structured_outputs_json(fake_server) -> None:
    """ChatRequest.json_schema reaches vLLM as ``structured_outputs: {"json": schema}``."""
    seen: list[dict[str, Any]] = []
    server = await fake_server(reply=lambda body: seen.append(body) or '{"a": 1}')
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = ChatRequest(messages=[{"role": "user", "content": "x"}], json_schema=schema)
    async with client_for(server) as client:
        await client.chat(request)
    assert seen[0]["structured_outputs"] == {"json": schema}


async def test_optional_fields_are_left_out_and_the_served_model_answers(fake_server) -> None:
    """No model, seed, stop, grammar or priority: none is sent (the client picks no model
    of its own); the server answers with the model it serves, /v1/models names it."""
    seen: list[dict[str, Any]] = []
    server = await fake_server(reply=lambda body: seen.append(body) or "ok", model="served-one")
    async with client_for(server) as client:
        done = await client.chat(ChatRequest(messages=[{"role": "user", "content": "x"}]))
        assert await client.served_model() == "served-one"
    assert done.model == "served-one"
    assert not {"model", "seed", "stop", "structured_outputs", "priority"} & set(seen[0])


async def test_the_request_is_sent_as_built(fake_server) -> None:
    """A request naming a model and template arguments goes out with exactly those."""
    seen: list[dict[str, Any]] = []
    server = await fake_server(reply=lambda body: seen.append(body) or "ok", model="served-one")
    request = ChatRequest(
        messages=[{"role": "user", "content": "x"}],
        model="other-one",
        chat_template_kwargs={"enable_thinking": False},
        priority=3,
    )
    async with client_for(server) as client:
        await client.chat(request)
    assert seen[0]["model"] == "other-one"
    assert seen[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert seen[0]["priority"] == 3


async def test_a_4xx_is_not_retried_and_its_message_reaches_the_caller(fake_server) -> None:
    """HTTP 400 (and 401 on a wrong key) raise RequestError once, with the server's message."""

    def reply(body: dict[str, Any]) -> str:
        raise ReplyError(400, "This model's maximum context length is 2048 tokens")

    server = await fake_server(reply=reply)
    async with client_for(server) as client:
        with pytest.raises(RequestError) as info:
            await client.chat(ask("r1"))
    assert not isinstance(info.value, RetriesExhausted)
    assert info.value.status == 400 and info.value.attempts == 1
    assert "maximum context length is 2048" in str(info.value)
    assert [h.outcome for h in server.stats.log] == ["400"]

    locked = await fake_server(api_key="right")
    async with client_for(locked, api_key="wrong") as client:
        with pytest.raises(RequestError, match="Unauthorized") as info:
            await client.chat(ask("r2"))
    assert info.value.status == 401


async def test_429_waits_for_retry_after(fake_server) -> None:
    """After a 429 with Retry-After: 1 the next attempt reaches the server >= 1 s later."""
    server = await fake_server(retry_after_s=1.0)
    server.script("429", "ok")
    async with client_for(server) as client:  # backoff alone would wait <= 0.05 s
        done = await client.chat(ask("r1"))
    assert done.attempts == 2
    first, second = server.stats.log
    assert (first.outcome, second.outcome) == ("429", "ok")
    assert second.t - first.t >= 1.0


REASONS = {
    "500": "http_500",
    "503": "http_503",
    "429": "http_429",
    "reset": "connection",
    "stall": "timeout",
    "bad_json": "bad_json",
}


@pytest.mark.parametrize("fault", sorted(REASONS))
async def test_each_transient_fault_is_retried_then_exhausted_with_a_stable_reason(
    fake_server, fault: str
) -> None:
    """One fault then success takes two attempts; faults past the budget name their reason."""
    server = await fake_server(retry_after_s=0.01)
    config = ClientConfig(
        timeout_s=0.3, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02, probe_interval_s=0.02
    )
    server.script(fault, "ok", fault, fault, fault)
    async with client_for(server, config=config) as client:
        done = await client.chat(ask("once"))
        assert done.attempts == 2 and done.text
        with pytest.raises(RetriesExhausted) as info:
            await client.chat(ask("always"))
    assert info.value.reason == REASONS[fault] and info.value.attempts == 3
    assert str(info.value).startswith(f"{REASONS[fault]} after 3 attempts at http")
    assert server.stats.ids("ok") == {"once": 1}
    assert server.stats.received == 5


async def test_cancellation_propagates_and_releases_the_endpoint(fake_server) -> None:
    """Cancelling a request in flight raises CancelledError and leaves no load counted."""
    server = await fake_server()
    server.script("stall")
    async with client_for(server, config=ClientConfig(timeout_s=30)) as client:
        task = asyncio.create_task(client.chat(ask("slow")))
        await until(lambda: server.stats.received > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.pool.endpoints[0].in_flight == 0


async def test_under_20_percent_faults_every_request_ends_once(fake_server) -> None:
    """Every kind of fault at 20% in all: each request succeeds or fails with a reason,
    none is lost, no success is served twice, and every attempt reached the server."""
    server = await fake_server(seed=7, retry_after_s=0.02, **even_faults(0.2))
    ids = [f"r{i}" for i in range(400)]
    config = ClientConfig(
        timeout_s=1.0, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05, probe_interval_s=0.05
    )
    async with client_for(server, config=config) as client:
        results = await run_batch(client, ids, concurrency=64)
    assert sorted(results) == sorted(ids)
    ok = {rid for rid, r in results.items() if isinstance(r, Completion)}
    failed = {rid: r for rid, r in results.items() if not isinstance(r, Completion)}
    for err in failed.values():
        assert isinstance(err, RetriesExhausted) and err.reason in REASONS.values()
    served = server.stats.ids("ok")
    assert set(served) == ok and set(served.values()) == {1}
    attempts = sum(r.attempts for r in results.values())  # type: ignore[union-attr]
    assert attempts == server.stats.received
    kinds = set(server.stats.outcomes)
    assert kinds == {"ok", *REASONS}  # every fault kind really happened
    assert len(ok) > 350


async def outage(server: FakeServer, client: LLMClient, down_s: float) -> None:
    """Stop ``server`` once a quarter of a 200-request batch is done, for ``down_s``."""
    ids = [f"r{i}" for i in range(200)]
    batch = asyncio.create_task(run_batch(client, ids, concurrency=32))
    await until(lambda: len(server.stats.ids("ok")) >= 50)
    await server.stop()
    await asyncio.sleep(down_s)
    await server.restart()
    results = await batch
    assert sorted(results) == sorted(ids)
    assert all(isinstance(r, Completion) for r in results.values()), {
        rid: r for rid, r in results.items() if not isinstance(r, Completion)
    }
    assert set(server.stats.ids("ok")) == set(ids)
    assert not client.pool.endpoints[0].failures


async def test_a_short_outage_is_ridden_out(fake_server) -> None:
    """The server stopped for 1 s mid-batch and restarted on its port: every request succeeds."""
    server = await fake_server(ttft_s=0.01)
    async with client_for(server) as client:
        await outage(server, client, 1.0)


@pytest.mark.slow
async def test_a_ten_second_outage_is_ridden_out(fake_server) -> None:
    """The server stopped for 10 s mid-batch and restarted: the batch completes, no retries
    are spent waiting (requests wait for the probe instead)."""
    server = await fake_server(ttft_s=0.01)
    async with client_for(server) as client:
        await outage(server, client, 10.0)


async def test_affinity_and_failover_across_two_servers(fake_server) -> None:
    """Each conversation stays on one server; both get work; when one stops its
    conversations move to the other; once probed back it takes new work again."""
    one, two = await fake_server(ttft_s=0.005), await fake_server(ttft_s=0.005)
    async with client_for(one, two) as client:
        turns = [f"c{c}/t{t}" for t in range(3) for c in range(20)]
        results = await run_batch(client, turns, concurrency=16, affinity=True)
        where = collections.defaultdict(set)
        for rid, r in results.items():
            assert isinstance(r, Completion)
            where[rid.split("/")[0]].add(r.endpoint)
        assert all(len(urls) == 1 for urls in where.values())
        assert {u for urls in where.values() for u in urls} == {one.url, two.url}

        await one.stop()
        later = await run_batch(client, [f"c{c}/t9" for c in range(20)], 8, affinity=True)
        assert all(isinstance(r, Completion) and r.endpoint == two.url for r in later.values())

        await one.restart()
        await until(lambda: client.pool.endpoints[0].up)
        fresh = await run_batch(client, [f"n{c}/t0" for c in range(20)], 8, affinity=True)
        assert {r.endpoint for r in fresh.values()} == {one.url, two.url}  # type: ignore[union-attr]


# What each fault the fake server injects is counted as.
CAUSES = {"500": "5xx", "503": "5xx", "429": "429", "reset": "reset", "stall": "timeout",
          "bad_json": "bad_json"}  # fmt: skip


async def test_every_failed_attempt_is_counted_by_endpoint_and_cause(fake_server) -> None:
    """Faults on two servers: each failed attempt, retried or the last, is counted once
    under its endpoint and cause, equal to what each server injected."""
    one = await fake_server(seed=3, retry_after_s=0.01, **even_faults(0.3))
    two = await fake_server(seed=4, retry_after_s=0.01, **even_faults(0.3))
    config = ClientConfig(
        timeout_s=0.5, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02, probe_interval_s=0.02
    )
    async with client_for(one, two, config=config) as client:
        await run_batch(client, [f"r{i}" for i in range(200)], concurrency=32)
        for server in (one, two):
            injected: collections.Counter[str] = collections.Counter()
            for outcome, n in server.stats.outcomes.items():
                if outcome in CAUSES:
                    injected[CAUSES[outcome]] += n
            assert client.faults[server.url] == injected
            assert set(injected) == {"5xx", "429", "reset", "timeout", "bad_json"}


async def test_a_refused_connection_counts_as_connect(fake_server) -> None:
    """A server that is not listening: the attempt is counted as `connect`."""
    server = await fake_server()
    await server.stop()
    config = ClientConfig(max_retries=0, connect_timeout_s=1.0, probe_interval_s=0.05)
    async with client_for(server, config=config) as client:
        with pytest.raises(RetriesExhausted):
            await client.chat(ask("refused"))
    assert client.faults[server.url] == {"connect": 1}
