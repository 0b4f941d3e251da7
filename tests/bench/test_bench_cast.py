"""The bench's cast: seed personas and experiences, recast into distinct conversations."""

from __future__ import annotations

from soc_async.bench.cast import bench_conversations, cast_experiences, recast, seed_personas
from soc_async.config import RunConfig
from soc_async.formats.experience import ParsedExperience, parse_experience


def test_seed_personas_read_name_and_age_off_the_cards() -> None:
    """Every seed card becomes a Persona whose meta matches its Basic Information."""
    personas = seed_personas()
    assert len(personas) >= 2
    assert len({p.id for p in personas}) == len(personas)
    for p in personas:
        assert f"**Name:** {p.meta.name}" in p.persona_text
        assert f"**Age:** {p.meta.age}" in p.persona_text


def test_seed_experiences_name_two_seed_personas() -> None:
    """Each seed experience parses, with its opener among the two personas it names."""
    config = RunConfig()
    personas = seed_personas()
    seeds = cast_experiences(personas, config)
    assert seeds
    for s in seeds:
        assert s.opener.id != s.other.id
        assert s.opener.meta.name in s.text and s.other.meta.name in s.text


def test_recast_swaps_full_names_pairwise() -> None:
    """Both names change at once, so swapping a pair does not replace a name twice."""
    text = "Opens: Ana Lima\nAna Lima writes to Bo Chen; Bo Chen answers."
    assert recast(text, ("Ana Lima", "Bo Chen"), ("Bo Chen", "Ana Lima")) == (
        "Opens: Bo Chen\nBo Chen writes to Ana Lima; Ana Lima answers."
    )
    assert recast(text, ("Ana Lima", "Bo Chen"), ("Cy Diaz", "Dee Eze")).count("Cy Diaz") == 2


def test_bench_conversations_are_valid_and_distinct() -> None:
    """Conversations beyond the seeds get other persona pairs, so their prompts differ;
    each still parses as an experience naming its own two personas, opener first."""
    config = RunConfig()
    personas = seed_personas()
    seeds = cast_experiences(personas, config)
    experiences = bench_conversations(40, personas, seeds, config)
    by_id = {p.id: p for p in personas}
    assert len(experiences) == 40
    assert len({e.id for e in experiences}) == 40
    keys = {(e.experience_text, tuple(e.persona_ids)) for e in experiences}
    assert len(keys) == 40
    for e in experiences:
        a, b = (by_id[pid] for pid in e.persona_ids)
        assert a.id != b.id and e.opener == a.id
        parsed = parse_experience(
            e.experience_text, (a.meta.name, b.meta.name), min_events=2, max_events=5
        )
        assert isinstance(parsed, ParsedExperience)
        assert parsed.opener_name == a.meta.name
    # The first round is the seeds as written.
    assert [e.experience_text for e in experiences[: len(seeds)]] == [s.text for s in seeds]


def test_bench_conversations_are_deterministic_in_the_seed() -> None:
    """The same seed casts the same conversations; another seed casts others."""
    personas = seed_personas()
    seeds = cast_experiences(personas, RunConfig())
    one = bench_conversations(12, personas, seeds, RunConfig(seed=1))
    again = bench_conversations(12, personas, seeds, RunConfig(seed=1))
    other = bench_conversations(12, personas, seeds, RunConfig(seed=2))
    assert [e.persona_ids for e in one] == [e.persona_ids for e in again]
    assert [e.persona_ids for e in one] != [e.persona_ids for e in other]


def test_ranges_are_disjoint_and_728_conversations_are_distinct() -> None:
    """Phases taking consecutive ranges never share a conversation; with the shipped
    seeds (4 experiences, 14 personas) the first 4 * 14 * 13 are all different."""
    config = RunConfig()
    personas = seed_personas()
    seeds = cast_experiences(personas, config)
    total = len(seeds) * len(personas) * (len(personas) - 1)
    whole = bench_conversations(total, personas, seeds, config)
    assert len({(e.experience_text, tuple(e.persona_ids)) for e in whole}) == total
    first = bench_conversations(10, personas, seeds, config)
    second = bench_conversations(10, personas, seeds, config, start=10)
    assert [e.id for e in first + second] == [e.id for e in whole[:20]]
    assert [e.persona_ids for e in second] == [e.persona_ids for e in whole[10:20]]
