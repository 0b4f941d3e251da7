"""The turn grammar's memoized pieces: a grammar built from warm caches is the grammar
built without them, state after state, over whole chats."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from soc_async.chat import grammar
from soc_async.chat.grammar import turn_grammar
from soc_async.chat.state import ChatRules, ChatState, apply_turn, initial_state, is_done
from soc_async.chat.state import expected_state_line as line_of
from soc_async.formats.clock import format_stamp
from soc_async.formats.turn import ParsedTurn, RawMessage
from soc_async.records import Experience, ExperienceMeta, TopicSlot

NAMES = {"p-ana": "Ana Sousa", "p-kofi": "Kofi Mensah"}


@contextmanager
def uncached() -> Iterator[None]:
    """Every memoized piece replaced by the plain function it wraps."""
    with mock.patch.multiple(grammar, **{f.__name__: f.__wrapped__ for f in grammar.CACHED}):
        yield


def build_uncached(state: ChatState, rules: ChatRules) -> str:
    with uncached():
        return turn_grammar(state, rules)


@st.composite
def chats(draw: st.DrawFn) -> tuple[ChatRules, list[ChatState]]:
    """A chat played turn by turn with legal replies: the rules and every state on the way.

    Clocks cross midnight, month ends, new year and leap days; gaps and message counts
    vary within the rules; several rule sets share the caches across examples."""
    low = draw(st.integers(0, 30))
    high = draw(st.sampled_from([low + 1, 45, 240, 1_500, 2 * 24 * 60]))
    rules = ChatRules(
        max_turns=draw(st.integers(1, 12)),
        min_messages=draw(st.integers(1, 2)),
        max_messages=draw(st.integers(2, 3)),
        allowed_types=tuple(
            draw(st.lists(st.sampled_from(["text", "image", "audio"]), min_size=1, unique=True))
        ),
        gap_min=low,
        gap_max=max(low + 1, high),
        max_text_chars=draw(st.integers(2, 300)),
    )
    topics = draw(st.lists(st.tuples(st.sampled_from(["Rent", "Band"]), st.integers(1, 3)),
                           min_size=1, max_size=3))  # fmt: skip
    style = draw(st.sampled_from(["freeform", "semi-structured", "structured"]))
    experience = Experience(
        id="e-1",
        persona_ids=["p-ana", "p-kofi"],
        experience_text="Neighbours.",
        style=style,  # type: ignore[arg-type]
        cadence="realtime",
        topics=[TopicSlot(title=t, turns=n) for t, n in topics],
        initial_state="",
        instant_events=[],
        opener="p-ana",
        meta=ExperienceMeta(iteration=0, model="test", time_taken=0.0),
    )
    start = draw(st.sampled_from([date(2026, 12, 31), date(2028, 2, 28), date(2026, 3, 15)]))
    state = initial_state(experience, chat_id="c-1", names=NAMES, rules=rules, start_date=start)
    states = [state]
    clock = datetime.combine(start, datetime.min.time()) + timedelta(
        minutes=draw(st.integers(0, 1439))
    )
    while not is_done(state):
        messages = []
        for k in range(draw(st.integers(rules.min_messages, rules.max_messages))):
            if state.clock is not None or k > 0:
                least = rules.gap_min if k == 0 else 0
                clock += timedelta(minutes=draw(st.integers(least, rules.gap_max)))
            if state.clock is None and clock.date() != start:  # the first turn stays on its day
                clock = datetime.combine(start, clock.time()).replace(hour=23, minute=59)
            t, d = format_stamp(clock)
            messages.append(RawMessage(t=t, d=d, type=rules.allowed_types[0], text="ok"))
        turn = ParsedTurn(state_line=line_of(state), ended=False, messages=messages)
        after = apply_turn(state, turn, rules)
        assert isinstance(after, ChatState), after
        state = after
        states.append(state)
    return rules, states[:-1]  # the last one has ended: it has no grammar


@settings(max_examples=60, deadline=None)
@given(chats())
def test_cached_grammar_equals_uncached_over_a_chat(
    chat: tuple[ChatRules, list[ChatState]],
) -> None:
    """At every state of a chat, with the caches warm from earlier states and chats, the
    grammar equals the one built with no cache at all."""
    rules, states = chat
    for state in states:
        assert turn_grammar(state, rules) == build_uncached(state, rules)


def test_the_caches_are_used() -> None:
    """Two chats with the same rules reuse the pieces: one day's minutes, the rules' lines."""
    for f in grammar.CACHED:
        f.cache_clear()
    rules = ChatRules()
    experience = Experience(
        id="e-1",
        persona_ids=["p-ana", "p-kofi"],
        experience_text="Neighbours.",
        style="structured",
        cadence="realtime",
        topics=[TopicSlot(title="Rent", turns=2)],
        initial_state="",
        instant_events=[],
        opener="p-ana",
        meta=ExperienceMeta(iteration=0, model="test", time_taken=0.0),
    )
    for chat_id in ("c-1", "c-2"):
        state = initial_state(
            experience, chat_id=chat_id, names=NAMES, rules=rules, start_date=date(2026, 3, 15)
        )
        turn_grammar(state, rules)
    assert all(f.cache_info().hits > 0 for f in grammar.CACHED)
