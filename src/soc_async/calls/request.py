"""The one request builder: a call kind's complete request from the config and the facts.

:func:`build_request` decides everything a request carries (its model, its sampling
settings, whether its seed and priority are sent, the chat-template arguments), so the
gateway only routes and limits it and the client only sends it.

The model is chosen here and nowhere else: when the kind lists several
(``[calls.KIND] models``), one is drawn per item, by weight, from a hash of the run seed,
the kind and the item's id, so a resumed run or another shard draws the same model for
the same item; else the kind's own model, else the run's, else what the server serves.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence

from soc_async.config import ModelChoice, RunConfig, RunFacts
from soc_async.llm.types import ChatRequest, EncodedPrefix

__all__ = ["build_request", "choose_model", "model_for_item"]


def _unit(*parts: object) -> float:
    """A number in [0, 1) that is a pure function of ``parts``, the same in every process."""
    key = ":".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_model(config: RunConfig, kind: str, item_id: str) -> ModelChoice | None:
    """The model of ``kind``'s list that writes item ``item_id``; None without a list.

    A weighted draw from a hash of (run seed, kind, item id): the same for the same item
    on every run, resume and shard, and over many items within a hair of the weights.
    """
    models = config.call(kind).models
    if not models:
        return None
    cumulative: list[float] = []
    total = 0.0
    for m in models:
        total += m.weight
        cumulative.append(total)
    point = _unit(config.seed, "model", kind, item_id) * total
    return models[min(bisect_right(cumulative, point), len(models) - 1)]


def model_for_item(config: RunConfig, kind: str, item_id: str | None, served_model: str) -> str:
    """The model name a call of ``kind`` for ``item_id`` asks for (see the module doc)."""
    chosen = choose_model(config, kind, item_id) if item_id is not None else None
    if chosen is not None:
        return chosen.name
    return config.model_for(kind) or served_model


def build_request(
    config: RunConfig,
    facts: RunFacts,
    kind: str,
    system: str,
    user: str | EncodedPrefix,
    *,
    seed: int | None = None,
    grammar: str | None = None,
    json_schema: dict[str, object] | None = None,
    priority: int | None = None,
    item_id: str | None = None,
    follow_up: Sequence[dict[str, str]] = (),
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> ChatRequest:
    """The whole request of a call of kind ``kind``: a static system message, one user
    message (then ``follow_up``, a conversation asked again), the model for ``item_id``
    (:func:`model_for_item`), the kind's sampling settings unless ``max_tokens`` or
    ``temperature`` say otherwise, its chat-template arguments, ``seed`` only when
    ``client.send_seed`` allows it and ``priority`` only when the servers schedule by it.
    """
    call = config.call(kind)
    kwargs = call.chat_template_kwargs
    return ChatRequest(
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            *follow_up,
        ],
        model=model_for_item(config, kind, item_id, facts.model),
        max_tokens=call.max_tokens if max_tokens is None else max_tokens,
        temperature=call.temperature if temperature is None else temperature,
        top_p=call.top_p,
        seed=seed if config.client.send_seed else None,
        grammar=grammar,
        json_schema=json_schema,
        priority=priority if facts.send_priority(config) else None,
        chat_template_kwargs=dict(kwargs) if kwargs else None,
    )
