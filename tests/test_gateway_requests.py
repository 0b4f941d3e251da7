"""The gateway builds a request given as a function only once its slot is held, so the
chat turns that wait for a slot hold no rendered prompt."""

from __future__ import annotations

import anyio

from soc_async import config as config_mod
from soc_async.llm.types import ChatRequest
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
