"""The one request builder: several models by weight, the same model for the same item."""

from __future__ import annotations

from collections import Counter

from soc_async import config as cfg
from soc_async.records import make_id
from soc_async.stages.calls import build_request, choose_model, model_for_item

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
    request = build_request(run, "persona", "sys", "user", served_model="s", item_id="p-1")
    assert request.model == chosen.name
    assert build_request(run, "persona", "sys", "user", served_model="s").model == "base"


def test_models_config_is_validated(tmp_path) -> None:
    """A model listed twice, a weight of 0 or a bad endpoint URL is a config error."""
    import pytest

    from soc_async.errors import ConfigError

    for bad, key in (
        ([{"name": "a"}, {"name": "a"}], "calls.persona.models"),
        ([{"name": "a", "weight": 0}], "calls.persona.models"),
        ([{"name": "a", "endpoints": ["localhost:1"]}], "endpoints"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            cfg.from_dict({"calls": {"persona": {"models": bad}}})
