"""The configurable age law: a normal with bounds, a mixture, or weighted bands; refused
when it cannot be drawn from, sampled as configured, and the default unchanged."""

from __future__ import annotations

import random
from collections import Counter
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soc_async.config import PersonaConfig, from_dict
from soc_async.errors import ConfigError
from soc_async.seeds import SeedData, load_seed_data
from soc_async.stats import StatsEngine, age_law, age_weights, load_stats_engine

N = 4000


@cache
def seeds() -> SeedData:
    return load_seed_data()


def persona(**keys: Any) -> PersonaConfig:
    return from_dict({"persona": keys}).persona


def draw_ages(config: PersonaConfig, n: int = N, seed: int = 1) -> Counter[int]:
    engine = load_stats_engine(config)
    rng = random.Random(seed)
    return Counter(engine.sample(rng).age for _ in range(n))


def test_default_law_is_unchanged() -> None:
    """The default config draws exactly what the N(25, 5) engine drew before it was
    configurable (same ages from the same seed)."""
    old = StatsEngine(seeds(), 18, 70, 25.0, 5.0, bands=PersonaConfig().bands)
    new = load_stats_engine(PersonaConfig())
    a, b = random.Random(9), random.Random(9)
    assert [old.sample(a).age for _ in range(300)] == [new.sample(b).age for _ in range(300)]
    law = age_law(PersonaConfig())
    assert abs(sum(law.values()) - 1) < 1e-9 and max(law, key=law.__getitem__) == 25


def test_bands_are_drawn_by_weight() -> None:
    """Each band's share is within 4 standard errors of its weight; no age outside them."""
    bands = [
        {"min": 18, "max": 29, "weight": 0.4},
        {"min": 30, "max": 49, "weight": 0.4},
        {"min": 60, "max": 70, "weight": 0.2},
    ]
    config = persona(age_distribution="bands", age_bands=bands)
    ages = draw_ages(config)
    for band in bands:
        got = sum(n for a, n in ages.items() if band["min"] <= a <= band["max"]) / N
        se = (band["weight"] * (1 - band["weight"]) / N) ** 0.5
        assert abs(got - band["weight"]) < 4 * se, (band, got)
    assert not any(50 <= a <= 59 for a in ages)


def test_mixture_covers_both_modes() -> None:
    config = persona(
        age_distribution="mixture",
        age_mixture=[{"mean": 22, "sd": 2, "weight": 1}, {"mean": 55, "sd": 3, "weight": 1}],
    )
    ages = draw_ages(config)
    young = sum(n for a, n in ages.items() if a < 38) / N
    assert abs(young - 0.5) < 4 * (0.25 / N) ** 0.5
    law = age_law(config)
    assert abs(sum(w for a, w in law.items() if a < 38) - 0.5) < 0.01  # 18 clips a tail


@pytest.mark.parametrize(
    ("keys", "key"),
    [
        ({"age_distribution": "mixture"}, "persona.age_mixture"),
        ({"age_distribution": "bands"}, "persona.age_bands"),
        (
            {"age_distribution": "bands", "age_bands": [{"min": 30, "max": 20, "weight": 1}]},
            "persona.age_bands[0].min",
        ),
        (
            {"age_distribution": "bands", "age_bands": [{"min": 10, "max": 20, "weight": 1}]},
            "persona.age_bands[0]",
        ),
        (
            {
                "age_distribution": "bands",
                "age_bands": [
                    {"min": 18, "max": 30, "weight": 1},
                    {"min": 25, "max": 40, "weight": 1},
                ],
            },
            "persona.age_bands[1]",
        ),
        (
            {"age_distribution": "bands", "age_bands": [{"min": 18, "max": 30, "weight": 0}]},
            "persona.age_bands",
        ),
        ({"age_distribution": "uniform"}, "persona.age_distribution"),
        ({"age_mixture": [{"mean": 30, "sd": 0}]}, "persona.age_mixture[0].sd"),
    ],
)
def test_invalid_law_is_refused_naming_the_key(keys: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        persona(**keys)
    assert f"config: {key}:" in str(info.value)


band = st.tuples(st.integers(18, 70), st.integers(0, 12), st.floats(0, 5, allow_nan=False))


@settings(max_examples=80, deadline=None)
@given(bands=st.lists(band, min_size=1, max_size=5))
def test_band_tables_accepted_exactly_when_drawable(
    bands: list[tuple[int, int, float]],
) -> None:
    """A table is accepted when its bands lie in the allowed ages, do not overlap and
    carry some weight; then the law puts on each band exactly its normalised weight."""
    table = [{"min": lo, "max": lo + span, "weight": w} for lo, span, w in bands]
    spans = sorted((b["min"], b["max"]) for b in table)
    valid = (
        all(hi <= 70 for _, hi in spans)
        and all(spans[k][1] < spans[k + 1][0] for k in range(len(spans) - 1))
        and sum(b["weight"] for b in table) > 0
    )
    if not valid:
        with pytest.raises(ConfigError, match=r"persona\.age_bands"):
            persona(age_distribution="bands", age_bands=table)
        return
    config = persona(age_distribution="bands", age_bands=table)
    law = age_law(config)
    total = sum(b["weight"] for b in table)
    for b in table:
        got = sum(law[a] for a in range(b["min"], b["max"] + 1))
        assert abs(got - b["weight"] / total) < 1e-9
    assert set(age_weights(config)) == set(range(18, 71))


@settings(max_examples=40, deadline=None)
@given(
    mean=st.floats(1, 120, allow_nan=False),
    sd=st.floats(0.1, 30, allow_nan=False),
    lo=st.integers(1, 60),
    span=st.integers(0, 40),
)
def test_normal_law_is_a_distribution_on_the_allowed_ages(
    mean: float, sd: float, lo: int, span: int
) -> None:
    """Wherever the mean sits, even far in a tail, the law sums to 1 on [min, max]."""
    config = persona(age_min=lo, age_max=lo + span, age_mean=mean, age_sd=sd)
    law = age_law(config)
    assert set(law) == set(range(lo, lo + span + 1))
    assert abs(sum(law.values()) - 1) < 1e-9
