"""Archetypes: the stratified draw, the keyword reading, the monitor, the config, and the
persona sampler and stage that use them."""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soc_async.archetypes import (
    ArchetypeDraw,
    ArchetypeMonitor,
    KeywordTable,
    inner_text,
    shares,
    written_label,
)
from soc_async.config import ArchetypeConfig, PersonaConfig, RunConfig, RunFacts, from_dict
from soc_async.errors import ConfigError
from soc_async.fewshot import FewShotRing
from soc_async.formats.character import SECTIONS, canonical_text
from soc_async.llm.types import ChatRequest
from soc_async.records import Persona, PersonaMeta, PersonaSample
from soc_async.seeds import persona_cards
from soc_async.stages.archetype_monitor import archetype_monitor
from soc_async.stages.personas import PersonaStage
from soc_async.stats import StatsEngine, load_stats_engine
from soc_async.testing.completer import ScriptedCompleter
from soc_async.testing.scripted import ScriptedWriter

COPING = RunConfig().archetypes.coping
WEIGHTS = shares(COPING)


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.floats(0.01, 10), min_size=1, max_size=9),
    block=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_every_block_deals_each_row_its_weight_rounded(
    weights: list[float], block: int, seed: int
) -> None:
    """Within a block each row gets floor or ceil of block x its share, so no stretch of
    the run strays from the table by more than a count per block and row."""
    table = {f"r{i}": w for i, w in enumerate(weights)}
    draw = ArchetypeDraw(table, seed=seed, salt="t", block=block)
    total = sum(weights)
    for b in range(3):
        counts = Counter(draw.draw(b * block + k) for k in range(block))
        for label, w in table.items():
            expected = block * w / total
            assert math.floor(expected) - 1e-9 <= counts[label] <= math.ceil(expected) + 1e-9


def test_each_index_has_the_rows_weight_as_its_probability() -> None:
    """Over many run seeds, one index's row follows the weights (stratification biases
    no position of a block): every row within 4 standard errors at 20,000 seeds."""
    n = 20_000
    counts = Counter(
        ArchetypeDraw(WEIGHTS, seed=s, salt="coping", block=20).draw(7) for s in range(n)
    )
    for label, w in WEIGHTS.items():
        assert abs(counts[label] / n - w) < 4 * math.sqrt(w * (1 - w) / n), label


def test_draws_are_pure_functions_of_seed_and_index() -> None:
    """Any order of asking, any instance, gives the same row; another seed another deal;
    block 0 draws independently per index."""
    a = ArchetypeDraw(WEIGHTS, seed=3, salt="coping", block=20)
    b = ArchetypeDraw(WEIGHTS, seed=3, salt="coping", block=20)
    forward = [a.draw(i) for i in range(200)]
    assert [b.draw(i) for i in reversed(range(200))] == forward[::-1]
    other = ArchetypeDraw(WEIGHTS, seed=4, salt="coping", block=20)
    assert [other.draw(i) for i in range(200)] != forward
    free = ArchetypeDraw(WEIGHTS, seed=3, salt="coping", block=0)
    assert free.draw(5) == ArchetypeDraw(WEIGHTS, seed=3, salt="coping", block=0).draw(5)
    with pytest.raises(ValueError, match="positive weights"):
        ArchetypeDraw({"a": 0.0}, seed=0, salt="x", block=5)


def _card(traits: str, emotional: str) -> str:
    sections = {h: f"Plain text of {h.lower()}." for h in SECTIONS}
    sections["Core Traits"] = traits
    sections["Emotional Profile"] = emotional
    return canonical_text(sections)


def test_written_label_prefers_the_drawn_row_then_the_most_keywords() -> None:
    """The drawn row when its keywords show; else the row with most distinct keywords;
    else None. Only Core Traits and Emotional Profile are read."""
    kw = KeywordTable(COPING)
    both = inner_text(_card("- quiet", "She vents to her sister, then goes to the gym."))
    assert written_label(both, kw, "physical outlet") == "physical outlet"
    assert written_label(both, kw, "talks it through") == "talks it through"
    other = inner_text(_card("- tidy", "When it gets bad she prays and lights a temple candle."))
    assert written_label(other, kw, "humour") == "faith or ritual"
    assert written_label(inner_text(_card("- tidy", "Nothing to say.")), kw, "humour") is None
    outside = _card("- tidy", "Nothing.").replace("Plain text of values.", "She prays daily.")
    assert written_label(inner_text(outside), kw, "humour") is None
    # A label with no keywords is read by its own words.
    plain = KeywordTable(ArchetypeConfig(coping={"long walks": COPING["humour"]}).coping)
    assert plain.hits("loves long walks")["long walks"] == 0  # keywords given: humour's
    bare = from_dict({"archetypes": {"coping": {"gardening alone": {"weight": 1.0}}}})
    assert KeywordTable(bare.archetypes.coping).hits("She is gardening.") == {"gardening alone": 1}


def test_monitor_names_a_style_written_far_above_its_weight() -> None:
    """No hint before min_pool; a style written in most recent cards is named, but not
    to a persona drawn that very style; a mix at the weights names nothing."""
    monitor = ArchetypeMonitor(WEIGHTS, window=50, min_pool=20, hint_z=3.0)
    for _ in range(19):
        monitor.observe("withdraws")
    assert monitor.hint("humour") is None  # 19 < min_pool
    monitor.observe("withdraws")
    assert monitor.hint("humour") == "withdraws"
    assert monitor.hint("withdraws") is None
    balanced = ArchetypeMonitor(WEIGHTS, window=100, min_pool=20, hint_z=3.0)
    deal = ArchetypeDraw(WEIGHTS, seed=1, salt="c", block=20)
    for i in range(100):
        balanced.observe(deal.draw(i))
    assert balanced.dominant() is None
    # The window forgets: 50 balanced cards after the run of "withdraws" clear the hint.
    for i in range(50):
        monitor.observe(deal.draw(i))
    assert monitor.dominant() is None
    with pytest.raises(ValueError, match="unknown archetype"):
        monitor.observe("sulks")


def test_config_refuses_bad_tables_naming_the_key() -> None:
    """A weight of 0, an unknown key in a row and an empty table are refused."""
    with pytest.raises(ConfigError, match=r"archetypes\.coping\.humour\.weight"):
        from_dict({"archetypes": {"coping": {"humour": {"weight": 0}}}})
    with pytest.raises(ConfigError, match=r"temperaments\[\.\.\.\]\.words: unknown key"):
        from_dict({"archetypes": {"temperaments": {"calm": {"weight": 1, "words": []}}}})
    with pytest.raises(ConfigError, match=r"archetypes\.coping: expected at least one row"):
        from_dict({"archetypes": {"coping": {}}})
    assert from_dict({}).archetypes.block == 20


def test_every_default_prompt_shows_its_own_row_and_no_other() -> None:
    """The default descriptions, written out as a card would, read back as their own row:
    a model that follows the prompt is never counted as drifting."""
    table = RunConfig().archetypes
    for rows in (table.temperaments, table.coping):
        kw = KeywordTable(rows)
        for label, row in rows.items():
            assert {k for k, v in kw.hits(row.prompt).items() if v} == {label}


@pytest.fixture(scope="module")
def engine() -> StatsEngine:
    return load_stats_engine(PersonaConfig(), RunConfig().archetypes, seed=5)


def test_sampler_draws_archetypes_without_moving_the_other_draws(engine: StatsEngine) -> None:
    """With an index the archetype is the stratified draw and the generator is left as
    it was (every other fact unchanged); without one it is drawn from the generator."""
    plain = load_stats_engine(PersonaConfig())
    with_index = engine.sample(random.Random("x"), 41)
    without = plain.sample(random.Random("x"))
    assert without.temperament == without.coping == ""
    assert {**_facts(with_index), "temperament": "", "coping": ""} == _facts(without)
    coping = ArchetypeDraw(shares(RunConfig().archetypes.coping), seed=5, salt="coping", block=20)
    assert with_index.coping == coping.draw(41)
    free = engine.sample(random.Random("x"))
    assert free.coping in WEIGHTS and free.temperament in RunConfig().archetypes.temperaments


def _facts(s: PersonaSample) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(s)


async def test_stage_asks_for_the_archetype_and_warns_off_a_dominant_one(
    engine: StatsEngine,
) -> None:
    """The prompt states the drawn temperament and coping; once the cards keep writing
    "withdraws", a persona drawn another style is told to stay off it, and its meta
    records what was drawn and the hint."""
    cfg = from_dict({"seed": 5, "archetypes": {"min_pool": 5, "window": 10}})
    ring = FewShotRing(persona_cards(), capacity=20, reset_every=50)
    monitor = archetype_monitor(cfg.archetypes)
    samples: dict[int, PersonaSample] = {}
    writer = ScriptedWriter(seed=3)

    def reply(kind: str, request: ChatRequest, n: int) -> str:
        # Every card copes the same way, whatever its prompt asked: a drifting model.
        card = writer.persona(request.messages[1]["content"], broken=False)
        return re.sub(r"Under stress this person [^.]*\.", "She withdraws for a day.", card)

    completer = ScriptedCompleter(reply)
    stage = PersonaStage(cfg, completer, engine, ring, RunFacts(model="m"), archetypes=monitor)
    hinted: list[Persona] = []
    for i in range(40):
        samples[i] = stage.sample(i)[0]
        record = await stage.write(i, f"p-{i}")
        assert isinstance(record, Persona)
        assert record.meta.coping == samples[i].coping
        assert record.meta.temperament == samples[i].temperament
        if record.meta.archetype_hint:
            hinted.append(record)
    prompts = [r.messages[1]["content"] for r in completer.requests("persona")]
    first = prompts[0]
    assert f"Under stress: {cfg.archetypes.coping[samples[0].coping].prompt}" in first
    assert f"Temperament: {cfg.archetypes.temperaments[samples[0].temperament].prompt}" in first
    assert hinted and all(p.meta.archetype_hint == "withdraws" for p in hinted)
    assert all(p.meta.coping != "withdraws" for p in hinted)
    warned = [p for p in prompts if "do not slip into that one" in p]
    assert len(warned) == len(hinted)
    assert cfg.archetypes.coping["withdraws"].prompt in warned[0]


def test_monitor_is_primed_from_the_cards_a_resumed_run_holds() -> None:
    """archetype_monitor reads the last window of existing cards by iteration; with
    hint = false there is no monitor."""
    cfg = RunConfig().archetypes
    card = _card("- calm", "He withdraws into his room.")
    existing = [
        Persona(
            id=f"p-{i}",
            persona_text=card,
            meta=PersonaMeta(
                iteration=i, model="m", region="r", subregion="s", name="n", gender="male",
                age=30, time_taken=0.0, temperament="easygoing", coping="humour",
            ),
        )
        for i in range(60)
    ]  # fmt: skip
    monitor = archetype_monitor(cfg, existing)
    assert monitor is not None and monitor.hint("humour") == "withdraws"
    off = from_dict({"archetypes": {"hint": False}}).archetypes
    assert archetype_monitor(off, existing) is None
