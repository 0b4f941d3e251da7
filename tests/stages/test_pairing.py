"""Pairing personas for experiences: distinct, half region-matched, deterministic."""

from __future__ import annotations

import factories
import pytest

from soc_async.errors import InputError
from soc_async.records import Persona
from soc_async.stages.pairing import Pair, PersonaPool, pair_for


def persona(pid: str, region: str, name: str | None = None) -> Persona:
    return factories.persona(
        pid, region=region, subregion=f"{region} city", name=name, age=25, time_taken=0.0
    )


REGIONS = ["West Africa"] * 6 + ["South Asia"] * 3 + ["Northern Europe"] * 2 + ["Oceania"]
PERSONAS = [persona(f"p{i}", region) for i, region in enumerate(REGIONS)]
BY_ID = {p.id: p for p in PERSONAS}


def test_pairs_are_two_distinct_personas() -> None:
    """No draw ever pairs a persona with itself, in either mode."""
    for index in range(2000):
        pair = pair_for(index, 7, PERSONAS, 0.5)
        assert pair.a != pair.b
        assert {pair.a, pair.b} <= BY_ID.keys()


def test_about_half_are_region_matched_and_those_share_a_region() -> None:
    """With region_match=0.5 about half the pairs are drawn from one region, and those do."""
    pairs = [pair_for(index, 3, PERSONAS, 0.5) for index in range(4000)]
    matched = [p for p in pairs if p.region_matched]
    assert 0.45 < len(matched) / len(pairs) < 0.55
    assert all(BY_ID[p.a].meta.region == BY_ID[p.b].meta.region for p in matched)


def test_matched_regions_are_weighted_by_persona_count() -> None:
    """A region with twice the personas is drawn about twice as often; a lone persona's never."""
    pairs = [pair_for(index, 11, PERSONAS, 1.0) for index in range(6000)]
    counts: dict[str, int] = {}
    for p in pairs:
        counts[BY_ID[p.a].meta.region] = counts.get(BY_ID[p.a].meta.region, 0) + 1
    assert "Oceania" not in counts
    assert 1.7 < counts["West Africa"] / counts["South Asia"] < 2.3
    assert 1.2 < counts["South Asia"] / counts["Northern Europe"] < 1.8


def test_random_half_draws_across_regions() -> None:
    """With region_match=0 pairs are uniform, so many cross regions and none claims a match."""
    pairs = [pair_for(index, 5, PERSONAS, 0.0) for index in range(2000)]
    assert not any(p.region_matched for p in pairs)
    crossing = sum(BY_ID[p.a].meta.region != BY_ID[p.b].meta.region for p in pairs)
    assert crossing > 1000


def test_pairing_is_deterministic_per_seed_and_index() -> None:
    """The same (seed, index, personas) give the same pair; a prebuilt pool gives it too."""
    pool = PersonaPool(PERSONAS)
    first = [pair_for(i, 42, PERSONAS, 0.5) for i in range(200)]
    assert first == [pair_for(i, 42, PERSONAS, 0.5) for i in range(200)]
    assert first == [pair_for(i, 42, pool, 0.5) for i in range(200)]
    assert first != [pair_for(i, 43, PERSONAS, 0.5) for i in range(200)]


def test_no_region_with_two_personas_falls_back_to_random() -> None:
    """When every region holds one persona, region matching is impossible and not claimed."""
    lonely = [persona("x", "A"), persona("y", "B"), persona("z", "C")]
    pairs = [pair_for(i, 0, lonely, 1.0) for i in range(50)]
    assert all(not p.region_matched and p.a != p.b for p in pairs)


def test_duplicate_ids_count_once() -> None:
    """A persona listed twice is still one persona: two copies of it cannot be paired."""
    twice = [persona("x", "A"), persona("x", "A"), persona("y", "A")]
    pairs = [pair_for(i, 0, twice, 0.5) for i in range(50)]
    assert all({p.a, p.b} == {"x", "y"} for p in pairs)


@pytest.mark.parametrize("personas", [[], [persona("x", "A")], [persona("x", "A")] * 3])
def test_fewer_than_two_personas_is_an_input_error(personas: list[Persona]) -> None:
    """Pairing one persona (or none) is refused with an InputError naming the count."""
    with pytest.raises(InputError, match="at least 2 distinct personas"):
        pair_for(0, 0, personas, 0.5)


def test_same_name_pairs_are_avoided_when_possible() -> None:
    """Two personas sharing a name are redrawn while another pair is available."""
    people = [persona("a", "R", "Maria"), persona("b", "R", "maria"), persona("c", "R", "Ines")]
    pairs = [pair_for(i, 1, people, 0.5) for i in range(300)]
    assert all("c" in (p.a, p.b) for p in pairs)


def test_pair_is_plain_data() -> None:
    """A Pair compares by value, so resumed runs can check they pair as before."""
    assert Pair(a="x", b="y", region_matched=True) == Pair(a="x", b="y", region_matched=True)
