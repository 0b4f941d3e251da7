"""The chat state machine: what a conversation may say next, and whether a reply said it.

One model writes both sides of a chat, one turn at a time. It is good at the words and
bad at bookkeeping, so the bookkeeping lives here, as plain data and pure functions:

- the topic tracker: the experience's roadmap as slots with turn budgets. Turn by turn
  the tracker says which state line the reply must carry ("topic; N turns remaining;
  next"), N counting down to 0 on a slot's last turn. The model cannot skip ahead;
- the clock: the last message's time. The first message falls in the opening window
  (the experience's start time and the next ``opening_minutes``), stamps never go
  backwards, and the steps between messages stay inside the cadence's gap;
- who speaks: the opener, then the other, alternating; every turn records its sender;
- how it ends: a freeform chat runs to its turn limit; a structured or semi-structured
  one may end with ``<predefined_topics_exhausted/>`` once every slot is spent and it
  has ``min_turns``, and otherwise stops after ``max_overtime_turns`` past its roadmap
  (``ended_by`` "overtime"), ``max_turns`` capping every style;
- memory: turns folded into a rolling summary, so the prompt shows ``turns[folded:]``.

A :class:`ChatState` is journal-able data. :func:`apply_turn` takes a parsed reply and
returns the *next* state or a :class:`Refusal` naming the broken rule; it never
mutates its input and does no I/O. The rollout driver (``chat/rollout.py``) owns the
prompts, the model calls, the retries and the journal.

Lifecycle, one :class:`Phase` at a time (the allowed moves are :data:`MOVES`)::

    OPENING --turn--> TALKING --turn--> ... --turn--> OVERTIME --turn--> ...
       |                 |                               |
       +-----------------+------ last turn or ending ----+--> ENDED
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import cast

import msgspec

from soc_async.config import ChatConfig, pacing_for
from soc_async.formats.clock import (
    Gap,
    describe_span,
    describe_stamp,
    minutes_between,
    parse_stamp,
    parse_stamp_before,
)
from soc_async.formats.events import events_for
from soc_async.formats.refusal import Refusal
from soc_async.formats.turn import ParsedTurn, RawMessage, Reason
from soc_async.records import (
    MESSAGE_TYPES,
    Cadence,
    EndedBy,
    Experience,
    Message,
    MessageType,
    Style,
    Turn,
)


class Phase(StrEnum):
    """Where a chat stands between two turns."""

    OPENING = "opening"  # no turn yet: the first message must fall in the opening window
    TALKING = "talking"  # on the roadmap: the current slot has turns left
    OVERTIME = "overtime"  # every slot spent, the chat goes on ("<last>; 0 turns remaining; end")
    ENDED = "ended"  # ``ended_by`` says why; no turn may follow


# The one table of allowed moves: the phases a single accepted turn may lead to.
MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.OPENING: frozenset({Phase.TALKING, Phase.OVERTIME, Phase.ENDED}),
    Phase.TALKING: frozenset({Phase.TALKING, Phase.OVERTIME, Phase.ENDED}),
    Phase.OVERTIME: frozenset({Phase.OVERTIME, Phase.ENDED}),
    Phase.ENDED: frozenset(),
}

ENDING_STYLES: tuple[str, ...] = ("structured", "semi-structured")  # may end on the tag
FREE_TALK = "free talk"  # the one slot of an experience that came without a roadmap
END = "end"  # the "next topic" of the last slot


class IllegalMove(RuntimeError):
    """The caller asked for a move the table forbids, e.g. a turn after the chat ended.

    A bug in the caller or a journal from another run, never the model's fault: the
    model's mistakes are :class:`Refusal` values, returned rather than raised.
    """


class ChatRules(msgspec.Struct, frozen=True, kw_only=True):
    """The rules one chat is held to: the run's ``[chat]`` section, for the chat's cadence."""

    max_turns: int = 50  # caps every style; freeform also stops at the roadmap's end
    min_messages: int = 1
    max_messages: int = 3
    allowed_types: tuple[str, ...] = MESSAGE_TYPES
    gap_min: int = 0  # minutes a reply waits at least after the previous turn
    gap_max: int = 45  # minutes at most between consecutive messages
    instant_event_p: float = 0.05
    max_text_chars: int = 1500  # the grammar's bound on one message; the validator has none
    min_turns: int = 1  # no ending before this many turns; a shorter plan is refused
    # Turns past a spent roadmap before a structured or semi-structured chat stops
    # ("overtime"); None: it runs to max_turns.
    max_overtime_turns: int | None = None
    opening_minutes: int = 60  # the first message falls this long after the start time
    # (count, share) of messages per turn for this chat's cadence and style; each turn
    # draws its count (:func:`messages_for_turn`). Empty: any count in the bounds.
    pacing: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        Gap(min_minutes=self.gap_min, max_minutes=self.gap_max)  # refuses impossible bounds
        if not 1 <= self.min_messages <= self.max_messages:
            raise ValueError(f"need 1 <= min_messages <= max_messages, got {self}")
        if self.min_turns < 1 or not 0 <= self.opening_minutes < 24 * 60:
            raise ValueError(f"need min_turns >= 1 and opening_minutes under a day, got {self}")
        if any(not self.min_messages <= n <= self.max_messages for n, _ in self.pacing):
            raise ValueError(f"pacing counts must lie in [min_messages, max_messages]: {self}")

    @classmethod
    def from_config(cls, chat: ChatConfig, cadence: str, style: str | None = None) -> ChatRules:
        """The rules a run's ``[chat]`` section sets for a chat of ``cadence`` and ``style``."""
        gap_min, gap_max = chat.gaps[cadence]
        return cls(
            max_turns=chat.max_turns,
            min_messages=chat.min_messages,
            max_messages=chat.max_messages,
            gap_min=gap_min,
            gap_max=gap_max,
            instant_event_p=chat.instant_event_p,
            min_turns=min(chat.min_turns, chat.max_turns),
            max_overtime_turns=chat.max_overtime_turns,
            opening_minutes=chat.opening_minutes,
            max_text_chars=chat.max_message_chars,
            pacing=tuple(pacing_for(chat, cadence, style).items()),
        )

    @property
    def gap(self) -> Gap:
        """The gap bounds as a :class:`Gap`, for clock arithmetic."""
        return Gap(min_minutes=self.gap_min, max_minutes=self.gap_max)


class ChatState(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation between two turns: plain data, journaled as it is."""

    chat_id: str
    style: Style
    cadence: Cadence
    speakers: list[str]  # [opener_id, other_id]; turn k is spoken by speakers[k % 2]
    speaker_names: list[str]  # their names, same order; a message may not start with one
    slots: list[tuple[str, int]]  # the roadmap: (title, turn budget) in order
    turn_limit: int  # turns after which the chat ends as "max_turns"
    start_date: date  # the day the chat opens
    turn_index: int = 0  # turns accepted so far
    slot_index: int = 0  # the slot the next turn belongs to
    turns_left_in_slot: int  # of the current slot, before the next turn; 0 only in overtime
    clock: datetime | None = None  # the last message's time; None before the first
    turns: list[Turn] = []
    summary: str = ""  # the rolling summary of turns[:folded]
    folded: int = 0  # turns folded into the summary so far
    ended_by: EndedBy | None = None
    phase: Phase = Phase.OPENING
    # The first message's window, both ends inclusive; None: any time of start_date.
    opening: tuple[datetime, datetime] | None = None
    min_turns: int = 1  # the ending tag is refused before this many turns
    # Turns after which a chat whose roadmap is spent ends as "overtime"; None: never.
    overtime_limit: int | None = None

    def __repr__(self) -> str:
        title = self.slots[self.slot_index][0]
        clock = self.clock.isoformat(" ", "minutes") if self.clock else "-"
        ended = f" ended_by={self.ended_by}" if self.ended_by else ""
        return (
            f"<ChatState {self.chat_id} {self.phase} turn {self.turn_index}/{self.turn_limit} "
            f"slot {self.slot_index + 1}/{len(self.slots)} {title!r} "
            f"left={self.turns_left_in_slot} clock={clock}{ended}>"
        )


# --- Starting a chat --------------------------------------------------------------------


def initial_state(
    experience: Experience,
    *,
    chat_id: str,
    names: dict[str, str],
    rules: ChatRules,
    start_date: date,
    start_time: time | None = None,
) -> ChatState:
    """The state before the first turn of a chat grounded in ``experience``.

    With ``start_time`` the first message falls between it and ``opening_minutes``
    later (possibly past midnight); without, at any time of ``start_date``.

    Raises ``ValueError`` for an experience the experience stage should have refused:
    an opener that is not one of two distinct personas, a budget below 1, a missing name.
    A plan shorter than ``min_turns`` is not an error here: :func:`plan_problem` says so.
    """
    first, second = _pair(experience)
    other = second if experience.opener == first else first
    missing = [p for p in (experience.opener, other) if p not in names]
    if missing:
        raise ValueError(f"{experience.id}: no name given for persona {missing[0]}")
    slots = [(_clean_title(s.title, i), s.turns) for i, s in enumerate(experience.topics)]
    slots = slots or [(FREE_TALK, rules.max_turns)]
    if any(budget < 1 for _, budget in slots):
        raise ValueError(f"{experience.id}: every topic needs a turn budget of at least 1")
    roadmap = sum(budget for _, budget in slots)
    ending = experience.style in ENDING_STYLES
    limit = rules.max_turns if ending else min(rules.max_turns, roadmap)
    overtime = None
    if ending and rules.max_overtime_turns is not None:
        overtime = max(roadmap + rules.max_overtime_turns, rules.min_turns)
    opening = None
    if start_time is not None:
        first = datetime.combine(start_date, start_time)
        opening = (first, first + timedelta(minutes=rules.opening_minutes))
    return ChatState(
        chat_id=chat_id,
        style=experience.style,
        cadence=experience.cadence,
        speakers=[experience.opener, other],
        speaker_names=[names[experience.opener], names[other]],
        slots=slots,
        turn_limit=limit,
        start_date=start_date,
        turns_left_in_slot=slots[0][1],
        opening=opening,
        min_turns=rules.min_turns,
        overtime_limit=overtime,
    )


def plan_problem(state: ChatState) -> Refusal | None:
    """Why a chat cannot be rolled out at all: its plan ends before ``min_turns``."""
    if turn_limit(state) >= state.min_turns:
        return None
    return Refusal(
        Reason.TOO_SHORT,
        f"the experience ends the chat after {turn_limit(state)} turns "
        f"(a {state.style} roadmap of {sum(b for _, b in state.slots)}); "
        f"chat.min_turns is {state.min_turns}",
    )


def _pair(experience: Experience) -> tuple[str, str]:
    ids = experience.persona_ids
    if len(ids) != 2 or ids[0] == ids[1] or experience.opener not in ids:
        raise ValueError(
            f"{experience.id}: expected two distinct personas with the opener among them, "
            f"got {ids} opened by {experience.opener}"
        )
    return ids[0], ids[1]


def _clean_title(title: str, index: int) -> str:
    # The title goes into a one-line, ';'-separated state line and a grammar literal.
    cleaned = " ".join(title.replace(";", ",").replace("<", "").replace(">", "").split())
    return cleaned or f"topic {index + 1}"


# --- What the next turn must be --------------------------------------------------------


def turn_limit(state: ChatState) -> int:
    """How many turns the chat has at most (it may end sooner on the tag): ``max_turns``
    or the roadmap's end, and the overtime limit of an ending style."""
    if state.overtime_limit is None:
        return state.turn_limit
    return min(state.turn_limit, state.overtime_limit)


def current_speaker(state: ChatState) -> str:
    """The persona id who writes the next turn."""
    return state.speakers[state.turn_index % 2]


def expected_state_line(state: ChatState) -> str:
    """The state line the next turn must carry: ``"topic; N turns remaining; next"``."""
    title = state.slots[state.slot_index][0]
    after = max(state.turns_left_in_slot - 1, 0)  # left in this slot once the turn is in
    following = state.slots[state.slot_index + 1][0] if not _on_last_slot(state) else END
    return f"{title}; {_turns(after)} remaining; {following}"


def ending_allowed(state: ChatState) -> bool:
    """Whether the next turn may carry ``<predefined_topics_exhausted/>``."""
    return (
        state.style in ENDING_STYLES
        and not is_done(state)
        and _on_last_slot(state)
        and state.turns_left_in_slot <= 1  # after this turn every slot is spent
        and state.turn_index + 1 >= state.min_turns
    )


def is_done(state: ChatState) -> bool:
    """Whether the chat has ended; ``state.ended_by`` says how."""
    return state.phase is Phase.ENDED


def time_window(state: ChatState, rules: ChatRules) -> tuple[datetime, datetime]:
    """The earliest and latest times the next turn's first message may carry.

    Later messages of the turn may not go before the one before them, and each step stays
    within the cadence's gap; the grammar keeps the whole turn inside this window.
    """
    if state.clock is None:
        return opening_window(state)
    gap = rules.gap
    return state.clock + gap.min, state.clock + gap.max


def opening_window(state: ChatState) -> tuple[datetime, datetime]:
    """The earliest and latest times of the chat's first message."""
    if state.opening is not None:
        return state.opening
    start = datetime.combine(state.start_date, time())
    return start, datetime.combine(state.start_date, time(23, 59))


def _count(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


def _turns(count: int) -> str:
    return f"{count} turn" if count == 1 else f"{count} turns"  # "1 turn", "0 turns", "2 turns"


def _on_last_slot(state: ChatState) -> bool:
    return state.slot_index == len(state.slots) - 1


def _roadmap_left_after_next(state: ChatState) -> int:
    later = sum(budget for _, budget in state.slots[state.slot_index + 1 :])
    return max(state.turns_left_in_slot - 1, 0) + later


# --- Taking a turn ---------------------------------------------------------------------


def apply_turn(
    state: ChatState,
    parsed: ParsedTurn,
    rules: ChatRules,
    *,
    instant_event: str | None = None,
) -> ChatState | Refusal:
    """The state after ``parsed`` is accepted as the next turn, or the rule it breaks.

    ``instant_event`` is the event woven into this speaker's prompt, recorded on the turn.
    Raises :class:`IllegalMove` when the chat has already ended.
    """
    _require_open(state)
    problem = (
        _check_state_line(state, parsed.state_line)
        or _check_ending(state, parsed.ended)
        or _check_count(parsed.messages, rules)
        or _check_texts(state, parsed.messages, rules)
    )
    if problem:
        return problem
    stamps = _place_in_time(state, parsed.messages, rules.gap)
    if isinstance(stamps, Refusal):
        return stamps
    turn = Turn(
        sender=current_speaker(state),
        state=expected_state_line(state),  # the canonical spelling of what the model wrote
        messages=[
            Message(t=m.t, d=m.d, type=cast(MessageType, m.type), text=m.text.strip())
            for m in parsed.messages
        ],
        instant_event=instant_event,
    )
    return _advance(state, turn, stamps[-1], parsed.ended)


def replay(state: ChatState, turn: Turn, ended: bool, rules: ChatRules | None = None) -> ChatState:
    """The state after a turn accepted in an earlier run, read back from the journal.

    With ``rules`` every check runs again; without, the tracker, the sender, the ending
    and the timestamps are still checked. A journal this chat would not have accepted
    raises :class:`IllegalMove`: it belongs to another run or another config.
    """
    _require_open(state)
    where = f"{state.chat_id} turn {state.turn_index + 1}"
    if turn.sender != current_speaker(state):
        raise IllegalMove(f"{where}: journal says {turn.sender} spoke, expected the other")
    raw = [RawMessage(t=m.t, d=m.d, type=m.type, text=m.text) for m in turn.messages]
    if rules is not None:
        parsed = ParsedTurn(state_line=turn.state, ended=ended, messages=raw)
        after = apply_turn(state, parsed, rules, instant_event=turn.instant_event)
        if isinstance(after, Refusal):
            raise IllegalMove(f"{where}: journal turn breaks a rule: {after}")
        return after
    problem = _check_state_line(state, turn.state) or _check_ending(state, ended)
    stamps = _place_in_time(state, raw, _ANY_GAP)
    if problem or isinstance(stamps, Refusal):
        raise IllegalMove(f"{where}: journal turn breaks a rule: {problem or stamps}")
    return _advance(state, turn, stamps[-1], ended)


# Without the run's rules, replay checks that time moves forward, not how fast.
_ANY_GAP = Gap(max_minutes=365 * 24 * 60 - 1)


def _require_open(state: ChatState) -> None:
    if is_done(state):
        raise IllegalMove(f"{state.chat_id} ended ({state.ended_by}); no turn may follow")


def _advance(state: ChatState, turn: Turn, clock: datetime, ended: bool) -> ChatState:
    """Count the turn down the tracker, move the clock, and settle the phase."""
    slot_index, left = state.slot_index, state.turns_left_in_slot - 1
    if left <= 0 and not _on_last_slot(state):
        slot_index, left = slot_index + 1, state.slots[slot_index + 1][1]
    left = max(left, 0)  # overtime stays on the last slot at 0
    turn_index = state.turn_index + 1
    ended_by: EndedBy | None = None
    spent = slot_index == len(state.slots) - 1 and left == 0
    if ended:
        ended_by = "exhausted"
    elif turn_index >= state.turn_limit:
        ended_by = "max_turns"
    elif spent and state.overtime_limit is not None and turn_index >= state.overtime_limit:
        ended_by = "overtime"
    phase = Phase.ENDED if ended_by else Phase.OVERTIME if spent else Phase.TALKING
    if phase not in MOVES[state.phase]:
        raise IllegalMove(f"{state.chat_id}: no move from {state.phase} to {phase}")
    return msgspec.structs.replace(
        state,
        turn_index=turn_index,
        slot_index=slot_index,
        turns_left_in_slot=left,
        clock=clock,
        turns=[*state.turns, turn],
        ended_by=ended_by,
        phase=phase,
    )


# --- The checks, one rule each ---------------------------------------------------------


def _normalise(line: str) -> str:
    return re.sub(r"\s*;\s*", "; ", " ".join(line.split())).casefold()


def _check_state_line(state: ChatState, line: str) -> Refusal | None:
    expected = expected_state_line(state)
    if line == expected or _normalise(line) == _normalise(expected):
        return None
    detail = f"expected state {expected!r}, got {line!r}"
    topic = _normalise(line).split(";")[0].strip()
    later = {_normalise(title) for title, _ in state.slots[state.slot_index + 1 :]}
    if topic in later:
        title, left = state.slots[state.slot_index][0], state.turns_left_in_slot
        detail += f"; it tries to move on early: {title!r} has {_turns(left)} left"
    return Refusal(Reason.STATE_MISMATCH, detail)


def _check_ending(state: ChatState, ended: bool) -> Refusal | None:
    if not ended or ending_allowed(state):
        return None
    if state.style not in ENDING_STYLES:
        why = f"a {state.style} chat runs to its turn limit and never ends on the tag"
    elif _roadmap_left_after_next(state):
        why = f"{_turns(_roadmap_left_after_next(state))} of the topic roadmap would remain"
    else:
        why = f"the chat needs at least {_turns(state.min_turns)}"
    return Refusal(Reason.EARLY_ENDING, f"<predefined_topics_exhausted/> too early: {why}")


def _check_count(messages: list[RawMessage], rules: ChatRules) -> Refusal | None:
    count, bounds = len(messages), f"{rules.min_messages} to {rules.max_messages}"
    if rules.min_messages == rules.max_messages:
        bounds = f"exactly {_count(rules.min_messages)}"
    if count == 0:
        return Refusal(Reason.NO_MESSAGES, f"the turn has no message; write {bounds}")
    if count < rules.min_messages:
        return Refusal(Reason.TOO_FEW_MESSAGES, f"the turn has {count} messages; write {bounds}")
    if count > rules.max_messages:
        return Refusal(Reason.TOO_MANY_MESSAGES, f"the turn has {count} messages; write {bounds}")
    return None


_TAG_IN_TEXT = re.compile(r"<[A-Za-z/][^>]{0,30}>?")


def _check_texts(state: ChatState, messages: list[RawMessage], rules: ChatRules) -> Refusal | None:
    prefix = _speaker_prefix(tuple(state.speaker_names))
    for number, message in enumerate(messages, start=1):
        if message.type not in rules.allowed_types:
            allowed = ", ".join(rules.allowed_types)
            detail = f"message {number} has type {message.type!r}; allowed: {allowed}"
            return Refusal(Reason.UNKNOWN_TYPE, detail)
        if not message.text.strip():
            return Refusal(Reason.EMPTY_TEXT, f"message {number} has no text")
        tag = _TAG_IN_TEXT.search(message.text)
        if tag:
            detail = f"message {number} contains markup {tag.group(0)!r}"
            return Refusal(Reason.LEFTOVER_TAG, detail)
        name = prefix.match(message.text)
        if name:
            detail = f"message {number} starts with a speaker's name {name.group(0).strip()!r}"
            return Refusal(Reason.SPEAKER_PREFIX, detail)
    return None


@functools.lru_cache(maxsize=4096)
def _speaker_prefix(names: tuple[str, ...]) -> re.Pattern[str]:
    """Matches a message that opens like a script line: "Mia:", "mia chen -", "MIA :"."""
    variants = {n.strip() for n in names} | {n.split()[0] for n in names if n.split()}
    spelled = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True) if v)
    return re.compile(rf"\s*(?:{spelled})(?:\s*[:：]|\s+[-–—])", re.IGNORECASE)


def _place_in_time(
    state: ChatState, messages: list[RawMessage], gap: Gap
) -> list[datetime] | Refusal:
    """Each message's datetime, checked against the one before it, or the first problem."""
    stamps: list[datetime] = []
    previous = state.clock
    for number, message in enumerate(messages, start=1):
        where = f"message {number} at {message.t} on {message.d}"
        if previous is None:  # the first message of the chat
            earliest, latest = opening_window(state)
            floor = datetime.combine(earliest.date(), time())
            stamp = parse_stamp(message.t, message.d, floor)
            if stamp is not None and not earliest <= stamp <= latest:
                span = f"{describe_stamp(earliest)} and {describe_stamp(latest)}"
                return Refusal(Reason.WRONG_DATE_START, f"{where}; the chat opens between {span}")
        else:
            stamp = parse_stamp(message.t, message.d, previous)
        if stamp is None:
            return Refusal(Reason.BAD_TIMESTAMP, f"{where} is not a real time and day")
        if previous is not None:
            problem = _check_step(where, previous, stamp, message, gap, reply=number == 1)
            if problem:
                return problem
        stamps.append(stamp)
        previous = stamp
    return stamps


def _check_step(
    where: str, previous: datetime, stamp: datetime, message: RawMessage, gap: Gap, reply: bool
) -> Refusal | None:
    # The details are spelled out only for a refusal: this runs for every message.
    if stamp < previous:
        return Refusal(Reason.CLOCK_BACKWARDS, f"{where} is before {_previous(previous)}")
    step = stamp - previous
    if step > gap.max:
        # A day/month earlier than the clock's reads as next year; say what was meant.
        back = parse_stamp_before(message.t, message.d, previous)
        if back is not None and back < previous and previous - back < step:
            return Refusal(Reason.CLOCK_BACKWARDS, f"{where} is before {_previous(previous)}")
        limit = f"max {describe_span(gap.max_minutes)}"
        return Refusal(Reason.GAP_TOO_LONG, _gap_detail(where, previous, stamp, limit))
    if reply and step < gap.min:
        limit = f"min {describe_span(gap.min_minutes)}"
        return Refusal(Reason.GAP_TOO_SHORT, _gap_detail(where, previous, stamp, limit))
    return None


def _previous(previous: datetime) -> str:
    return f"the previous {describe_stamp(previous)}"


def _gap_detail(where: str, previous: datetime, stamp: datetime, limit: str) -> str:
    span = describe_span(minutes_between(previous, stamp))
    return f"{where} is {span} after {_previous(previous)}; {limit}"


# --- Instant events ---------------------------------------------------------------------


def instant_event_for(
    run_seed: int,
    chat_id: str,
    turn_index: int,
    events: list[str],
    p: float,
    *,
    speaker: str | None = None,
    owners: Sequence[str | None] = (),
) -> str | None:
    """The instant event woven into turn ``turn_index``'s prompt, drawn with probability ``p``.

    With ``speaker`` and ``owners`` (who each event happens to, as
    ``Experience.event_personas``) the draw picks only among the speaker's own events and
    the unattributed ones: an event that names the other person never reaches this one.
    Drawn from a hash of the run's seed, the chat and the turn (the same in every
    process), so retries of a turn and a resumed run draw exactly what the first did.
    """
    eligible = events_for(speaker, events, owners) if speaker is not None else list(events)
    if not eligible:
        return None
    # One BLAKE2b digest gives both draws: a Mersenne Twister seeded per turn cost more
    # than the rest of the decision (its 2.5 KB state, a SHA-512 of the seed).
    digest = hashlib.blake2b(f"{run_seed}:{chat_id}:{turn_index}".encode(), digest_size=16)
    raw = digest.digest()
    if int.from_bytes(raw[:8], "big") / 2.0**64 >= p:
        return None
    return eligible[int.from_bytes(raw[8:], "big") % len(eligible)]


# --- Pacing: messages per turn ---------------------------------------------------------


def messages_for_turn(run_seed: int, chat_id: str, turn_index: int, rules: ChatRules) -> int | None:
    """How many messages turn ``turn_index`` holds, drawn from ``rules.pacing``; None
    when the rules set no pacing (any count within the bounds).

    Drawn from a hash of the run's seed, the chat and the turn, like
    :func:`instant_event_for` (and independent of it), so retries of a turn and a
    resumed run draw exactly what the first did.
    """
    if not rules.pacing:
        return None
    digest = hashlib.blake2b(f"{run_seed}:{chat_id}:{turn_index}:messages".encode(), digest_size=8)
    point = int.from_bytes(digest.digest(), "big") / 2.0**64
    total = sum(share for _, share in rules.pacing)
    acc = 0.0
    for count, share in rules.pacing:
        acc += share / total
        if point < acc:
            return count
    return rules.pacing[-1][0]  # rounding left the point past the last share


def paced(rules: ChatRules, count: int | None) -> ChatRules:
    """``rules`` for one turn of exactly ``count`` messages (None: unchanged)."""
    if count is None or count == rules.min_messages == rules.max_messages:
        return rules
    if not rules.min_messages <= count <= rules.max_messages:
        raise ValueError(
            f"{count} messages lies outside [{rules.min_messages}, {rules.max_messages}]"
        )
    return msgspec.structs.replace(rules, min_messages=count, max_messages=count, pacing=())


# --- Memory: the rolling summary ---------------------------------------------------------


def recent_turns(state: ChatState) -> list[Turn]:
    """The turns the prompt shows verbatim: those not yet folded into the summary."""
    return state.turns[state.folded :]


def fold_due(state: ChatState, window: int, fold: int) -> bool:
    """Whether more than ``window`` turns are unfolded (and the chat still needs a prompt)."""
    unfolded = len(state.turns) - state.folded
    return not is_done(state) and unfolded > window and unfolded >= fold


def turns_to_fold(state: ChatState, fold: int) -> list[Turn]:
    """The oldest ``fold`` unfolded turns, to be summarised together with ``state.summary``."""
    return state.turns[state.folded : state.folded + fold]


def apply_fold(state: ChatState, summary: str, count: int) -> ChatState:
    """The state once ``count`` more turns live in ``summary`` (which replaces the old one).

    Turns may have been accepted while the summary call ran; they stay unfolded. One
    fold at a time: ``count`` is what :func:`turns_to_fold` returned for this fold.
    """
    unfolded = len(state.turns) - state.folded
    if not 0 <= count <= unfolded:
        raise ValueError(f"{state.chat_id}: cannot fold {count} turns, {unfolded} are unfolded")
    return msgspec.structs.replace(state, summary=summary, folded=state.folded + count)
