"""Held-out splits grouped by persona: nobody on two sides, seeded, sized, nothing lost quietly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soc_async.errors import InputError
from soc_async.export.split import TRAIN, parse_splits, plan_split

graphs = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 30)).filter(lambda e: e[0] != e[1]),
    max_size=150,
)


def _chats(edges: list[tuple[int, int]]) -> list[tuple[str, str, str]]:
    return [(f"c{i}", f"p{a}", f"p{b}") for i, (a, b) in enumerate(edges)]


@settings(max_examples=150, deadline=None)
@given(graphs, st.sampled_from([0.05, 0.1, 0.3]), st.integers(0, 5))
def test_no_persona_on_two_sides(edges, fraction, seed):
    """Every kept conversation's two personas are in the conversation's split, so no
    persona speaks in two splits; every conversation is kept or counted as dropped."""
    chats = _chats(edges)
    personas = [f"p{i}" for i in range(35)]
    plan = plan_split(chats, personas, {"validation": fraction}, seed)
    for chat_id, a, b in chats:
        if chat_id in plan.chats:
            assert plan.personas[a] == plan.personas[b] == plan.chats[chat_id]
    assert len(plan.chats) + plan.dropped == len(chats)
    assert set(plan.personas) == set(personas)
    assert set(plan.chats.values()) <= {TRAIN, "validation"}


@settings(max_examples=50, deadline=None)
@given(graphs, st.integers(0, 5))
def test_seeded(edges, seed):
    """The same input and seed give the same plan."""
    chats = _chats(edges)
    one = plan_split(chats, [], {"validation": 0.2}, seed)
    two = plan_split(list(chats), [], {"validation": 0.2}, seed)
    assert one == two


def test_separate_groups_go_whole():
    """When conversations form separate groups, whole groups are held out: none dropped,
    and the held-out share is as close to the fraction as whole groups allow."""
    chats = []
    for g in range(20):  # 20 groups of 3 personas, 5 conversations each
        for k in range(5):
            a, b = f"p{g}-{k % 3}", f"p{g}-{(k + 1) % 3}"
            chats.append((f"c{g}-{k}", a, b))
    plan = plan_split(chats, [], {"validation": 0.1}, seed=1)
    assert plan.dropped == 0
    assert sum(v == "validation" for v in plan.chats.values()) == 10


def test_one_dense_group_is_cut_near_the_target():
    """A graph where everyone talks to everyone is cut: the held-out split gets about its
    share of conversations, the conversations across the cut are dropped and counted."""
    people = [f"p{i}" for i in range(40)]
    chats = [(f"c{a}-{b}", people[a], people[b]) for a in range(40) for b in range(a + 1, 40)]
    plan = plan_split(chats, people, {"validation": 0.05}, seed=3)
    held = sum(v == "validation" for v in plan.chats.values())
    target = round(0.05 * len(chats))
    assert target <= held <= target + 40
    assert plan.dropped > 0
    assert held + plan.dropped + sum(v == TRAIN for v in plan.chats.values()) == len(chats)


def test_two_held_out_splits():
    """Several held-out splits are planned one after the other, each with its own personas."""
    chats = [(f"c{g}", f"a{g}", f"b{g}") for g in range(100)]
    plan = plan_split(chats, [], {"validation": 0.1, "test": 0.2}, seed=0)
    counts = {s: list(plan.chats.values()).count(s) for s in (TRAIN, "validation", "test")}
    assert counts == {TRAIN: 70, "validation": 10, "test": 20}


def test_personas_without_conversations_are_drawn():
    """Personas in no conversation get a split by a seeded draw with the split's share."""
    plan = plan_split([], [f"p{i}" for i in range(2000)], {"validation": 0.25}, seed=0)
    held = sum(v == "validation" for v in plan.personas.values())
    assert 400 < held < 600


def test_parse_splits():
    """NAME=FRACTION pairs, repeated or comma-joined; train and bad values are refused."""
    assert parse_splits(["validation=0.05"]) == {"validation": 0.05}
    assert parse_splits(["validation=0.05,test=0.1"]) == {"validation": 0.05, "test": 0.1}
    assert parse_splits([]) == {}
    for bad in (["validation"], ["train=0.1"], ["v=0"], ["v=1.5"], ["v=x"], ["a=0.6", "b=0.5"]):
        with pytest.raises(InputError):
            parse_splits(bad)
