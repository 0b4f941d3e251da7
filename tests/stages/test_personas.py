"""The persona stage against a scripted model: accept, correct and retry, fail."""

from __future__ import annotations

import re

import pytest
from xgrammar.testing import _is_grammar_accept_string

from soc_async.config import PersonaConfig, RunConfig, RunFacts, from_dict
from soc_async.errors import RequestError, RetriesExhausted, ServerError
from soc_async.fewshot import FewShotRing
from soc_async.formats.character import SECTIONS, canonical_text
from soc_async.llm.types import ChatRequest, Completion, TokenUsage
from soc_async.records import Failure, Persona, PersonaSample, decode_line, encode_line
from soc_async.seeds import persona_cards
from soc_async.stages.personas import PersonaStage
from soc_async.stats import StatsEngine, load_stats_engine
from soc_async.testing.completer import ReplyFn, ScriptedCompleter

_PROSE = {
    h: f"Section {h.lower()}: a short paragraph of ordinary detail about a bus commute, a "
    f"small flat shared with a cousin, and evening classes twice a week ({i})."
    for i, h in enumerate(SECTIONS)
}


def card_for(sample: PersonaSample, **overrides: str) -> str:
    """A valid card for ``sample`` (some sections replaced, for invalid variants)."""
    sections = dict(_PROSE)
    sections["Basic Information"] = (
        f"**Name:** {sample.name}\n**Age:** {sample.age}\n**Location:** {sample.subregion}\n"
        "**Pronouns:** they/them"
    )
    sections.update(overrides)
    return canonical_text(sections)


@pytest.fixture(scope="module")
def stats() -> StatsEngine:
    return load_stats_engine(PersonaConfig())


def make_stage(
    stats: StatsEngine, reply: ReplyFn, **config: object
) -> tuple[PersonaStage, ScriptedCompleter, FewShotRing[str]]:
    # The requests carry their seeds (client.send_seed), so the tests can see them.
    cfg: RunConfig = from_dict({"seed": 11, "client": {"send_seed": True}, **config})
    ring = FewShotRing(
        persona_cards(),
        capacity=cfg.persona.ring_capacity,
        reset_every=cfg.persona.reset_every,
    )
    model = ScriptedCompleter(reply)
    return PersonaStage(cfg, model, stats, ring, RunFacts(model="served-model")), model, ring


def user_text(request: ChatRequest) -> str:
    return request.messages[1]["content"]


async def test_valid_card_becomes_a_persona(stats: StatsEngine) -> None:
    """A valid first reply is accepted, recorded with its sample, and pushed into the ring."""
    stage, _, ring = make_stage(stats, lambda k, r, n: card_for(stage.sample(3)[0]))
    sample = stage.sample(3)[0]
    record = await stage.write(3, "p-0000003-x")
    assert isinstance(record, Persona)
    assert record.id == "p-0000003-x"
    assert record.persona_text == card_for(sample)
    meta = record.meta
    assert (meta.iteration, meta.name, meta.age, meta.gender) == (
        3,
        sample.name,
        sample.age,
        sample.gender,
    )
    assert (meta.region, meta.subregion) == (sample.region, sample.subregion)
    assert (meta.prompt_tokens, meta.completion_tokens) == (100, 50)
    assert meta.model == "scripted-model" and meta.time_taken >= 0
    assert ring.items()[-1] == record.persona_text
    assert decode_line(encode_line(record)) == record


async def test_request_carries_sample_settings_and_grammar(stats: StatsEngine) -> None:
    """The request names the sample, uses the call's settings, and sends its grammar."""
    stage, model, _ = make_stage(
        stats,
        lambda k, r, n: card_for(stage.sample(0)[0]),
        calls={"persona": {"max_tokens": 1200, "temperature": 0.8, "top_p": 0.95}},
    )
    sample = stage.sample(0)[0]
    await stage.write(0, "p0")
    request = model.requests()[0]
    assert model.kinds == ["persona"]
    assert request.model == "served-model"
    assert (request.max_tokens, request.temperature, request.top_p) == (1200, 0.8, 0.95)
    assert request.seed is not None and 0 <= request.seed < 2**31
    assert [m["role"] for m in request.messages] == ["system", "user"]
    user = user_text(request)
    for fact in (sample.name, str(sample.age), sample.subregion, sample.region, sample.gender):
        assert fact in user
    assert request.grammar is not None
    assert _is_grammar_accept_string(request.grammar, card_for(sample))


async def test_grammar_is_left_out_when_disabled(stats: StatsEngine) -> None:
    """With calls.persona.grammar = false no grammar is sent."""
    stage, model, _ = make_stage(
        stats, lambda k, r, n: card_for(stage.sample(0)[0]), calls={"persona": {"grammar": False}}
    )
    await stage.write(0, "p0")
    assert model.requests()[0].grammar is None


async def test_system_prompt_is_identical_across_calls(stats: StatsEngine) -> None:
    """Every call sends the same system text byte for byte (prefix-cache friendly)."""
    stage, model, _ = make_stage(stats, lambda k, r, n: "nothing useful")
    for i in range(3):
        await stage.write(i, f"p{i}")
    systems = {r.messages[0]["content"] for r in model.requests()}
    assert len(systems) == 1
    assert all(h in next(iter(systems)) for h in SECTIONS)


async def test_sample_and_request_are_deterministic(stats: StatsEngine) -> None:
    """The same seed and index give the same sample and the same prompt in a new stage."""
    replies = lambda k, r, n: "not a card"  # noqa: E731
    one, m1, _ = make_stage(stats, replies)
    two, m2, _ = make_stage(stats, replies)
    assert one.sample(5)[0] == two.sample(5)[0]
    assert one.sample(5)[0] != one.sample(6)[0]
    await one.write(5, "p5")
    await two.write(5, "p5")
    assert [r.messages for r in m1.requests()] == [r.messages for r in m2.requests()]
    assert [r.seed for r in m1.requests()] == [r.seed for r in m2.requests()]


async def test_invalid_then_valid_is_retried_with_a_correction(stats: StatsEngine) -> None:
    """A card missing a section is retried once with a one-line correction, then accepted."""

    def reply(kind: str, request: ChatRequest, n: int) -> str:
        sample = stage.sample(2)[0]
        if n == 0:
            return card_for(sample).replace("**Values**\n", "")
        return card_for(sample)

    stage, model, _ = make_stage(stats, reply)
    record = await stage.write(2, "p2")
    assert isinstance(record, Persona)
    assert len(model.requests()) == 2
    assert "not accepted" not in user_text(model.requests()[0])
    correction = user_text(model.requests()[1]).rstrip().splitlines()[-1]
    assert "not accepted" in correction and "**Values**" in correction
    assert model.requests()[1].seed != model.requests()[0].seed
    assert record.meta.prompt_tokens == 200 and record.meta.completion_tokens == 100


async def test_always_invalid_becomes_a_failure(stats: StatsEngine) -> None:
    """After 1 + retries invalid replies the item is a Failure with its reason and counts."""
    stage, model, ring = make_stage(
        stats,
        lambda k, r, n: card_for(stage.sample(4)[0]).replace("**Age:** ", "**Age:** 1"),
        calls={"persona": {"retries": 2}},
    )
    before = ring.items()
    record = await stage.write(4, "p4")
    assert isinstance(record, Failure)
    assert record.stage == "personas"
    assert record.reason == "retries_exhausted:age_mismatch"
    assert record.attempts == 3 == len(model.requests())
    assert record.retries == {"age_mismatch": 3}
    assert record.detail
    assert ring.items() == before


async def test_truncated_reply_is_invalid(stats: StatsEngine) -> None:
    """finish_reason 'length' counts as invalid ('truncated') even if the text parses."""

    def reply(kind: str, request: ChatRequest, n: int) -> Completion | str:
        card = card_for(stage.sample(1)[0])
        if n == 0:
            return Completion(text=card, finish_reason="length", usage=TokenUsage(completion=9))
        return card

    stage, model, _ = make_stage(stats, reply)
    record = await stage.write(1, "p1")
    assert isinstance(record, Persona)
    assert "cut by max_tokens" in user_text(model.requests()[1])


async def test_near_duplicate_of_a_reference_is_refused(stats: StatsEngine) -> None:
    """A reply that copies a reference card (with the right facts) is refused as a copy."""

    def reply(kind: str, request: ChatRequest, n: int) -> str:
        sample = stage.sample(0)[0]
        reference = re.search(r"<character>.*?</character>", user_text(request), re.S)
        assert reference is not None
        basic = (
            f"**Basic Information**\n**Name:** {sample.name}\n**Age:** {sample.age}\n"
            f"**Location:** {sample.subregion}\n"
        )
        text = reference.group()
        start = text.index("**Basic Information**")
        end = text.index("**Pronouns:**")
        return text[:start] + basic + text[end:]

    stage, _, _ = make_stage(stats, reply, calls={"persona": {"retries": 1}})
    record = await stage.write(0, "p0")
    assert isinstance(record, Failure)
    assert record.reason == "retries_exhausted:near_duplicate"
    assert record.retries == {"near_duplicate": 2}


async def test_first_iterations_draw_seed_references_only(stats: StatsEngine) -> None:
    """Below seed_only_iterations references are seeds, even when the ring holds none."""
    stage, model, ring = make_stage(
        stats,
        lambda k, r, n: "no card",
        persona={"seed_only_iterations": 3, "few_shot": 2},
        calls={"persona": {"retries": 0}},
    )
    for i in range(ring.capacity):
        await ring.push(card_for(stage.sample(100 + i)[0]).replace("(0)", f"(gen {i})"))
    assert not set(ring.items()) & set(ring.seeds)
    seeds = [s.strip() for s in ring.seeds]
    for index in (0, 1, 2):
        await stage.write(index, f"p{index}")
    for index in (3, 4, 5):
        await stage.write(index, f"p{index}")
    for n, request in enumerate(model.requests()):
        refs = re.findall(r"<character>.*?</character>", user_text(request), re.S)
        assert len(refs) == 2
        from_seeds = [r in seeds for r in refs]
        assert all(from_seeds) if n < 3 else not any(from_seeds)


async def test_request_errors_become_failures(stats: StatsEngine) -> None:
    """A RequestError is a failure of this item with the request's reason, at once."""
    for exc, reason in (
        (RequestError("bad request", status=400), "request:http_400"),
        (RetriesExhausted("timeout", attempts=7), "request:timeout"),
        (RequestError("odd reply"), "request:error"),
    ):
        stage, model, _ = make_stage(stats, lambda k, r, n, exc=exc: exc)
        record = await stage.write(0, "p0")
        assert isinstance(record, Failure)
        assert record.reason == reason and record.attempts == 1
        assert len(model.requests()) == 1


async def test_request_error_after_an_invalid_reply_counts_both(stats: StatsEngine) -> None:
    """A request that fails on the retry reports two attempts and the earlier rejection."""
    stage, _, _ = make_stage(
        stats, lambda k, r, n: "junk" if n == 0 else RequestError("boom", status=422)
    )
    record = await stage.write(0, "p0")
    assert isinstance(record, Failure)
    assert record.reason == "request:http_422" and record.attempts == 2
    assert record.retries == {"no_character_element": 1}


async def test_server_error_propagates(stats: StatsEngine) -> None:
    """A dead server stops the run: ServerError is not turned into a failure record."""
    stage, _, _ = make_stage(stats, lambda k, r, n: ServerError("all endpoints down"))
    with pytest.raises(ServerError):
        await stage.write(0, "p0")


async def test_occupation_and_band_go_to_the_prompt_and_the_record(stats: StatsEngine) -> None:
    """The sampled occupation and band are given to the model and kept in the meta."""
    stage, model, _ = make_stage(stats, lambda k, r, n: card_for(stage.sample(5)[0]))
    sample = stage.sample(5)[0]
    assert sample.occupation and sample.band
    record = await stage.write(5, "p-5")
    assert isinstance(record, Persona)
    assert (record.meta.occupation, record.meta.band) == (sample.occupation, sample.band)
    request = model.calls[0].request
    assert f"Occupation: {sample.occupation}" in user_text(request)
    assert f"Money and circumstances: {sample.band}" in user_text(request)
    assert "not its extreme" in request.messages[0]["content"]


async def test_a_card_copying_an_accepted_one_is_refused_dataset_wide(stats: StatsEngine) -> None:
    """With the run's index, a card repeating an accepted card under another name is
    refused as dataset_duplicate and retried; the retry's new card is accepted."""
    from soc_async.neardup import NearDuplicateIndex

    cfg: RunConfig = from_dict({"seed": 11, "persona": {"few_shot": 0}})
    index = NearDuplicateIndex(cfg.persona.dedup_threshold)

    def stage(reply: ReplyFn) -> tuple[PersonaStage, ScriptedCompleter]:
        ring = FewShotRing(persona_cards(), capacity=20, reset_every=50)
        model = ScriptedCompleter(reply)
        return PersonaStage(cfg, model, stats, ring, RunFacts(model="m"), dedup=index), model

    first, _ = stage(lambda k, r, n: card_for(first.sample(0)[0]))
    assert isinstance(await first.write(0, "p-a"), Persona)
    fresh = {h: f"A harbour pilot's week, told differently, part {i}." for i, h in
             enumerate(SECTIONS[1:])}  # fmt: skip
    second, model = stage(lambda k, r, n: card_for(second.sample(1)[0], **(fresh if n else {})))
    record = await second.write(1, "p-b")
    assert isinstance(record, Persona) and "harbour pilot" in record.persona_text
    assert len(model.calls) == 2
    assert "already in the dataset (p-a)" in user_text(model.calls[1].request)
    assert len(index) == 2
