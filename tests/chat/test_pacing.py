"""Pacing: each turn draws its message count from its cadence's configured distribution,
the grammar and the validator allow exactly that many, and a resume draws the same."""

from __future__ import annotations

from collections import Counter
from datetime import date

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xgrammar.testing import _is_grammar_accept_string

from soc_async.chat.grammar import turn_grammar
from soc_async.chat.rollout import TurnEvent, _check_pacing
from soc_async.chat.state import (
    ChatRules,
    ChatState,
    IllegalMove,
    apply_turn,
    initial_state,
    messages_for_turn,
    paced,
)
from soc_async.config import ChatConfig, from_dict, pacing_for
from soc_async.errors import ConfigError
from soc_async.formats.turn import ParsedTurn, RawMessage
from soc_async.records import Experience, ExperienceMeta, Message, TopicSlot, Turn
from soc_async.testing.scripted import ScriptedWriter

NAMES = {"p-ana": "Ana Sousa", "p-kofi": "Kofi Mensah"}
LINE = "Broken bike; 1 turn remaining; end"


def start(rules: ChatRules, cadence: str = "realtime") -> ChatState:
    exp = Experience(
        id="e-1",
        persona_ids=["p-ana", "p-kofi"],
        experience_text="Neighbours who share a garage.",
        style="structured",
        cadence=cadence,  # type: ignore[arg-type]
        topics=[TopicSlot(title="Broken bike", turns=2)],
        initial_state="",
        instant_events=[],
        opener="p-ana",
        meta=ExperienceMeta(iteration=0, model="test", time_taken=0.0),
    )
    return initial_state(exp, chat_id="c-1", names=NAMES, rules=rules, start_date=date(2026, 3, 15))


def reply(count: int) -> str:
    body = "".join(
        f'<message t="00:{k:02d}" d="15.03" type="text">ok {k}</message>\n' for k in range(count)
    )
    return f"<turn>\n<state>\n{LINE}\n</state>\n{body}</turn>"


def parsed(count: int) -> ParsedTurn:
    messages = [
        RawMessage(t=f"00:{k:02d}", d="15.03", type="text", text="ok") for k in range(count)
    ]
    return ParsedTurn(state_line=LINE, ended=False, messages=messages)


def test_default_pacing_is_slower_for_slower_cadences() -> None:
    """One message is likeliest everywhere, and likelier the slower the cadence."""
    chat = ChatConfig()
    shares = {c: pacing_for(chat, c) for c in ("realtime", "delayed", "async")}
    assert all(abs(sum(s.values()) - 1) < 1e-9 for s in shares.values())
    assert shares["realtime"][1] < shares["delayed"][1] < shares["async"][1]
    assert shares["realtime"][3] > shares["delayed"][3] > shares["async"][3]


def test_style_overrides_its_cadence() -> None:
    chat = from_dict({"chat": {"pacing_by_style": {"structured": {"async": [0, 1]}}}}).chat
    assert pacing_for(chat, "async", "structured") == {2: 1.0}
    assert pacing_for(chat, "async", "freeform") == pacing_for(ChatConfig(), "async")
    rules = ChatRules.from_config(chat, "async", "structured")
    assert {messages_for_turn(0, f"c-{i}", 0, rules) for i in range(50)} == {2}


@pytest.mark.parametrize(("count", "ok"), [(1, False), (2, True), (3, False)])
def test_grammar_and_validator_allow_exactly_the_drawn_count(count: int, ok: bool) -> None:
    """A turn pinned to 2 messages: the grammar admits 2 and only 2, the validator too."""
    rules = paced(ChatRules(gap_max=60), 2)
    state = start(rules)
    assert _is_grammar_accept_string(turn_grammar(state, rules), reply(count)) is ok
    after = apply_turn(state, parsed(count), rules)
    assert isinstance(after, ChatState) is ok
    if not ok:
        assert after.reason == ("too_few_messages" if count < 2 else "too_many_messages")
        assert "exactly 2 messages" in after.detail


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    chat=st.text("abc-0123456789", min_size=1, max_size=12),
    turn=st.integers(0, 200),
    weights=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=3).filter(
        lambda w: sum(w) > 0
    ),
)
def test_draw_is_a_pure_function_of_seed_chat_and_turn(
    seed: int, chat: str, turn: int, weights: list[float]
) -> None:
    """The same (seed, chat, turn) draws the same count in any rules object, and only a
    count with weight."""
    config = ChatConfig(pacing={"realtime": weights, "delayed": [1], "async": [1]})
    first = messages_for_turn(seed, chat, turn, ChatRules.from_config(config, "realtime"))
    again = messages_for_turn(seed, chat, turn, ChatRules.from_config(config, "realtime"))
    assert first == again
    assert first is not None and weights[first - 1] > 0


def test_draws_follow_the_configured_shares() -> None:
    """Over 6,000 turns each count's share is within 4 standard errors of its weight."""
    rules = ChatRules.from_config(ChatConfig(), "realtime")
    drawn = Counter(messages_for_turn(3, f"c-{i // 20}", i % 20, rules) for i in range(6000))
    for count, share in rules.pacing:
        se = (share * (1 - share) / 6000) ** 0.5
        assert abs(drawn[count] / 6000 - share) < 4 * se, (count, drawn)


def test_no_pacing_keeps_the_bounds() -> None:
    rules = ChatRules()
    assert messages_for_turn(0, "c", 0, rules) is None
    assert paced(rules, None) is rules


@settings(max_examples=80, deadline=None)
@given(
    cadence=st.sampled_from(["realtime", "delayed", "async", "weekly"]),
    weights=st.lists(st.floats(0, 5, allow_nan=False), max_size=5),
    low=st.integers(1, 3),
    high=st.integers(1, 4),
)
def test_config_refuses_pacing_without_an_allowed_count(
    cadence: str, weights: list[float], low: int, high: int
) -> None:
    """A table is accepted exactly when it names a cadence and puts weight on some count
    in [min_messages, max_messages]; a refusal names the key."""
    data = {"chat": {"min_messages": low, "max_messages": high, "pacing": {cadence: weights}}}
    valid = cadence != "weekly" and sum(weights[low - 1 : high]) > 0 and low <= high
    if valid:
        chat = from_dict(data).chat
        assert set(pacing_for(chat, cadence)) <= set(range(low, high + 1))
        return
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    key = "chat.min_messages" if low > high else f"chat.pacing.{cadence}"
    assert key in str(info.value)


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"chat\.pacing_by_style\.casual: expected a style"):
        from_dict({"chat": {"pacing_by_style": {"casual": {"async": [1]}}}})


def _turn(count: int) -> Turn:
    messages = [Message(t="00:00", d="15.03", type="text", text="ok") for _ in range(count)]
    return Turn(sender="p-ana", state=LINE, messages=messages)


def test_resume_checks_the_journaled_count() -> None:
    """A journaled count is the one this config draws again, or the journal is refused."""
    rules = ChatRules.from_config(ChatConfig(pacing={"realtime": [0, 0, 1]}), "realtime")
    state = start(rules)
    _check_pacing(5, "c-1", state, TurnEvent(turn=_turn(3), messages=3), rules)
    _check_pacing(5, "c-1", state, TurnEvent(turn=_turn(1)), rules)  # before pacing
    with pytest.raises(IllegalMove, match="this config's pacing draws 3"):
        _check_pacing(5, "c-1", state, TurnEvent(turn=_turn(2), messages=2), rules)
    event = msgspec.json.decode(msgspec.json.encode(TurnEvent(turn=_turn(3), messages=3)))
    assert event["messages"] == 3


@pytest.mark.parametrize("count", [1, 2, 3])
def test_scripted_writer_follows_the_grammars_count(count: int) -> None:
    rules = paced(ChatRules(), count)
    grammar = turn_grammar(start(rules), rules)
    prompt = f"State line: {LINE}\n"
    writer = ScriptedWriter(seed=count)
    for _ in range(5):
        assert writer.turn(prompt, False, grammar).count("<message ") == count
    assert (
        writer.turn(f"{prompt}Messages in this turn: exactly {count}.\n", False).count("<message ")
        == count
    )
