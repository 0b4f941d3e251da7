"""The chat state machine: the topic tracker, the clock, speakers, endings, events and folds.

Expected state lines are written out here (or expanded from the roadmap by :func:`oracle`),
never computed with the module's own ``expected_state_line``, so the tests can disagree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta

import hostile_turns
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soc_async.chat.state import (
    MOVES,
    ChatRules,
    ChatState,
    IllegalMove,
    Phase,
    apply_fold,
    apply_turn,
    current_speaker,
    ending_allowed,
    expected_state_line,
    fold_due,
    initial_state,
    instant_event_for,
    is_done,
    recent_turns,
    replay,
    turns_to_fold,
)
from soc_async.config import ChatConfig
from soc_async.formats.clock import Gap
from soc_async.formats.refusal import Refusal
from soc_async.formats.turn import ParsedTurn, RawMessage, parse_turn
from soc_async.records import Experience, ExperienceMeta, TopicSlot, Turn

NAMES = {"p-mia": "Mia Chen", "p-tom": "Tomás Rivera"}
START = date(2026, 3, 15)
RULES = ChatRules()
ROADMAP = [("Flat viewing", 3), ("Deposit money", 2), ("Moving day", 1)]


def experience(
    style: str = "structured",
    topics: list[tuple[str, int]] | None = None,
    cadence: str = "realtime",
    opener: str = "p-mia",
) -> Experience:
    return Experience(
        id="e-0000001-aa",
        persona_ids=["p-mia", "p-tom"],
        experience_text="Flatmates-to-be sorting out a new place.",
        style=style,  # type: ignore[arg-type]
        cadence=cadence,  # type: ignore[arg-type]
        topics=[TopicSlot(title=t, turns=n) for t, n in (ROADMAP if topics is None else topics)],
        initial_state="",
        instant_events=["the landlord calls", "the bus arrives"],
        opener=opener,
        meta=ExperienceMeta(iteration=0, model="test", time_taken=0.0),
    )


def start(rules: ChatRules = RULES, start_date: date = START, **kwargs: object) -> ChatState:
    return initial_state(
        experience(**kwargs),  # type: ignore[arg-type]
        chat_id="c-0000001-bb",
        names=NAMES,
        rules=rules,
        start_date=start_date,
    )


def turn(line: str, *stamps: tuple[str, str], ended: bool = False, text: str = "ok") -> ParsedTurn:
    return ParsedTurn(
        state_line=line, ended=ended, messages=[RawMessage(t, d, "text", text) for t, d in stamps]
    )


def say(
    state: ChatState, line: str, *, ended: bool = False, rules: ChatRules = RULES
) -> ChatState | Refusal:
    """One message a minute after the clock (12:00 on the start date for the first)."""
    moment = state.clock + timedelta(minutes=1) if state.clock else datetime(2026, 3, 15, 12)
    return apply_turn(state, turn(line, (f"{moment:%H:%M}", f"{moment:%d.%m}"), ended=ended), rules)


def accepted(result: ChatState | Refusal) -> ChatState:
    assert isinstance(result, ChatState), result
    return result


def refused(result: ChatState | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.detail and "\n" not in result.detail
    return result


def oracle(topics: list[tuple[str, int]], k: int) -> str:
    """Turn k's state line, expanded from the roadmap by hand."""
    lines = []
    for i, (title, budget) in enumerate(topics):
        following = topics[i + 1][0] if i + 1 < len(topics) else "end"
        for n in range(budget - 1, -1, -1):
            lines.append(f"{title}; {n} {'turn' if n == 1 else 'turns'} remaining; {following}")
    return lines[k] if k < len(lines) else f"{topics[-1][0]}; 0 turns remaining; end"


# --- starting ---------------------------------------------------------------------------


def test_initial_state_follows_the_experience() -> None:
    """Slots keep the roadmap's order and budgets; the opener speaks first; nothing happened."""
    state = start(opener="p-tom")
    assert state.slots == ROADMAP
    assert state.speakers == ["p-tom", "p-mia"]
    assert state.speaker_names == ["Tomás Rivera", "Mia Chen"]
    assert (state.turn_index, state.slot_index, state.turns_left_in_slot) == (0, 0, 3)
    assert state.phase is Phase.OPENING and state.clock is None and state.turns == []
    assert current_speaker(state) == "p-tom"


def test_freeform_without_topics_talks_freely_to_max_turns() -> None:
    """A freeform experience without a roadmap gets one "free talk" slot of max_turns."""
    state = start(style="freeform", topics=[], rules=ChatRules(max_turns=4))
    assert state.slots == [("free talk", 4)] and state.turn_limit == 4
    assert expected_state_line(state) == "free talk; 3 turns remaining; end"


@pytest.mark.parametrize(
    ("style", "max_turns", "limit"),
    [("freeform", 50, 6), ("freeform", 4, 4), ("structured", 50, 50), ("semi-structured", 9, 9)],
)
def test_turn_limit(style: str, max_turns: int, limit: int) -> None:
    """Freeform stops at the roadmap's end or max_turns; the others run to max_turns."""
    assert start(style=style, rules=ChatRules(max_turns=max_turns)).turn_limit == limit


def test_titles_are_made_safe_for_the_state_line() -> None:
    """A ';' or markup in a title cannot break the one-line state format."""
    state = start(topics=[("Rent;  bills <b>", 1), ("", 1)])
    assert state.slots == [("Rent, bills b", 1), ("topic 2", 1)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"persona_ids": ["p-mia", "p-mia"]}, "two distinct"),
        ({"opener": "p-zoe"}, "two distinct"),
        ({"topics": [TopicSlot(title="x", turns=0)]}, "budget"),
        ({"persona_ids": ["p-mia", "p-zoe"]}, "no name"),
    ],
)
def test_initial_state_refuses_broken_experiences(change: dict, message: str) -> None:
    """Experiences the experience stage should have refused raise ValueError with the id."""
    broken = msgspec.structs.replace(experience(), **change)
    with pytest.raises(ValueError, match=message):
        initial_state(broken, chat_id="c", names=NAMES, rules=RULES, start_date=START)


# --- the topic tracker --------------------------------------------------------------------


def test_budget_counts_down_across_slots_then_overtime() -> None:
    """N counts down to 0 within each slot, the next title follows, the last says "end",
    and a structured chat that does not end stays on the last slot at 0."""
    state = start()
    lines = [
        "Flat viewing; 2 turns remaining; Deposit money",
        "Flat viewing; 1 turn remaining; Deposit money",
        "Flat viewing; 0 turns remaining; Deposit money",
        "Deposit money; 1 turn remaining; Moving day",
        "Deposit money; 0 turns remaining; Moving day",
        "Moving day; 0 turns remaining; end",
        "Moving day; 0 turns remaining; end",
        "Moving day; 0 turns remaining; end",
    ]
    phases = []
    for line in lines:
        assert expected_state_line(state) == line
        state = accepted(say(state, line))
        phases.append(state.phase)
    assert [t.state for t in state.turns] == lines
    assert phases == [Phase.TALKING] * 5 + [Phase.OVERTIME] * 3


def test_state_line_is_compared_ignoring_case_and_spacing() -> None:
    """Spacing around ';', runs of spaces and case do not matter; the stored line is canonical."""
    state = accepted(say(start(), "  flat VIEWING ;2 turns   remaining;deposit money "))
    assert state.turns[0].state == "Flat viewing; 2 turns remaining; Deposit money"


@pytest.mark.parametrize(
    "line",
    [
        "Flat viewing; 2 turn remaining; Deposit money",  # singular for two
        "Flat viewing; 3 turns remaining; Deposit money",  # the budget, not what is left after
        "Flat viewing; 2 turns remaining; Moving day",  # wrong next topic
        "Flat viewing; 2 turns remaining; end",
    ],
)
def test_wrong_state_line_is_a_mismatch(line: str) -> None:
    """Any state line other than the tracker's is refused, naming the expected one."""
    violation = refused(say(start(), line))
    assert violation.reason == "state_mismatch"
    assert "Flat viewing; 2 turns remaining; Deposit money" in violation.detail


def test_singular_only_for_one() -> None:
    """ "1 turn remaining" is the only spelling for one; "1 turns" is refused."""
    state = accepted(say(start(), "Flat viewing; 2 turns remaining; Deposit money"))
    assert refused(say(state, "Flat viewing; 1 turns remaining; Deposit money")).reason == (
        "state_mismatch"
    )
    accepted(say(state, "Flat viewing; 1 turn remaining; Deposit money"))


def test_moving_on_early_is_named() -> None:
    """A reply that jumps to a later topic before the slot is spent says it moved on early."""
    violation = refused(say(start(), "Deposit money; 1 turn remaining; Moving day"))
    assert violation.reason == "state_mismatch"
    assert "move on early" in violation.detail and "'Flat viewing' has 3 turns left" in (
        violation.detail
    )


def test_freeform_runs_to_the_end_of_its_roadmap() -> None:
    """A freeform chat ends by max_turns on the roadmap's last turn."""
    state = start(style="freeform")
    for k in range(6):
        assert not is_done(state)
        state = accepted(say(state, oracle(ROADMAP, k)))
    assert is_done(state) and state.ended_by == "max_turns" and state.phase is Phase.ENDED
    assert len(state.turns) == 6


def test_max_turns_caps_a_structured_chat_mid_roadmap() -> None:
    """max_turns ends a structured chat even with topics left."""
    state = start(rules=ChatRules(max_turns=2))
    state = accepted(say(state, oracle(ROADMAP, 0), rules=ChatRules(max_turns=2)))
    state = accepted(say(state, oracle(ROADMAP, 1), rules=ChatRules(max_turns=2)))
    assert state.ended_by == "max_turns" and len(state.turns) == 2


# --- endings ------------------------------------------------------------------------------


def drive(state: ChatState, turns: int, topics: list[tuple[str, int]] = ROADMAP) -> ChatState:
    for _ in range(turns):
        state = accepted(say(state, oracle(topics, state.turn_index)))
    return state


def test_ending_on_the_last_slot_zero() -> None:
    """The ending tag is accepted on the turn that spends the last slot: ended_by exhausted."""
    state = drive(start(), 5)
    assert ending_allowed(state)
    state = accepted(say(state, "Moving day; 0 turns remaining; end", ended=True))
    assert state.ended_by == "exhausted" and state.phase is Phase.ENDED and len(state.turns) == 6


def test_ending_in_overtime() -> None:
    """A structured chat that went on past its roadmap may still end later."""
    state = drive(start(), 8)
    assert state.phase is Phase.OVERTIME and ending_allowed(state)
    assert accepted(say(state, oracle(ROADMAP, 8), ended=True)).ended_by == "exhausted"


def test_semi_structured_may_end_too() -> None:
    """Semi-structured chats end on the tag like structured ones."""
    state = drive(start(style="semi-structured"), 5)
    assert accepted(say(state, oracle(ROADMAP, 5), ended=True)).ended_by == "exhausted"


def test_ending_early_is_refused() -> None:
    """The tag one turn before every slot is spent is an early ending, counting what is left."""
    state = drive(start(), 4)
    assert not ending_allowed(state)
    violation = refused(say(state, oracle(ROADMAP, 4), ended=True))
    assert violation.reason == "early_ending" and "1 turn of the topic roadmap" in violation.detail


def test_freeform_never_ends_on_the_tag() -> None:
    """Even on its last turn a freeform chat may not carry the ending tag."""
    state = drive(start(style="freeform"), 5)
    assert not ending_allowed(state)
    assert refused(say(state, oracle(ROADMAP, 5), ended=True)).reason == "early_ending"


def test_no_turn_after_the_end() -> None:
    """Applying, replaying or asking anything of an ended chat's next turn is an illegal move."""
    state = accepted(say(drive(start(), 5), oracle(ROADMAP, 5), ended=True))
    assert not ending_allowed(state)
    with pytest.raises(IllegalMove, match="ended"):
        say(state, oracle(ROADMAP, 6))
    with pytest.raises(IllegalMove, match="ended"):
        replay(state, state.turns[-1], ended=False)


def test_moves_table_has_no_way_out_of_ended() -> None:
    """ENDED is final and OPENING is never returned to."""
    assert MOVES[Phase.ENDED] == frozenset()
    assert all(Phase.OPENING not in targets for targets in MOVES.values())


# --- speakers, events, records -----------------------------------------------------------


def test_senders_alternate_from_the_opener() -> None:
    """Turn k's sender is the opener for even k, the other for odd k."""
    state = drive(start(opener="p-tom"), 5)
    assert [t.sender for t in state.turns] == ["p-tom", "p-mia", "p-tom", "p-mia", "p-tom"]
    assert current_speaker(state) == "p-mia"


def test_instant_event_is_recorded_on_its_turn() -> None:
    """The event woven into the prompt is stored on that turn only."""
    state = apply_turn(
        start(),
        turn(oracle(ROADMAP, 0), ("12:00", "15.03")),
        RULES,
        instant_event="the bus arrives",
    )
    state = accepted(say(accepted(state), oracle(ROADMAP, 1)))
    assert [t.instant_event for t in state.turns] == ["the bus arrives", None]


def test_accepted_turn_keeps_messages_as_records() -> None:
    """Messages become records with their stamps, type and stripped text."""
    parsed = ParsedTurn(
        state_line=oracle(ROADMAP, 0),
        ended=False,
        messages=[RawMessage("12:00", "15.03", "image", "  [photo of the kitchen] ")],
    )
    state = accepted(apply_turn(start(), parsed, RULES))
    message = state.turns[0].messages[0]
    assert (message.t, message.d, message.type, message.text) == (
        "12:00",
        "15.03",
        "image",
        "[photo of the kitchen]",
    )


def test_apply_turn_does_not_touch_its_input() -> None:
    """The input state is unchanged by an accepted or a refused turn."""
    state = drive(start(), 2)
    before = msgspec.json.encode(state)
    accepted(say(state, oracle(ROADMAP, 2)))
    refused(say(state, "nonsense; 1 turn remaining; x"))
    assert msgspec.json.encode(state) == before


def test_state_round_trips_through_json() -> None:
    """A state is journal-able: JSON out and back gives an equal state."""
    state = drive(start(), 4)
    assert msgspec.json.decode(msgspec.json.encode(state), type=ChatState) == state


def test_repr_shows_where_the_chat_stands() -> None:
    """repr names the chat, its phase, turn count, slot and clock, not the whole transcript."""
    text = repr(drive(start(), 4))
    for part in ("c-0000001-bb", "talking", "turn 4/50", "slot 2/3", "'Deposit money'", "12:03"):
        assert part in text
    assert "Turn(" not in text


def test_instant_event_draws_are_reproducible_and_near_p() -> None:
    """Draws depend only on (seed, chat, turn): repeatable, and an event on about p of turns."""
    events = ["a", "b", "c"]
    draws = [instant_event_for(7, f"c-{i}", k, events, 0.05) for i in range(200) for k in range(50)]
    again = [instant_event_for(7, f"c-{i}", k, events, 0.05) for i in range(20) for k in range(50)]
    assert draws[: len(again)] == again
    rate = sum(d is not None for d in draws) / len(draws)
    assert 0.04 < rate < 0.06
    assert {d for d in draws if d} == set(events)
    other_seed = [
        instant_event_for(8, f"c-{i}", k, events, 0.05) for i in range(20) for k in range(50)
    ]
    assert other_seed != again


def test_instant_event_edge_probabilities() -> None:
    """p=0 never draws, p=1 always does, and no events means none."""
    assert all(instant_event_for(1, "c", k, ["x"], 0.0) is None for k in range(100))
    assert all(instant_event_for(1, "c", k, ["x"], 1.0) == "x" for k in range(100))
    assert instant_event_for(1, "c", 0, [], 1.0) is None


def test_instant_event_draws_match_in_another_process() -> None:
    """A resumed run in a new process (another hash seed) draws the same events."""
    here = [instant_event_for(3, "c-9", k, ["x", "y"], 0.3) for k in range(40)]
    code = (
        "from soc_async.chat.state import instant_event_for as f;"
        "print([f(3, 'c-9', k, ['x', 'y'], 0.3) for k in range(40)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(here)


# --- the clock ----------------------------------------------------------------------------


def test_first_message_must_be_on_the_start_date() -> None:
    """The chat's first message falls on its start date, whatever the time."""
    violation = refused(apply_turn(start(), turn(oracle(ROADMAP, 0), ("00:30", "16.03")), RULES))
    assert violation.reason == "wrong_date_start" and "15.03" in violation.detail
    accepted(apply_turn(start(), turn(oracle(ROADMAP, 0), ("00:00", "15.03")), RULES))


def test_clock_backwards_within_a_turn() -> None:
    """A message before the one before it is refused with both stamps in the detail."""
    parsed = turn(oracle(ROADMAP, 0), ("14:05", "15.03"), ("14:02", "15.03"))
    violation = refused(apply_turn(start(), parsed, RULES))
    assert violation.reason == "clock_backwards"
    assert violation.detail == "message 2 at 14:02 on 15.03 is before the previous 14:05 on 15.03"


def test_clock_backwards_across_turns() -> None:
    """A reply stamped before the previous turn's last message is refused."""
    state = accepted(apply_turn(start(), turn(oracle(ROADMAP, 0), ("14:05", "15.03")), RULES))
    violation = refused(apply_turn(state, turn(oracle(ROADMAP, 1), ("14:04", "15.03")), RULES))
    assert violation.reason == "clock_backwards"
    accepted(apply_turn(state, turn(oracle(ROADMAP, 1), ("14:05", "15.03")), RULES))


def test_a_day_back_is_backwards_not_a_year_ahead() -> None:
    """Yesterday's date after midnight is reported as going backwards."""
    state = accepted(apply_turn(start(), turn(oracle(ROADMAP, 0), ("23:50", "15.03")), RULES))
    state = accepted(apply_turn(state, turn(oracle(ROADMAP, 1), ("00:10", "16.03")), RULES))
    violation = refused(apply_turn(state, turn(oracle(ROADMAP, 2), ("00:20", "15.03")), RULES))
    assert violation.reason == "clock_backwards"


def test_midnight_and_new_year_roll_the_clock() -> None:
    """Messages across midnight of 31.12 move the clock into the next year."""
    state = start(start_date=date(2026, 12, 31))
    parsed = turn(oracle(ROADMAP, 0), ("23:50", "31.12"), ("23:58", "31.12"), ("00:20", "01.01"))
    state = accepted(apply_turn(state, parsed, RULES))
    assert state.clock == datetime(2027, 1, 1, 0, 20)
    state = accepted(apply_turn(state, turn(oracle(ROADMAP, 1), ("00:21", "01.01")), RULES))
    assert state.clock == datetime(2027, 1, 1, 0, 21)


def test_gap_too_long_for_the_cadence() -> None:
    """A step longer than the cadence's max gap is refused; the same step fits a slower one."""
    first = turn(oracle(ROADMAP, 0), ("12:00", "15.03"))
    state = accepted(apply_turn(start(), first, RULES))
    late = turn(oracle(ROADMAP, 1), ("12:46", "15.03"))
    violation = refused(apply_turn(state, late, RULES))
    assert violation.reason == "gap_too_long" and "46 min" in violation.detail
    accepted(apply_turn(state, turn(oracle(ROADMAP, 1), ("12:45", "15.03")), RULES))
    delayed = ChatRules.from_config(ChatConfig(), "delayed")
    state = accepted(apply_turn(start(delayed, cadence="delayed"), first, delayed))
    accepted(apply_turn(state, late, delayed))


def test_gap_too_long_inside_a_turn() -> None:
    """The max gap holds between messages of one turn too, the first turn included."""
    parsed = turn(oracle(ROADMAP, 0), ("12:00", "15.03"), ("13:00", "15.03"))
    assert refused(apply_turn(start(), parsed, RULES)).reason == "gap_too_long"


def test_min_gap_holds_for_the_reply_only() -> None:
    """With a min gap, a reply must wait it; messages within a turn need not."""
    rules = ChatRules(gap_min=5, gap_max=45)
    state = accepted(apply_turn(start(rules), turn(oracle(ROADMAP, 0), ("12:00", "15.03")), rules))
    quick = turn(oracle(ROADMAP, 1), ("12:04", "15.03"))
    assert refused(apply_turn(state, quick, rules)).reason == "gap_too_short"
    burst = turn(oracle(ROADMAP, 1), ("12:05", "15.03"), ("12:05", "15.03"))
    accepted(apply_turn(state, burst, rules))


def test_rules_from_config() -> None:
    """The config's [chat] section becomes the rules, with the gap of the chat's cadence."""
    config = ChatConfig(max_turns=12, gaps={"realtime": [1, 30], "delayed": [0, 100],
                                            "async": [0, 1000]})  # fmt: skip
    rules = ChatRules.from_config(config, "realtime")
    assert (rules.max_turns, rules.gap) == (12, Gap(min_minutes=1, max_minutes=30))
    assert ChatRules.from_config(config, "async").gap_max == 1000


@pytest.mark.parametrize(
    "change",
    [{"gap_min": 10, "gap_max": 5}, {"min_messages": 0}, {"min_messages": 4, "max_messages": 3}],
)
def test_rules_refuse_impossible_bounds(change: dict) -> None:
    """Rules that no turn could satisfy are refused when made."""
    with pytest.raises(ValueError):
        ChatRules(**change)


# --- messages -----------------------------------------------------------------------------


def one(text: str, kind: str = "text") -> ParsedTurn:
    return ParsedTurn(oracle(ROADMAP, 0), False, [RawMessage("12:00", "15.03", kind, text)])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("   ", "empty_text"),
        ("", "empty_text"),
        ("so <i>that</i> happened", "leftover_tag"),
        ("</message> oops", "leftover_tag"),
        ("Mia: found one on Elm St", "speaker_prefix"),
        ("mia chen - found one", "speaker_prefix"),
        ("  TOMÁS : hey", "speaker_prefix"),
        ("Tomás Rivera: hey", "speaker_prefix"),
    ],
)
def test_bad_texts(text: str, reason: str) -> None:
    """Empty text, leftover markup and a speaker-name prefix are each refused."""
    assert refused(apply_turn(start(), one(text), RULES)).reason == reason


@pytest.mark.parametrize(
    "text",
    ["Mia, you up?", "Miami: still cheaper", "i <3 this flat", "a > b", "Tomás-style plan lol"],
)
def test_texts_that_only_look_suspicious(text: str) -> None:
    """Names used in a sentence, "<3" and ">" are ordinary chat text."""
    accepted(apply_turn(start(), one(text), RULES))


def test_type_outside_the_rules_is_unknown() -> None:
    """A type the run does not allow is refused even if the format knows it."""
    rules = ChatRules(allowed_types=("text", "image"))
    assert refused(apply_turn(start(rules), one("[voice note]", "audio"), rules)).reason == (
        "unknown_type"
    )


@pytest.mark.parametrize(("count", "reason"), [(0, "no_messages"), (1, "too_few_messages"),
                                               (4, "too_many_messages")])  # fmt: skip
def test_message_count_bounds(count: int, reason: str) -> None:
    """A turn holds min..max messages."""
    rules = ChatRules(min_messages=2, max_messages=3)
    stamps = [(f"12:0{i}", "15.03") for i in range(count)]
    assert refused(apply_turn(start(rules), turn(oracle(ROADMAP, 0), *stamps), rules)).reason == (
        reason
    )


# --- memory -------------------------------------------------------------------------------


def test_folding_keeps_a_window_of_recent_turns() -> None:
    """Past the window, the oldest turns are folded: folded grows, the summary is replaced."""
    topics = [("Flat viewing", 30)]
    state = start(topics=topics)
    for _ in range(4):
        state = accepted(say(state, oracle(topics, state.turn_index)))
    assert not fold_due(state, window=4, fold=2)
    state = accepted(say(state, oracle(topics, state.turn_index)))
    assert fold_due(state, window=4, fold=2)
    oldest = turns_to_fold(state, 2)
    assert oldest == state.turns[:2]
    state = apply_fold(state, "They saw the flat and liked the light.", len(oldest))
    assert state.folded == 2 and state.summary.startswith("They saw")
    assert recent_turns(state) == state.turns[2:] and not fold_due(state, window=4, fold=2)
    with pytest.raises(ValueError, match="cannot fold"):
        apply_fold(state, "x", 4)


def test_fold_lands_after_more_turns() -> None:
    """Turns accepted while the summary call ran stay unfolded."""
    topics = [("Flat viewing", 30)]
    state = drive(start(topics=topics), 6, topics)
    oldest = turns_to_fold(state, 3)
    state = drive(state, 2, topics)
    state = apply_fold(state, "summary", len(oldest))
    assert recent_turns(state) == state.turns[3:] and len(recent_turns(state)) == 5


def test_no_fold_once_ended() -> None:
    """A finished chat needs no more prompts, so no fold is due."""
    state = drive(start(style="freeform", topics=[("x", 6)]), 6, [("x", 6)])
    assert is_done(state) and not fold_due(state, window=2, fold=1)


# --- resume -------------------------------------------------------------------------------


@pytest.mark.parametrize("with_rules", [True, False])
def test_replay_rebuilds_the_same_state(with_rules: bool) -> None:
    """Replaying a chat's journal (turns as JSON, and a fold) onto a fresh state reproduces it."""
    state = apply_fold(drive(start(), 5), "They booked a viewing.", 2)
    state = accepted(say(state, oracle(ROADMAP, 5), ended=True))
    journal = [msgspec.json.encode(t) for t in state.turns]
    again = start()
    for k, line in enumerate(journal):
        if k == 5:
            again = apply_fold(again, "They booked a viewing.", 2)
        decoded = msgspec.json.decode(line, type=Turn)
        again = replay(again, decoded, k == 5, RULES if with_rules else None)
    assert again == state


def test_replay_refuses_a_foreign_journal() -> None:
    """A journaled turn with the wrong sender, state line or clock raises IllegalMove."""
    good = drive(start(), 2)
    fresh = drive(start(), 1)
    wrong_sender = msgspec.structs.replace(good.turns[1], sender="p-mia")
    wrong_state = msgspec.structs.replace(good.turns[1], state=oracle(ROADMAP, 3))
    earlier = msgspec.structs.replace(good.turns[0].messages[0], t="11:00")
    backwards = msgspec.structs.replace(good.turns[1], messages=[earlier])
    for bad in (wrong_sender, wrong_state, backwards):
        for rules in (None, RULES):
            with pytest.raises(IllegalMove, match="turn 2"):
                replay(fresh, bad, ended=False, rules=rules)


# --- invariants over random roadmaps ------------------------------------------------------

titles = st.lists(st.sampled_from(["rent", "the cat", "Übergabe", "keys", "paint"]), min_size=1,
                  max_size=3).map(" ".join)  # fmt: skip
roadmaps = st.lists(st.tuples(titles, st.integers(1, 6)), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(
    topics=roadmaps,
    style=st.sampled_from(["freeform", "semi-structured", "structured"]),
    max_turns=st.integers(1, 30),
    data=st.data(),
)
def test_tracker_invariants(
    topics: list[tuple[str, int]], style: str, max_turns: int, data: st.DataObject
) -> None:
    """Driving a chat with the roadmap's own lines always succeeds until it is done; N is never
    negative; a slot advances only once spent; the chat ends at its limit or on the tag,
    and the tag comes only once every slot is spent in a chat that may end."""
    rules = ChatRules(max_turns=max_turns)
    state = start(rules=rules, style=style, topics=topics)
    roadmap = sum(budget for _, budget in topics)
    while not is_done(state):
        k = state.turn_index
        line = oracle(topics, k)
        assert expected_state_line(state) == line
        assert int(line.split(";")[1].split()[0]) >= 0
        assert ending_allowed(state) == (style != "freeform" and k >= roadmap - 1)
        end_now = ending_allowed(state) and data.draw(st.booleans())
        after = accepted(say(state, line, ended=end_now, rules=rules))
        assert after.slot_index in (state.slot_index, state.slot_index + 1)
        if after.slot_index > state.slot_index:
            assert state.turns_left_in_slot == 1
        assert after.turns_left_in_slot >= 0
        state = after
    turns = len(state.turns)
    if state.ended_by == "exhausted":
        assert style != "freeform" and roadmap <= turns <= max_turns
    else:
        assert turns == (min(max_turns, roadmap) if style == "freeform" else max_turns)
    assert [t.state for t in state.turns] == [oracle(topics, k) for k in range(turns)]
    assert [t.sender for t in state.turns] == [["p-mia", "p-tom"][k % 2] for k in range(turns)]


# --- the hostile corpus -------------------------------------------------------------------


def corpus_state(at: str) -> ChatState:
    corpus = hostile_turns
    exp = msgspec.structs.replace(
        experience(style=corpus.STYLE, cadence=corpus.CADENCE, topics=corpus.TOPICS),
        persona_ids=list(corpus.PERSONAS),
        opener=corpus.OPENER,
    )
    state = initial_state(
        exp,
        chat_id="c-hostile",
        names=corpus.PERSONAS,
        rules=RULES,
        start_date=date.fromisoformat(corpus.START),
    )
    for reply in corpus.SETUP[: corpus.SETUP_AT[at]]:
        parsed = parse_turn(reply)
        assert isinstance(parsed, ParsedTurn), parsed
        state = accepted(apply_turn(state, parsed, RULES))
    return state


@pytest.mark.parametrize("case", hostile_turns.CORPUS, ids=lambda c: c.name)
def test_hostile_reply(case: hostile_turns.Hostile) -> None:
    """Each hostile reply is refused with its reason (parse or rules), each control accepted."""
    state = corpus_state(case.at)
    result = parse_turn(case.reply)
    if isinstance(result, ParsedTurn):
        result = apply_turn(state, result, RULES)
    if case.reason is None:
        accepted(result)
    else:
        assert not isinstance(result, ChatState), f"accepted: {case.reply!r}"
        assert result.reason == case.reason, result
        assert result.detail and "\n" not in result.detail


# --- opening window, minimum turns, overtime, events by owner ------------------------------


def test_first_message_falls_in_the_opening_window() -> None:
    """With a start time the first message must fall between it and opening_minutes later
    (across midnight too); before or after the window is wrong_date_start."""
    from datetime import time

    from soc_async.chat.state import opening_window

    rules = ChatRules(opening_minutes=30)
    state = initial_state(
        experience(),
        chat_id="c-1",
        names=NAMES,
        rules=rules,
        start_date=date(2026, 12, 31),
        start_time=time(23, 50),
    )
    assert opening_window(state) == (datetime(2026, 12, 31, 23, 50), datetime(2027, 1, 1, 0, 20))
    line = oracle(ROADMAP, 0)
    assert refused(apply_turn(state, turn(line, ("23:49", "31.12")), rules)).reason == (
        "wrong_date_start"
    )
    assert refused(apply_turn(state, turn(line, ("00:21", "01.01")), rules)).reason == (
        "wrong_date_start"
    )
    after = accepted(apply_turn(state, turn(line, ("00:05", "01.01")), rules))
    assert after.clock == datetime(2027, 1, 1, 0, 5)


def test_ending_before_min_turns_is_refused_and_a_short_plan_is_a_problem() -> None:
    """The ending tag is refused until min_turns turns are in, even with the roadmap
    spent; a freeform plan shorter than min_turns cannot be rolled out at all."""
    from soc_async.chat.state import plan_problem

    rules = ChatRules(min_turns=3)
    state = start(rules=rules, topics=[("Quick question", 2)])
    assert plan_problem(state) is None
    state = accepted(say(state, "Quick question; 1 turn remaining; end", rules=rules))
    assert not ending_allowed(state)
    early = refused(say(state, "Quick question; 0 turns remaining; end", ended=True, rules=rules))
    assert early.reason == "early_ending" and "at least 3 turns" in early.detail
    state = accepted(say(state, "Quick question; 0 turns remaining; end", rules=rules))
    assert ending_allowed(state)
    state = accepted(say(state, "Quick question; 0 turns remaining; end", ended=True, rules=rules))
    assert state.ended_by == "exhausted" and state.turn_index == 3
    short = start(rules=rules, style="freeform", topics=[("Hi", 2)])
    problem = plan_problem(short)
    assert problem is not None and problem.reason == "too_short"


def test_structured_chat_without_the_tag_stops_after_its_overtime() -> None:
    """A structured chat that never writes the ending tag stops max_overtime_turns after
    its roadmap (ended_by "overtime"), not at max_turns; a freeform one has no overtime."""
    from soc_async.chat.state import turn_limit

    rules = ChatRules(max_turns=50, max_overtime_turns=2)
    state = start(rules=rules)
    assert turn_limit(state) == 6 + 2
    for k in range(8):
        assert not is_done(state)
        state = accepted(say(state, oracle(ROADMAP, k), rules=rules))
    assert is_done(state) and state.ended_by == "overtime" and state.turn_index == 8
    free = start(rules=rules, style="freeform")
    assert free.overtime_limit is None and turn_limit(free) == 6


def test_instant_event_goes_only_to_its_owner_or_anyone() -> None:
    """Over many turns, an event owned by one persona is never drawn for the other, and
    the draw rate stays p over turns that have any eligible event."""
    events = ["the landlord calls Mia", "Tomás's bus arrives", "the wifi drops"]
    owners = ["p-mia", "p-tom", None]
    drawn = {"p-mia": set(), "p-tom": set()}
    hits = 0
    for k in range(4000):
        speaker = "p-mia" if k % 2 == 0 else "p-tom"
        event = instant_event_for(1, "c-x", k, events, 0.05, speaker=speaker, owners=owners)
        if event is not None:
            hits += 1
            drawn[speaker].add(event)
    assert drawn["p-mia"] <= {"the landlord calls Mia", "the wifi drops"}
    assert drawn["p-tom"] <= {"Tomás's bus arrives", "the wifi drops"}
    assert 0.04 <= hits / 4000 <= 0.06
    assert instant_event_for(1, "c-x", 0, ["only Tom's"], 1.0, speaker="p-mia",
                             owners=["p-tom"]) is None  # fmt: skip
