"""The one request builder: several models by weight, the same model for the same item."""

from __future__ import annotations

from collections import Counter

import pytest

from soc_async import config as cfg
from soc_async.calls import build_request, choose_model, model_for_item
from soc_async.config import CALL_KINDS, RunFacts
from soc_async.llm.types import EncodedPrefix
from soc_async.records import make_id

MODELS = [
    {"name": "kimi-k2", "weight": 0.5},
    {"name": "kimi-k2.5", "weight": 0.3},
    {"name": "glm-5", "weight": 0.2, "endpoints": ["http://127.0.0.1:9001"]},
]


def config(**top: object) -> cfg.RunConfig:
    return cfg.from_dict({"seed": 5, "calls": {"persona": {"models": MODELS}}, **top})


def test_model_mix_is_within_two_percent_of_the_weights() -> None:
    """Over 10,000 items each model's share is within 2 points of its weight."""
    run = config()
    ids = [make_id(5, "personas", i) for i in range(10_000)]
    counts = Counter(model_for_item(run, "persona", item, "served") for item in ids)
    for m in MODELS:
        assert abs(counts[m["name"]] / 10_000 - m["weight"]) < 0.02, (m, counts)


def test_same_draws_after_resume_and_in_shards(tmp_path) -> None:
    """A resumed run (its config read back from the run directory) and each shard of a
    job array draw the same model for every item as the first run did."""
    run = config()
    saved = tmp_path / "config.toml"
    saved.write_text(cfg.dump(run))
    resumed = cfg.load(saved)
    first = {i: choose_model(run, "persona", make_id(5, "personas", i)) for i in range(10_000)}
    again = {i: choose_model(resumed, "persona", make_id(5, "personas", i)) for i in range(10_000)}
    assert again == first
    for shard in ("0/3", "1/3", "2/3"):
        part = cfg.override(run, {"shard": shard})
        i0 = int(shard[0])
        for i in range(i0, 3000, 3):
            assert choose_model(part, "persona", make_id(5, "personas", i)) == first[i]


def test_kinds_without_models_keep_their_model_and_requests_carry_the_choice() -> None:
    """A kind with no list asks for its own model (else the run's, else the served one);
    build_request puts the chosen model on the request."""
    run = config(model="base")
    assert model_for_item(run, "turn", "c-1", "served") == "base"
    assert model_for_item(cfg.RunConfig(), "turn", "c-1", "served") == "served"
    chosen = choose_model(run, "persona", "p-1")
    assert chosen is not None
    served = RunFacts(model="s")
    request = build_request(run, served, "persona", "sys", "user", item_id="p-1")
    assert request.model == chosen.name
    assert build_request(run, served, "persona", "sys", "user").model == "base"


@pytest.mark.parametrize("kind", CALL_KINDS)
def test_the_request_is_built_complete_for_each_call_kind(kind: str) -> None:
    """Model, sampling, seed policy, priority and chat-template arguments all come from
    the kind's config and the facts: nothing is left for the gateway or client to fill."""
    run = cfg.from_dict(
        {
            "seed": 3,
            "client": {"send_seed": True},
            "calls": {
                kind: {
                    "model": f"{kind}-model",
                    "max_tokens": 77,
                    "temperature": 0.3,
                    "top_p": 0.9,
                    "chat_template_kwargs": {"enable_thinking": True, "x": 1},
                }
            },
        }
    )
    facts = RunFacts(model="served", priority_scheduling=True)
    request = build_request(
        run, facts, kind, "sys", EncodedPrefix(b"", "user"), seed=11, priority=4, item_id="i-1"
    )
    assert request.model == f"{kind}-model"
    assert (request.max_tokens, request.temperature, request.top_p) == (77, 0.3, 0.9)
    assert request.seed == 11 and request.priority == 4
    assert request.chat_template_kwargs == {"enable_thinking": True, "x": 1}
    assert [m["role"] for m in request.messages] == ["system", "user"]


def test_seed_and_priority_are_sent_only_when_the_config_or_servers_allow() -> None:
    """send_seed off (the default) drops the seed; a priority is sent only when
    client.send_priority is set or every found engine schedules by priority; the served
    model stands in when the config names none; the default template arguments go too."""
    run = cfg.RunConfig()
    plain = build_request(run, RunFacts(model="served"), "turn", "s", "u", seed=9, priority=2)
    assert plain.seed is None and plain.priority is None and plain.model == "served"
    assert plain.chat_template_kwargs == {"enable_thinking": False}
    by_engines = build_request(
        run, RunFacts(priority_scheduling=True), "turn", "s", "u", priority=2
    )
    assert by_engines.priority == 2
    by_config = cfg.override(run, {"client.send_priority": True})
    assert build_request(by_config, RunFacts(), "turn", "s", "u", priority=2).priority == 2
    no_kwargs = cfg.override(run, {"calls.turn.chat_template_kwargs": {}})
    assert build_request(no_kwargs, RunFacts(), "turn", "s", "u").chat_template_kwargs is None


def test_the_judge_overrides_sampling_and_continues_the_conversation() -> None:
    """A request asked again carries the earlier reply and its correction after the
    user message; max_tokens, temperature and a JSON schema are the caller's."""
    follow_up = [{"role": "assistant", "content": "{"}, {"role": "user", "content": "again"}]
    request = build_request(
        cfg.RunConfig(),
        RunFacts(model="m"),
        "turn",
        "s",
        "u",
        json_schema={"type": "object"},
        follow_up=follow_up,
        max_tokens=256,
        temperature=0.0,
    )
    assert request.messages[2:] == follow_up
    assert (request.max_tokens, request.temperature) == (256, 0.0)
    assert request.json_schema == {"type": "object"} and request.grammar is None


def test_models_config_is_validated(tmp_path) -> None:
    """A model listed twice, a weight of 0 or a bad endpoint URL is a config error."""
    from soc_async.errors import ConfigError

    for bad, key in (
        ([{"name": "a"}, {"name": "a"}], "calls.persona.models"),
        ([{"name": "a", "weight": 0}], "calls.persona.models"),
        ([{"name": "a", "endpoints": ["localhost:1"]}], "endpoints"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            cfg.from_dict({"calls": {"persona": {"models": bad}}})
