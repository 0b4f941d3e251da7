"""The ModelGateway the stages call: each request to the servers of its model, in-flight
bounds sized per engine, replies without thinking, the chat-template switches sent per
call kind, and endpoints not yet ready."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest

from soc_async import config as config_mod
from soc_async.calls import build_request
from soc_async.llm.metrics import EngineInfo
from soc_async.llm.readiness import EndpointsFile, ServedEngine
from soc_async.llm.types import ChatRequest
from soc_async.run.gateway import (
    DEFAULT_PER_ENGINE,
    ModelGateway,
    engine_limits,
    with_endpoints_file,
)
from soc_async.run.progress import RunCounters


def config(*urls: str, **changes: Any) -> config_mod.RunConfig:
    base = {"endpoints": list(urls), "client.ready_timeout_s": 2.0, **changes}
    return config_mod.override(config_mod.RunConfig(), base)


def ask(text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=16)


def test_limits_come_from_the_config_then_the_server_then_the_default() -> None:
    """per_engine wins; else a batch size the server reports; else 256."""
    urls = ["http://a:1", "http://b:2"]
    reported = {"http://a:1": EngineInfo(max_num_seqs=1024), "http://b:2": EngineInfo()}
    assert engine_limits(urls, 64, reported) == {"http://a:1": 64, "http://b:2": 64}
    assert engine_limits(urls, None, reported) == {
        "http://a:1": 1024,
        "http://b:2": DEFAULT_PER_ENGINE,
    }


def test_an_endpoints_file_brings_its_batch_size_and_priority() -> None:
    """The engines of `soc-async serve` become the run's servers, their max_num_seqs the
    per-engine bound (unless set), and priority is sent when they all schedule by it: all
    as facts beside the config, which stays as the user resolved it."""
    served = EndpointsFile(
        model="m",
        engines=[
            ServedEngine(url="http://127.0.0.1:8000", max_num_seqs=1024, priority=True),
            ServedEngine(url="http://127.0.0.1:8010", max_num_seqs=1024, priority=True),
        ],
    )
    user = config()
    out = with_endpoints_file(user, served)
    assert out.endpoints == ["http://127.0.0.1:8000", "http://127.0.0.1:8010"]
    assert out.per_engine_bound(user) == 1024 and out.send_priority(user)
    assert user.concurrency.per_engine is None and not user.client.send_priority
    capped = config(**{"concurrency.per_engine": 100})
    assert with_endpoints_file(capped, served).per_engine_bound(capped) == 100


async def test_the_total_bound_is_the_sum_of_the_engines(fake_server) -> None:
    """Two engines and no concurrency.max: the run may keep 2 x per_engine in flight; the
    router knows each engine's bound; each engine has its own limiter and controller,
    capped at its bound, and the limits never start above the total."""
    a, b = await fake_server(), await fake_server()
    cfg = config(a.url, b.url, **{"concurrency.per_engine": 12, "concurrency.initial": 32})
    async with ModelGateway(cfg, RunCounters()) as engine:
        assert engine.facts.max_in_flight == 24
        assert engine.capacity == 24
        assert [lim.capacity for lim in engine.limiters.values()] == [12, 12]
        assert [c.bounds.max for c in engine.controllers.values()] == [12, 12]
        pool = engine._by_kind["turn"].pool
        assert [ep.limit for ep in pool.endpoints] == [12, 12]


async def test_without_any_size_each_engine_gets_the_default(fake_server) -> None:
    """The fake server, like vLLM 0.32, does not export its batch size: 256 each."""
    a, b, c = await fake_server(), await fake_server(), await fake_server()
    async with ModelGateway(config(a.url, b.url, c.url), RunCounters()) as engine:
        assert engine.facts.max_in_flight == 3 * DEFAULT_PER_ENGINE
        assert set(engine.limits.values()) == {DEFAULT_PER_ENGINE}


async def test_thinking_is_stripped_and_counted(fake_server) -> None:
    """A reply that starts with a <think> block reaches the stage without it."""
    server = await fake_server(reply=lambda body: "<think>\nplan the card\n</think>\n\nAnswer.")
    stats = RunCounters()
    async with ModelGateway(config(server.url), stats) as engine:
        reply = await engine.complete("summary", ask())
        again = await engine.complete("turn", ask())
    assert reply.text == again.text == "Answer."
    assert stats.thinking_stripped == 2
    assert stats.snapshot().thinking_stripped == 2


async def test_chat_template_kwargs_are_sent_per_call_kind(fake_server) -> None:
    """Thinking is switched off by default for every kind; a kind's own table wins (the
    request builder sets them, the gateway sends them on)."""
    bodies: dict[str, dict[str, Any]] = {}

    def reply(body: dict[str, Any]) -> str:
        bodies[body["messages"][0]["content"]] = body
        return "ok"

    server = await fake_server(reply=reply)
    cfg = config(server.url, **{"calls.summary.chat_template_kwargs": {"enable_thinking": True}})
    async with ModelGateway(cfg, RunCounters()) as engine:
        for kind in ("turn", "summary"):
            await engine.complete(kind, build_request(cfg, engine.facts, kind, kind, "u"))
    assert bodies["turn"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert bodies["summary"]["chat_template_kwargs"] == {"enable_thinking": True}


async def test_an_endpoint_not_ready_in_time_is_left_out_until_it_answers(fake_server) -> None:
    """One server answers, the other never listens: after ready_timeout_s the run starts
    on the first, every request goes there."""
    up = await fake_server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cfg = config(up.url, dead, **{"client.ready_timeout_s": 0.3})
    async with ModelGateway(cfg, RunCounters()) as engine:
        for i in range(4):
            reply = await engine.complete("turn", ask(), affinity=f"chat-{i}")
            assert reply.endpoint == up.url


@pytest.mark.parametrize("ready_timeout", [0.0])
async def test_no_endpoint_ready_fails_before_the_first_request(ready_timeout: float) -> None:
    from soc_async.errors import ServerError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ServerError, match="no server ready"):
        async with ModelGateway(
            config(dead, **{"client.ready_timeout_s": ready_timeout}), RunCounters()
        ):
            pass


async def test_a_model_with_its_own_endpoints_is_served_there(fake_server) -> None:
    """Model "b" names its own server: its requests go there; model "a" (no endpoints of
    its own) and other kinds go to the kind's, else the run's, servers."""
    main = await fake_server(reply=lambda body: f"from main as {body['model']}")
    other = await fake_server(reply=lambda body: f"from other as {body['model']}")
    config = config_mod.from_dict(
        {
            "endpoints": [main.url],
            "model": "a",
            "concurrency": {"fixed": 4},
            "calls": {
                "persona": {
                    "models": [
                        {"name": "a", "weight": 1},
                        {"name": "b", "weight": 1, "endpoints": [other.url]},
                    ]
                }
            },
        }
    )
    async with ModelGateway(config, RunCounters()) as gateway:
        replies = {}
        for kind, model in (("persona", "a"), ("persona", "b"), ("turn", "b"), ("turn", "a")):
            request = ChatRequest(messages=[{"role": "user", "content": "hi"}], model=model)
            replies[(kind, model)] = (await gateway.complete(kind, request)).text
    assert replies[("persona", "a")] == "from main as a"
    assert replies[("persona", "b")] == "from other as b"
    assert replies[("turn", "b")] == "from main as b"  # turns list no models: kind's servers
    assert replies[("turn", "a")] == "from main as a"
    assert other.stats.received == 1 and main.stats.received == 3


async def test_each_engine_has_its_own_limit_in_the_figures(fake_server) -> None:
    """The panel's figures: each engine's own limit, and the limits summed."""
    a, b = await fake_server(), await fake_server()
    cfg = config(a.url, b.url, **{"concurrency.per_engine": 12, "concurrency.initial": 10})
    async with ModelGateway(cfg, RunCounters()) as gateway:
        figures = gateway.engine_figures()
        assert [e.limit for e in figures] == [5, 5]
        assert gateway.controller_figures().limit == 10 == gateway.capacity
        assert gateway.controller_figures().adaptive


async def test_a_dead_engines_queued_turns_move_to_the_others(fake_server) -> None:
    """One slot per engine; a conversation's second turn waits for its home's slot; the
    home is taken out of service (as the client does when it refuses a connection): the
    waiting turn is answered by the other engine at once, while the first turn is still
    on the old home."""
    a, b = await fake_server(ttft_s=2.0), await fake_server(ttft_s=0.05)
    cfg = config(a.url, b.url, **{"concurrency.fixed": 2})
    async with ModelGateway(cfg, RunCounters()) as gateway:
        pool = gateway._by_kind["turn"].pool
        home = pool.router.pick("chat")  # the conversation's home: the first engine
        assert home is not None and home.url == a.url
        replies = []
        answered = anyio.Event()

        async def turn() -> None:
            replies.append(await gateway.complete("turn", ask(), affinity="chat"))
            answered.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(turn)  # holds the first engine's one slot
            await anyio.sleep(0.2)
            tg.start_soon(turn)  # waits for that slot
            await anyio.sleep(0.2)
            assert gateway.limiters[a.url].waiting == 1
            pool.failed(home, hard=True)
            with anyio.fail_after(1.5):  # well before the first turn's 2 s
                await answered.wait()
            assert replies[0].endpoint == b.url
            assert gateway.limiters[a.url].waiting == 0
            assert pool.router.home_of("chat") is not None
            assert pool.router.home_of("chat").url == b.url  # the conversation moved


def test_totals_are_split_over_the_engines_by_their_bounds() -> None:
    """In proportion to each engine's bound, largest remainders first; each engine at
    least 1 and at most its bound."""
    from soc_async.run.gateway import split

    assert split(32, [256] * 8) == [4] * 8
    assert split(10, [64, 64, 128]) == [3, 2, 5]  # 2.5, 2.5, 5: the first tie first
    assert split(3, [100] * 8) == [1] * 8  # every engine gets a slot
    assert split(1000, [4, 8]) == [4, 8]  # never past a bound
