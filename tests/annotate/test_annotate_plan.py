"""The sampling plan and the A/B pairing: pure functions, answers worked out by hand."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from soc_async.annotate.plan import (
    ItemFacts,
    allocate,
    make_ab_plan,
    make_rate_plan,
    queue,
    rater_order,
    stratified_sample,
    turn_band,
)


def facts(
    n: int,
    *,
    model: str = "m",
    style: str = "freeform",
    cadence: str = "realtime",
    turns: int = 10,
    prefix: str = "c",
) -> list[ItemFacts]:
    return [
        ItemFacts(
            chat_id=f"{prefix}-{model}-{style}-{cadence}-{k}",
            model=model,
            style=style,
            cadence=cadence,
            turns=turns,
        )
        for k in range(n)
    ]


def test_allocation_is_proportional_by_largest_remainder() -> None:
    # 60/30/10 of 100 items, 7 asked: exact shares 4.2, 2.1, 0.7 -> 4, 2, 1.
    assert allocate({"a": 60, "b": 30, "c": 10}, 7) == {"a": 4, "b": 2, "c": 1}
    # Never more than a stratum holds, never more than there is.
    assert allocate({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}
    assert allocate({"a": 5}, 0) == {"a": 0}


@given(
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 50), max_size=8),
    st.integers(0, 200),
)
def test_allocation_sums_to_what_is_asked_and_fits(sizes: dict[str, int], n: int) -> None:
    share = allocate(sizes, n)
    assert sum(share.values()) == min(n, sum(sizes.values()))
    assert all(0 <= share[k] <= sizes[k] for k in sizes)


def test_the_sample_is_stratified_and_the_same_whatever_the_file_order() -> None:
    items = (
        facts(60, model="m1")
        + facts(30, model="m2", style="structured")
        + facts(10, model="m1", cadence="async")
    )
    picked = stratified_sample(items, 10, seed=3)
    strata = Counter(f.stratum for f in picked)
    assert strata == {
        "m1|freeform|realtime": 6,
        "m2|structured|realtime": 3,
        "m1|freeform|async": 1,
    }
    assert stratified_sample(list(reversed(items)), 10, seed=3) == picked
    assert stratified_sample(items, 10, seed=4) != picked


def test_the_overlap_is_shared_and_every_rater_sees_the_sample_in_their_own_order() -> None:
    plan = make_rate_plan(facts(50), n=20, overlap=0.25, seed=1, created="t")
    assert len(plan.items) == 20 and sum(i.shared for i in plan.items) == 5
    ana, ben = rater_order(plan, "ana"), rater_order(plan, "ben")
    assert sorted(ana) == sorted(ben) == sorted(i.id for i in plan.items)
    assert ana != ben and rater_order(plan, "ana") == ana


def test_the_queue_shares_the_overlap_and_hands_out_the_rest_once() -> None:
    plan = make_rate_plan(facts(10), n=10, overlap=0.2, seed=1, created="t")
    shared = {i.id for i in plan.items if i.shared}
    rest = [i.id for i in plan.items if not i.shared]
    done = {rest[0]: ["ben"], rest[1]: ["ana"], next(iter(shared)): ["ben"]}
    ana = queue(plan, "ana", done, claimed={rest[2]: "ben"})
    assert shared <= set(ana)  # every shared item, even one another rater did
    assert rest[0] not in ana and rest[2] not in ana  # rated, or held open, by Ben
    assert rest[1] in ana  # her own answer stays in her queue
    assert len(ana) == 10 - 2
    assert ana == [i for i in rater_order(plan, "ana") if i in set(ana)]


def test_turn_bands() -> None:
    assert [turn_band(t) for t in (1, 8, 9, 16, 17, 24, 25, 90)] == [
        "1-8",
        "1-8",
        "9-16",
        "9-16",
        "17-24",
        "17-24",
        "25+",
        "25+",
    ]


def test_pairs_match_on_style_cadence_and_turn_band_first() -> None:
    a = facts(4, style="structured", cadence="async", turns=12, prefix="a")
    b = (
        facts(2, style="structured", cadence="async", turns=10, prefix="b")  # same band
        + facts(1, style="structured", cadence="async", turns=30, prefix="b2")  # other band
        + facts(1, style="freeform", cadence="delayed", turns=12, prefix="b3")  # nothing
    )
    plan = make_ab_plan(a, b, n=4, overlap=0, seed=0, created="t", compare="B", compare_key="k")
    matches = Counter(i.match for i in plan.items)
    assert matches == {"style+cadence+turns": 2, "style+cadence": 1, "none": 1}
    assert len({i.b for i in plan.items}) == 4  # no conversation of B used twice
    same_band = {i.b for i in plan.items if i.match == "style+cadence+turns"}
    assert all(x.startswith("b-") for x in same_band)


def test_sides_are_balanced_over_many_pairs_and_shuffled() -> None:
    plan = make_ab_plan(
        facts(201, prefix="a"),
        facts(250, prefix="b"),
        n=201,
        overlap=0.1,
        seed=5,
        created="t",
        compare="B",
        compare_key="k",
    )
    sides = [i.left for i in plan.items]
    assert len(sides) == 201 and abs(sides.count("A") - sides.count("B")) == 1
    # Not a pattern a rater could learn: neither alternating nor in two runs.
    runs = sum(1 for x, y in itertools.pairwise(sides) if x != y)
    assert 60 < runs < 140
