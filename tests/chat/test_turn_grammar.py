"""The per-turn grammar: it compiles, admits exactly the turns its rules describe, and what it
admits (in time order) the state machine accepts."""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime, timedelta

import pytest
import xgrammar
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from xgrammar.testing import _is_grammar_accept_string

from soc_async.chat.grammar import turn_grammar
from soc_async.chat.state import (
    ChatRules,
    ChatState,
    IllegalMove,
    apply_turn,
    initial_state,
)
from soc_async.formats.clock import Gap, minutes_between
from soc_async.formats.turn import ParsedTurn, RawMessage, parse_turn
from soc_async.records import Experience, ExperienceMeta, TopicSlot

NAMES = {"p-ana": "Ana Sousa", "p-kofi": "Kofi Mensah"}
RULES = ChatRules()
TOPICS = [("Broken bike", 2), ("Band practice", 1)]


def start(
    style: str = "structured",
    topics: list[tuple[str, int]] = TOPICS,
    cadence: str = "realtime",
    rules: ChatRules = RULES,
    start_date: date = date(2026, 3, 15),
) -> ChatState:
    exp = Experience(
        id="e-1",
        persona_ids=["p-ana", "p-kofi"],
        experience_text="Neighbours who share a garage.",
        style=style,  # type: ignore[arg-type]
        cadence=cadence,  # type: ignore[arg-type]
        topics=[TopicSlot(title=t, turns=n) for t, n in topics],
        initial_state="",
        instant_events=[],
        opener="p-ana",
        meta=ExperienceMeta(iteration=0, model="test", time_taken=0.0),
    )
    return initial_state(exp, chat_id="c-1", names=NAMES, rules=rules, start_date=start_date)


def write(line: str, *messages: tuple[str, str, str, str], ending: bool = False) -> str:
    """A turn laid out exactly as the grammar spells it; messages are (t, d, type, text)."""
    tag = "<predefined_topics_exhausted/>\n" if ending else ""
    body = "".join(
        f'<message t="{t}" d="{d}" type="{k}">{x}</message>\n' for t, d, k, x in messages
    )
    return f"<turn>\n<state>\n{line}\n{tag}</state>\n{body}</turn>"


def advance(
    state: ChatState, line: str, *stamps: tuple[str, str], ending: bool = False
) -> ChatState:
    parsed = parse_turn(write(line, *((t, d, "text", "ok") for t, d in stamps), ending=ending))
    assert isinstance(parsed, ParsedTurn)
    after = apply_turn(state, parsed, RULES)
    assert isinstance(after, ChatState), after
    return after


def accepts(state: ChatState, text: str, rules: ChatRules = RULES) -> bool:
    return _is_grammar_accept_string(turn_grammar(state, rules), text)


FIRST = "Broken bike; 1 turn remaining; Band practice"
SECOND = "Broken bike; 0 turns remaining; Band practice"
THIRD = "Band practice; 0 turns remaining; end"


@pytest.fixture
def middle() -> ChatState:
    """Kofi's turn; the clock reads 22:53 on 15.03."""
    return advance(start(), FIRST, ("22:51", "15.03"), ("22:53", "15.03"))


def test_grammars_compile() -> None:
    """Grammars for the first turn, mid-chat, an allowed ending and a new-year window compile."""
    first = start()
    mid = advance(first, FIRST, ("12:00", "15.03"))
    last = advance(mid, SECOND, ("12:10", "15.03"))
    new_year = advance(
        start(cadence="async", start_date=date(2026, 12, 30)), FIRST, ("22:00", "30.12")
    )
    for state in (first, mid, last, new_year):
        xgrammar.Grammar.from_ebnf(turn_grammar(state, RULES))
    xgrammar.Grammar.from_ebnf(turn_grammar(new_year, ChatRules(gap_max=72 * 60)))


def test_accepts_a_valid_turn(middle: ChatState) -> None:
    """A turn with the expected state, forward stamps and allowed types is admitted."""
    assert accepts(
        middle,
        write(
            SECOND,
            ("22:53", "15.03", "text", "ok so the chain came off again"),
            ("22:58", "15.03", "image", "[photo of the chain]"),
            ("23:38", "15.03", "sticker", "[thumbs up]"),
        ),
    )


@pytest.mark.parametrize(
    ("line", "message", "ending"),
    [
        (FIRST, ("22:58", "15.03", "text", "hi"), False),  # wrong state line
        (SECOND.lower(), ("22:58", "15.03", "text", "hi"), False),  # the literal is exact
        (SECOND, ("22:52", "15.03", "text", "hi"), False),  # before the clock, same day
        (SECOND, ("23:39", "15.03", "text", "hi"), False),  # past the 45-minute gap
        (SECOND, ("22:58", "14.03", "text", "hi"), False),  # the day before
        (SECOND, ("22:58", "16.03", "text", "hi"), False),  # a day the gap cannot reach
        (SECOND, ("22:58", "15.03", "gif", "hi"), False),  # unknown type
        (SECOND, ("22:58", "15.03", "text", "hi"), True),  # ending where not allowed
        (SECOND, ("22:58", "15.03", "text", " hi"), False),  # text opens with a space
        (SECOND, ("22:58", "15.03", "text", ""), False),  # empty text
        (SECOND, ("22:58", "15.03", "text", "a <b>"), False),  # markup
        (SECOND, ("22:58", "15.03", "text", "two\nlines"), False),
        (SECOND, ("22:58", "15.03", "text", "x" * 1501), False),  # longer than the bound
    ],
)
def test_rejects(
    middle: ChatState, line: str, message: tuple[str, str, str, str], ending: bool
) -> None:
    """Each departure from the state's rules is outside the grammar."""
    assert not accepts(middle, write(line, message, ending=ending))


def test_rejects_four_messages(middle: ChatState) -> None:
    """At most max_messages (3) messages."""
    message = ("22:58", "15.03", "text", "and")
    assert accepts(middle, write(SECOND, *[message] * 3))
    assert not accepts(middle, write(SECOND, *[message] * 4))
    assert not accepts(middle, write(SECOND))


def test_ending_offered_only_where_allowed(middle: ChatState) -> None:
    """On the turn that spends the last slot the tag is optional; in freeform never."""
    last = advance(middle, SECOND, ("23:00", "15.03"))
    message = ("23:05", "15.03", "text", "see you thursday")
    assert accepts(last, write(THIRD, message, ending=True))
    assert accepts(last, write(THIRD, message))
    free = start(style="freeform", topics=[("Broken bike", 3)])
    free = advance(free, "Broken bike; 2 turns remaining; end", ("12:00", "15.03"))
    free = advance(free, "Broken bike; 1 turn remaining; end", ("12:01", "15.03"))
    line = "Broken bike; 0 turns remaining; end"
    assert accepts(free, write(line, ("12:02", "15.03", "text", "ok")))
    assert not accepts(free, write(line, ("12:02", "15.03", "text", "ok"), ending=True))


def test_first_turn_any_time_on_the_start_date() -> None:
    """The first turn may start at any minute of the start date and on no other day."""
    first = start()
    for t in ("00:00", "13:37", "23:59"):
        assert accepts(first, write(FIRST, (t, "15.03", "text", "hey")))
    assert not accepts(first, write(FIRST, ("00:00", "16.03", "text", "hey")))


def test_window_across_new_year() -> None:
    """An async chat on 30.12 may answer on 31.12, 01.01 and 02.01 up to its 72 hours."""
    state = advance(
        start(cadence="async", start_date=date(2026, 12, 30)), FIRST, ("22:00", "30.12")
    )
    rules = ChatRules(gap_max=72 * 60)
    for t, d in (("22:00", "30.12"), ("09:00", "31.12"), ("00:00", "01.01"), ("22:00", "02.01")):
        assert accepts(state, write(SECOND, (t, d, "text", "ok")), rules), (t, d)
    for t, d in (("21:59", "30.12"), ("22:01", "02.01"), ("09:00", "03.01")):
        assert not accepts(state, write(SECOND, (t, d, "text", "ok")), rules), (t, d)


def test_min_gap_applies_to_the_first_message_only(middle: ChatState) -> None:
    """The reply waits the min gap; the messages after it need only not precede the clock."""
    rules = ChatRules(gap_min=10, gap_max=45)
    assert not accepts(middle, write(SECOND, ("23:02", "15.03", "text", "x")), rules)
    late_first = write(SECOND, ("23:03", "15.03", "text", "x"), ("22:53", "15.03", "text", "y"))
    assert accepts(middle, late_first, rules)


def test_no_grammar_after_the_end(middle: ChatState) -> None:
    """An ended chat has no next turn to constrain."""
    last = advance(middle, SECOND, ("23:00", "15.03"))
    done = advance(last, THIRD, ("23:01", "15.03"), ending=True)
    with pytest.raises(IllegalMove):
        turn_grammar(done, RULES)


# --- the grammar against its own description, and against the state machine --------------

CLEAN = ["ok", "lol", " ", "é", "R&D", '"', "Ana:", "kofi -", "🚲", "\u3000"]
DIRTY = ["<3", ">", "\n", "\x07"]
PREFIX = re.compile(r"\s*(ana sousa|ana|kofi mensah|kofi)(\s*[:：]|\s+[-–—])", re.IGNORECASE)
# Mostly clean text (which may still run too long or open with a blank), sometimes markup.
texts = st.lists(st.sampled_from(CLEAN * 4 + DIRTY), min_size=1, max_size=4).map("".join)


def oracle(topics: list[tuple[str, int]], k: int) -> str:
    lines = []
    for i, (title, budget) in enumerate(topics):
        following = topics[i + 1][0] if i + 1 < len(topics) else "end"
        lines += [f"{title}; {n} turn{'' if n == 1 else 's'} remaining; {following}"
                  for n in range(budget - 1, -1, -1)]  # fmt: skip
    return lines[k] if k < len(lines) else f"{topics[-1][0]}; 0 turns remaining; end"


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ChatState, ChatRules, list[tuple[str, int]]]:
    """A chat somewhere along a random roadmap, reached through accepted turns."""
    topics = draw(st.lists(st.tuples(st.sampled_from(["Bike", "Rent", "Band"]), st.integers(1, 3)),
                           min_size=1, max_size=3))  # fmt: skip
    cadence = draw(st.sampled_from(["realtime", "delayed", "async"]))
    low = draw(st.integers(0, 20))
    gap = Gap(min_minutes=low, max_minutes=draw(st.integers(low + 1, {"realtime": 60,
              "delayed": 600, "async": 4320}[cadence])))  # fmt: skip
    rules = ChatRules(
        max_turns=draw(st.integers(1, 8)),
        min_messages=draw(st.integers(1, 2)),
        max_messages=draw(st.integers(2, 3)),
        allowed_types=tuple(
            draw(st.lists(st.sampled_from(["text", "image", "audio"]), min_size=1, unique=True))
        ),
        gap_min=gap.min_minutes,
        gap_max=gap.max_minutes,
        max_text_chars=draw(st.integers(2, 12)),
    )
    style = draw(st.sampled_from(["freeform", "semi-structured", "structured"]))
    start_day = draw(st.dates(date(2026, 12, 25), date(2027, 1, 3)))
    state = start(style, topics, cadence, rules, start_day)
    for k in range(draw(st.integers(0, state.turn_limit - 1))):
        if state.clock is None:
            moment = datetime.combine(start_day, datetime.min.time()) + timedelta(
                minutes=draw(st.integers(0, 1439))
            )
        else:
            moment = state.clock + timedelta(
                minutes=draw(st.integers(gap.min_minutes, gap.max_minutes))
            )
        messages = [RawMessage(f"{moment:%H:%M}", f"{moment:%d.%m}", rules.allowed_types[0], "ok")]
        messages *= rules.min_messages
        after = apply_turn(state, ParsedTurn(oracle(topics, k), False, messages), rules)
        assert isinstance(after, ChatState), after
        state = after
    return state, rules, topics


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_grammar_admits_exactly_its_rules_and_the_machine_agrees(
    scenario: tuple[ChatState, ChatRules, list[tuple[str, int]]], data: st.DataObject
) -> None:
    """The grammar accepts a turn exactly when its line, ending, count, types, text and stamps
    fit the rules (every stamp inside [clock, clock + max gap], the first after the min gap;
    the start date on the first turn). An accepted turn whose messages are in time order
    (and, on the first turn, within the max gap of each other) and that opens no message
    with a speaker's name also passes apply_turn."""
    state, rules, topics = scenario
    gap = rules.gap
    k = state.turn_index
    roadmap = sum(budget for _, budget in topics)
    may_end = state.style != "freeform" and k >= roadmap - 1

    # A turn that fits, but for at most one flaw of one kind (which may turn out harmless).
    flaw = data.draw(st.sampled_from([None] * 6 + ["line", "ending", "count", "time", "type"]))
    line = oracle(topics, k + 1) if flaw == "line" else oracle(topics, k)
    ending = data.draw(st.booleans()) if may_end or flaw == "ending" else False
    count = data.draw(st.integers(rules.min_messages, rules.max_messages))
    if flaw == "count":
        count = data.draw(st.sampled_from([0, rules.max_messages + 1]))
    if state.clock is None:
        low = datetime.combine(state.start_date, datetime.min.time())
        high = low + timedelta(minutes=1439)
    else:
        low, high = state.clock + gap.min, state.clock + gap.max
    stamps = []
    for i in range(count):  # forward, each step within the max gap, inside the window
        floor = low if i == 0 else stamps[-1]
        reach = minutes_between(floor, min(high, floor + gap.max))
        stamps.append(floor + timedelta(minutes=data.draw(st.integers(0, reach))))
    if flaw == "time" and stamps:
        i = data.draw(st.integers(0, count - 1))
        stamps[i] += timedelta(minutes=data.draw(st.integers(-90, 90)))
    kinds = [*rules.allowed_types, "video"] if flaw == "type" else list(rules.allowed_types)
    messages = [(m, data.draw(st.sampled_from(kinds)), data.draw(texts)) for m in stamps]
    reply = write(
        line, *((f"{m:%H:%M}", f"{m:%d.%m}", kind, x) for m, kind, x in messages), ending=ending
    )

    def text_ok(x: str) -> bool:
        return (0 < len(x) <= rules.max_text_chars and not re.search(r"[<>\x00-\x1f]", x)
                and bool(x[0].strip()))  # fmt: skip

    def in_window(i: int, m: datetime) -> bool:
        floor = low if i == 0 or state.clock is None else state.clock
        return floor <= m <= high

    fits = (
        line == oracle(topics, k)
        and (may_end or not ending)
        and rules.min_messages <= len(messages) <= rules.max_messages
        and all(kind in rules.allowed_types for _, kind, _ in messages)
        and all(text_ok(x) for _, _, x in messages)
        and all(in_window(i, m) for i, (m, _, _) in enumerate(messages))
    )
    admitted = _is_grammar_accept_string(turn_grammar(state, rules), reply)
    event(f"admitted={admitted}")
    assert admitted == fits, reply

    ordered = all(a <= b for a, b in itertools.pairwise(stamps))
    if state.clock is None:
        ordered = ordered and all(b - a <= gap.max for a, b in itertools.pairwise(stamps))
    if admitted and ordered and not any(PREFIX.match(x) for _, _, x in messages):
        parsed = parse_turn(reply)
        assert isinstance(parsed, ParsedTurn), parsed
        after = apply_turn(state, parsed, rules)
        assert isinstance(after, ChatState), (after, reply)
        assert after.turns[-1].state == oracle(topics, k)
        event("machine accepted")


def test_first_turn_grammar_keeps_to_the_opening_window() -> None:
    """With a start time, the first turn's grammar admits stamps from it to
    opening_minutes later only, and what it admits the state machine accepts."""
    from datetime import time

    rules = ChatRules(opening_minutes=20)
    exp = Experience(
        id="e-1",
        persona_ids=["p-ana", "p-kofi"],
        experience_text="Neighbours who share a garage.",
        style="structured",
        cadence="realtime",
        topics=[TopicSlot(title=t, turns=n) for t, n in TOPICS],
        initial_state="",
        instant_events=[],
        opener="p-ana",
        meta=ExperienceMeta(iteration=0, model="test", time_taken=0.0),
    )
    state = initial_state(
        exp, chat_id="c-1", names=NAMES, rules=rules, start_date=date(2026, 3, 15),
        start_time=time(18, 45),
    )  # fmt: skip
    grammar = turn_grammar(state, rules)
    line = "Broken bike; 1 turn remaining; Band practice"
    for t, ok in (("18:44", False), ("18:45", True), ("19:05", True), ("19:06", False)):
        reply = write(line, (t, "15.03", "text", "hey"))
        assert _is_grammar_accept_string(grammar, reply) == ok, t
        if ok:
            parsed = parse_turn(reply)
            assert isinstance(parsed, ParsedTurn)
            assert isinstance(apply_turn(state, parsed, rules), ChatState), t
