"""The independent rule checker on a corpus of broken conversations, each broken in one
way and caught for that reason (and no other), and on records that are fine."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from handmade_run import NAMES, P, conversations, experiences, msg, personas

from soc_async.records import Conversation, Turn
from soc_async.report.rules import (
    ChatChecks,
    check_conversation,
    check_experience,
    check_persona,
    expected_states,
)

RULES = ChatChecks(max_turns=6)
IDS = set(P)
NAME_OF = dict(zip(P, NAMES, strict=True))
START = {1: "2026-04-02"}  # c1's experience sets its own start date


def rules_broken(c: Conversation, index: int) -> set[str]:
    found = check_conversation(
        c, RULES, persona_ids=IDS, names=NAME_OF, start_date=START.get(index)
    )
    return {f.rule for f in found}


def copy(c: Conversation) -> Conversation:
    return msgspec.convert(msgspec.to_builtins(c), Conversation)


def _c0() -> Conversation:
    return copy(conversations()[0])


def _c1() -> Conversation:
    return copy(conversations()[1])


def _c2() -> Conversation:
    return copy(conversations()[2])


def swap_sender() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].sender = P[0]
    return c, 0


def wrong_countdown() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[0].state = "Plans; 2 turns remaining; Money"
    return c, 0


def skipped_topic() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].state = "Money; 0 turns remaining; end"
    return c, 0


def tag_in_freeform() -> tuple[Conversation, int]:
    c = _c1()
    c.ended_by = "exhausted"
    return c, 1


def tag_before_topics_spent() -> tuple[Conversation, int]:
    c = _c0()
    c.turns = c.turns[:2]
    return c, 0


def stopped_short() -> tuple[Conversation, int]:
    c = _c2()
    c.turns = c.turns[:4]
    return c, 2


def four_messages() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].messages.append(msg("15.03", "10:10", "one more"))
    return c, 0


def unknown_type() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].messages[1].type = "gif"  # type: ignore[assignment]
    return c, 0


def blank_text() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].messages[0].text = "   "
    return c, 0


def leftover_markup() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].messages[0].text = 'ok</message><message t="10:06">'
    return c, 0


def speaker_name_prefix() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[1].messages[0].text = "Louis Martin: ok"
    return c, 0


def impossible_time() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[2].messages[0].t = "25:10"
    return c, 0


def impossible_day() -> tuple[Conversation, int]:
    c = _c0()
    c.turns[0].messages[0].d = "31.04"
    return c, 0


def wrong_start_day() -> tuple[Conversation, int]:
    c = _c1()  # starts 02.04 by its experience, not the config's 15.03
    for turn in c.turns:
        for m in turn.messages:
            m.d = "15.03"
    return c, 1


def time_backwards() -> tuple[Conversation, int]:
    c = _c0()
    for m in c.turns[2].messages:
        m.t = "10:04"
    return c, 0


def gap_too_long() -> tuple[Conversation, int]:
    c = _c0()  # realtime allows 45 minutes between messages
    for m in c.turns[2].messages:
        m.t = "11:40"
    return c, 0


def unknown_persona() -> tuple[Conversation, int]:
    c = _c0()
    c.persona_ids[1] = "p-9999999-zzzz"
    c.turns[1].sender = "p-9999999-zzzz"
    return c, 0


def one_persona_twice() -> tuple[Conversation, int]:
    c = _c0()
    c.persona_ids = [P[0], P[0]]
    return c, 0


def too_many_turns() -> tuple[Conversation, int]:
    c = _c2()
    c.turns.append(
        Turn(
            sender=P[2], state="Trip; 0 turns remaining; end", messages=[msg("21.03", "08:00", "x")]
        )
    )
    return c, 2


CORPUS: list[tuple[Callable[[], tuple[Conversation, int]], set[str]]] = [
    (swap_sender, {"sender"}),
    (wrong_countdown, {"state"}),
    (skipped_topic, {"state"}),
    (tag_in_freeform, {"ending"}),
    (tag_before_topics_spent, {"ending"}),
    (stopped_short, {"ending"}),
    (four_messages, {"message_count"}),
    (unknown_type, {"message_type"}),
    (blank_text, {"empty_text"}),
    (leftover_markup, {"leftover_tag"}),
    (speaker_name_prefix, {"speaker_prefix"}),
    (impossible_time, {"clock_format"}),
    (impossible_day, {"clock_format"}),
    (wrong_start_day, {"clock_start"}),
    (time_backwards, {"clock_backwards"}),
    (gap_too_long, {"gap"}),
    (unknown_persona, {"personas"}),
    (one_persona_twice, {"personas", "sender"}),  # turn 2 cannot be the "other" either
    (too_many_turns, {"turn_count", "ending"}),  # 7 > max_turns, and no limit of 7
]


@pytest.mark.parametrize(("make", "expected"), CORPUS, ids=[m.__name__ for m, _ in CORPUS])
def test_each_broken_conversation_is_caught_for_its_reason(make, expected) -> None:
    """A conversation broken in one way breaks exactly the rules that way breaks."""
    c, index = make()
    assert rules_broken(c, index) == expected


def test_the_valid_conversations_pass() -> None:
    """The hand-built conversations break no rule."""
    for i, c in enumerate(conversations()):
        assert rules_broken(c, i) == set(), c.chat_id


def test_midnight_and_new_year_are_not_time_going_backwards() -> None:
    """23:50 on 31.12 then 00:10 on 01.01 is twenty minutes later, not a year earlier."""
    c = _c0()
    stamps = [("31.12", "23:30"), ("31.12", "23:50"), ("01.01", "00:05"), ("01.01", "00:05"),
              ("01.01", "00:10"), ("01.01", "00:20"), ("01.01", "00:20")]  # fmt: skip
    flat = [m for t in c.turns for m in t.messages]
    for m, (d, t) in zip(flat, stamps, strict=True):
        m.d, m.t = d, t
    found = check_conversation(c, RULES, start_date="2026-12-31")
    assert found == []


def test_expected_states_count_down_per_slot_then_stay_on_the_last() -> None:
    """N counts down to 0 per slot ("1 turn", "0 turns"), next is the following title or
    "end"; past the roadmap, the last slot at 0; no roadmap: one free talk slot."""
    lines = expected_states([("A", 2), ("B", 1)], 5, 50)
    assert lines == [
        "a; 1 turn remaining; b",
        "a; 0 turns remaining; b",
        "b; 0 turns remaining; end",
        "b; 0 turns remaining; end",
        "b; 0 turns remaining; end",
    ]
    assert expected_states([], 2, 4) == [
        "free talk; 3 turns remaining; end",
        "free talk; 2 turns remaining; end",
    ]


def test_persona_and_experience_checks() -> None:
    """A card missing a section or not stating its sampled age; an experience whose opener
    is not in the pair, with no primary topic, or too few events."""
    p = personas()[0]
    assert check_persona(p) == []
    p.persona_text = p.persona_text.replace("**Values**", "**Beliefs**")
    assert {f.rule for f in check_persona(p)} == {"card_sections"}
    p = personas()[1]
    p.meta.age = 31
    assert {f.rule for f in check_persona(p)} == {"card_sample"}
    e = experiences()[0]
    assert check_experience(e, set(P)) == []
    e.opener = P[3]
    e.topics[0].primary = False
    e.instant_events = ["only one"]
    assert {f.rule for f in check_experience(e, set(P))} == {"opener", "primary", "events"}
    e = experiences()[0]
    e.persona_ids = [P[0], "p-x"]
    assert {f.rule for f in check_experience(e, set(P))} == {"pair"}


def test_minimum_turns_overtime_opening_window_and_event_owners() -> None:
    """With chat.min_turns, an overtime stop, a start time and attributed events: a chat
    under min_turns, a structured chat that ran past its overtime stop as max_turns, one
    that says overtime at the wrong length, a first message outside the opening window,
    and an event that belongs to the other persona are each caught for that reason."""
    rules = ChatChecks(max_turns=6, min_turns=3, max_overtime_turns=2, opening_minutes=30)

    def broken(c: Conversation, **kw: object) -> set[str]:
        return {f.rule for f in check_conversation(c, rules, start_date="2026-03-15", **kw)}

    assert broken(_c0()) == set()  # ended on the tag after its roadmap, at 3 turns
    short = _c0()
    short.turns = short.turns[:2]
    short.ended_by = "max_turns"
    assert "turn_count" in broken(short)
    past = _c2()  # semi-structured, roadmap 2: the overtime stop is max(2 + 2, 3) = 4
    assert broken(past) == {"ending"}  # it ran to max_turns 6 instead
    stopped = _c2()
    stopped.turns = stopped.turns[:4]
    stopped.ended_by = "overtime"
    assert broken(stopped) == set()
    stopped.turns = stopped.turns[:3]
    assert broken(stopped) == {"ending"}
    assert broken(_c0(), start_time="09:45") == set()  # 10:00 is 15 min after
    assert broken(_c0(), start_time="09:00") == {"clock_start"}  # an hour after
    assert broken(_c0(), start_time="10:01") == {"clock_start"}  # before it opens
    event = _c0().turns[1].instant_event
    assert event is not None
    sender = _c0().turns[1].sender
    other = next(p for p in _c0().persona_ids if p != sender)
    assert broken(_c0(), event_owners={event: sender}) == set()
    assert broken(_c0(), event_owners={event: other}) == {"event_owner"}


def test_report_card_sections_are_the_parsers_sections() -> None:
    """The report's card check keeps its own copy of the section list (report/ reads runs
    of any version without the generator's parser); the copy must name the same sections
    in the same order as formats/character.py, or the report would flag valid cards."""
    from soc_async.formats.character import SECTIONS
    from soc_async.report.rules import CARD_SECTIONS

    assert CARD_SECTIONS == SECTIONS
