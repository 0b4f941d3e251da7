"""The gateway sends each request to the servers of its model."""

from __future__ import annotations

from soc_async import config as cfg
from soc_async.gateway import ModelGateway
from soc_async.llm.types import ChatRequest
from soc_async.progress import RunCounters


async def test_a_model_with_its_own_endpoints_is_served_there(fake_server) -> None:
    """Model "b" names its own server: its requests go there; model "a" (no endpoints of
    its own) and other kinds go to the kind's, else the run's, servers."""
    main = await fake_server(reply=lambda body: f"from main as {body['model']}")
    other = await fake_server(reply=lambda body: f"from other as {body['model']}")
    config = cfg.from_dict(
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
