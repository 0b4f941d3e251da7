"""The gateway builds a request given as a function only once its slot is held, so the
chat turns that wait for a slot hold no rendered prompt; it sends the request exactly as
``build_request`` made it, and leaves the config as it was given."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec

from soc_async import config as config_mod
from soc_async.calls import build_request
from soc_async.config import RunFacts
from soc_async.llm.client import _body
from soc_async.llm.types import ChatRequest, encode_hook
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters


async def test_a_request_function_is_called_once_its_slot_is_held(fake_server) -> None:
    """With one slot, the second request is built after the first reply came back, with
    the slot its own; a plain ChatRequest is still taken as it is."""
    server = await fake_server(ttft_s=0.05)
    cfg = config_mod.from_dict({"endpoints": [server.url], "concurrency": {"fixed": 1}})
    events: list[str] = []
    async with ModelGateway(cfg, RunCounters()) as gateway:

        def build(name: str):
            def make() -> ChatRequest:
                events.append(f"build {name} in_flight={gateway.in_flight}")
                return ChatRequest(messages=[{"role": "user", "content": name}], max_tokens=8)

            return make

        async def ask(name: str) -> None:
            await gateway.complete("turn", build(name))
            events.append(f"reply {name}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "a")
            await anyio.sleep(0.01)
            tg.start_soon(ask, "b")
        reply = await gateway.complete(
            "turn", ChatRequest(messages=[{"role": "user", "content": "c"}], max_tokens=8)
        )
    assert events == [
        "build a in_flight=1",
        "reply a",
        "build b in_flight=1",
        "reply b",
    ]
    assert reply.text


async def test_the_gateway_sends_exactly_what_build_request_produced(fake_server) -> None:
    """For every call kind the body the server receives is the built request's body, field
    for field: the gateway sets no model, seed or template argument of its own."""
    seen: list[dict[str, Any]] = []
    server = await fake_server(reply=lambda body: seen.append(body) or "ok", model="served")
    cfg = config_mod.from_dict(
        {
            "endpoints": [server.url],
            "client": {"send_seed": False},
            "calls": {
                "summary": {"model": "served", "chat_template_kwargs": {}},
                "persona": {"chat_template_kwargs": {"enable_thinking": True}},
            },
        }
    )
    before = config_mod.dump(cfg)
    async with ModelGateway(cfg, RunCounters()) as gateway:
        assert gateway.facts.model == "served"
        sent = []
        for kind in config_mod.CALL_KINDS:
            request = build_request(cfg, gateway.facts, kind, "sys", f"user {kind}", seed=7)
            sent.append(
                msgspec.json.decode(msgspec.json.encode(_body(request), enc_hook=encode_hook))
            )
            await gateway.complete(kind, request)
    assert [{k: v for k, v in body.items() if k != "request_id"} for body in seen] == sent
    assert all("seed" not in body for body in seen)  # send_seed off: build_request dropped it
    assert seen[3].get("chat_template_kwargs") is None and seen[0]["chat_template_kwargs"] == {
        "enable_thinking": True
    }
    # What the gateway found (the served model, the bound) is in its facts, not the config.
    assert gateway.config is cfg and config_mod.dump(cfg) == before
    assert cfg.concurrency.max is None and gateway.facts.max_in_flight


async def test_facts_found_outside_reach_the_gateway_not_the_config(fake_server) -> None:
    """Facts of an endpoints file (the servers, their batch size) given to the gateway
    bound it; the config names no server at all."""
    server = await fake_server()
    cfg = config_mod.RunConfig()
    found = RunFacts(endpoints=[server.url], per_engine=3)
    async with ModelGateway(cfg, RunCounters(), found) as gateway:
        assert gateway.limits == {server.url: 3}
        assert gateway.facts.max_in_flight == 3
    assert cfg.endpoints == [] and cfg.concurrency.per_engine is None
