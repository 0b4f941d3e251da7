"""The rules of a saved record, checked again by code that shares nothing with the
code that made it.

The chat state machine (``chat/state.py``), the turn parser and the clock of
``formats/`` decided what was accepted while generating; this module re-derives each
rule from the record formats of docs/records.md with its own small code and never
imports them, so a bug there cannot also hide here. It grew out of tests/dataset_check.py.

Each check returns :class:`Finding` values, one per broken rule, with a stable code:

    turn_count        fewer turns than chat.min_turns, or more than chat.max_turns
    personas          the two persona ids are equal, or one is not in personas.jsonl
    sender            turn k not sent by the opener (k even) or the other (k odd)
    state             a state line that is not the roadmap's countdown
    ending            the ending tag in freeform or before every slot was spent, or a
                      chat that stopped short of its turn limit without the tag (the
                      limit of a structured chat: its roadmap plus chat.max_overtime_turns,
                      "overtime", else chat.max_turns)
    message_count     a turn with fewer or more messages than [min, max]
    message_type      a type other than text, image, audio, video, sticker
    empty_text        a message with only whitespace
    leftover_tag      markup (``<x``, ``</x``) in a message's text
    speaker_prefix    a message that starts with a speaker's name and a colon
    clock_format      t or d that is not a real HH:MM or DD.MM
    clock_start       the first message not on the chat's start date, or (when the
                      experience has a start time) not in its opening window
    clock_backwards   a message stamped before the one before it
    gap               a step between messages past the cadence's maximum, or a reply
                      sooner than its minimum
    event_owner       a turn's instant event is one the experience attributes to the
                      other persona

Pure functions over records; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from datetime import date

import msgspec

from soc_async.records import Conversation, Experience, Persona

__all__ = [
    "RULES",
    "ChatChecks",
    "Finding",
    "check_conversation",
    "check_experience",
    "check_persona",
    "clock_minutes",
    "expected_states",
]

RULES: tuple[str, ...] = (
    "turn_count",
    "personas",
    "sender",
    "state",
    "ending",
    "message_count",
    "message_type",
    "empty_text",
    "leftover_tag",
    "speaker_prefix",
    "clock_format",
    "clock_start",
    "clock_backwards",
    "gap",
    "event_owner",
)

TYPES = frozenset({"text", "image", "audio", "video", "sticker"})
ENDING_STYLES = frozenset({"structured", "semi-structured"})
CARD_SECTIONS = (
    "Basic Information",
    "Physical & Lifestyle",
    "Personality Overview",
    "Core Traits",
    "Emotional Profile",
    "Relationships",
    "Values",
    "Motivations & Fears",
    "Behavioral Patterns",
    "Communication Style",
    "Example Messages",
    "Summary",
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_YEAR = 366 * 24 * 60
_TAG = re.compile(r"</?[A-Za-z]")
_HHMM = re.compile(r"(\d\d):(\d\d)")
_DDMM = re.compile(r"(\d\d)\.(\d\d)")


class Finding(msgspec.Struct, frozen=True):
    """One broken rule of one record."""

    rule: str  # a code of RULES (conversations) or a short code (personas, experiences)
    detail: str  # one line: where and what


class ChatChecks(msgspec.Struct, frozen=True, kw_only=True):
    """The run's [chat] settings the checks need (defaults: the config's defaults)."""

    max_turns: int = 50
    min_messages: int = 1
    max_messages: int = 3
    start_date: str = "2026-03-15"  # ISO; an experience's own start_date wins
    gaps: dict[str, tuple[int, int]] = msgspec.field(
        default_factory=lambda: {"realtime": (0, 45), "delayed": (0, 360), "async": (0, 4320)}
    )
    # The defaults below keep the rules of runs made before these settings existed.
    min_turns: int = 1  # chat.min_turns (capped at max_turns)
    max_overtime_turns: int | None = None  # chat.max_overtime_turns; None: no overtime stop
    opening_minutes: int = 0  # chat.opening_minutes, after an experience's start_time


def _plural(n: int) -> str:
    return f"{n} turn" if n == 1 else f"{n} turns"


def expected_states(topics: list[tuple[str, int]], turns: int, max_turns: int) -> list[str]:
    """The state lines a roadmap gives for ``turns`` turns (normalised: lower case,
    single spaces): N counts down to 0 in each slot; past the roadmap, the last slot at
    0 with "end". No roadmap: one "free talk" slot of ``max_turns``."""
    slots = topics or [("free talk", max_turns)]
    lines: list[str] = []
    for i, (title, budget) in enumerate(slots):
        following = slots[i + 1][0] if i + 1 < len(slots) else "end"
        for left in range(budget - 1, -1, -1):
            lines.append(_norm(f"{title}; {_plural(left)} remaining; {following}"))
            if len(lines) == turns:
                return lines
    while len(lines) < turns:
        lines.append(_norm(f"{slots[-1][0]}; 0 turns remaining; end"))
    return lines


def _norm(line: str) -> str:
    return " ".join(line.split()).lower()


def clock_minutes(d: str, t: str) -> int | None:
    """Minutes from 1 January 00:00 of a leap year, or None for a stamp that is no time."""
    dm, hm = _DDMM.fullmatch(d), _HHMM.fullmatch(t)
    if dm is None or hm is None:
        return None
    day, month = int(dm.group(1)), int(dm.group(2))
    hour, minute = int(hm.group(1)), int(hm.group(2))
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return None
    if not (hour < 24 and minute < 60):
        return None
    return ((sum(_DAYS_IN_MONTH[: month - 1]) + day - 1) * 24 + hour) * 60 + minute


def check_conversation(
    c: Conversation,
    rules: ChatChecks,
    *,
    persona_ids: Container[str] | None = None,
    names: Mapping[str, str] | None = None,
    start_date: str | None = None,
    start_time: str | None = None,
    event_owners: Mapping[str, str | None] | None = None,
) -> list[Finding]:
    """Every rule ``c`` breaks (empty: it passes). ``persona_ids``, ``names``,
    ``start_date`` and ``start_time`` (the experience's) and ``event_owners`` (the
    experience's instant events and who each names) enable the checks that need them."""
    found: list[Finding] = []
    turns = c.turns
    n = len(turns)
    least = max(1, min(rules.min_turns, rules.max_turns))
    if not least <= n <= rules.max_turns:
        found.append(Finding("turn_count", f"{n} turns; expected {least} to {rules.max_turns}"))
    _check_personas(c, persona_ids, found)
    _check_turns(c, rules, names, found)
    _check_clock(c, rules, start_date, start_time, found)
    if event_owners:
        for k, turn in enumerate(turns):
            owner = event_owners.get(turn.instant_event) if turn.instant_event else None
            if owner is not None and owner != turn.sender:
                found.append(
                    Finding("event_owner", f"turn {k + 1}: {turn.sender} got {owner}'s event")
                )
                break
    return found


def _check_personas(
    c: Conversation, persona_ids: Container[str] | None, found: list[Finding]
) -> None:
    if len(c.persona_ids) != 2 or c.persona_ids[0] == c.persona_ids[1]:
        found.append(Finding("personas", f"persona_ids {c.persona_ids}: need two distinct"))
        return
    if persona_ids is not None:
        unknown = [p for p in c.persona_ids if p not in persona_ids]
        if unknown:
            found.append(Finding("personas", f"{', '.join(unknown)} not in personas.jsonl"))


def _check_turns(
    c: Conversation, rules: ChatChecks, names: Mapping[str, str] | None, found: list[Finding]
) -> None:
    turns = c.turns
    n = len(turns)
    roadmap = [(t.title, t.turns) for t in c.topics]
    if len(c.persona_ids) == 2:
        opener, other = c.persona_ids
        for k, turn in enumerate(turns):
            want = opener if k % 2 == 0 else other
            if turn.sender != want:
                found.append(
                    Finding("sender", f"turn {k + 1} sent by {turn.sender}; expected {want}")
                )
                break
    expected = expected_states(roadmap, n, rules.max_turns)
    for k, (turn, want) in enumerate(zip(turns, expected, strict=True)):
        if _norm(turn.state) != want:
            found.append(Finding("state", f"turn {k + 1}: {turn.state!r}; expected {want!r}"))
            break
    budget = sum(b for _, b in roadmap) if roadmap else rules.max_turns
    ending = c.style in ENDING_STYLES
    overtime = rules.max_overtime_turns
    stop = max(budget + overtime, rules.min_turns) if ending and overtime is not None else None
    if c.ended_by == "exhausted":
        if not ending:
            found.append(Finding("ending", f"a {c.style} chat ended on the tag"))
        elif n < budget:
            found.append(Finding("ending", f"ended on the tag after {n} of {budget} turns"))
    elif c.ended_by == "overtime":
        if stop is None or n != stop or n >= rules.max_turns:
            found.append(Finding("ending", f"ended by overtime after {n} turns; stop {stop}"))
    else:
        limit = rules.max_turns if ending else min(rules.max_turns, budget)
        if n != limit or (stop is not None and stop < limit):
            found.append(Finding("ending", f"ended by max_turns after {n} turns; limit {limit}"))
    speakers = [names[p] for p in c.persona_ids if names and p in names]
    prefixes = tuple(f"{name}:".lower() for name in speakers if name)
    seen: set[str] = set()
    for k, turn in enumerate(turns):
        count = len(turn.messages)
        if not rules.min_messages <= count <= rules.max_messages and "message_count" not in seen:
            seen.add("message_count")
            found.append(
                Finding(
                    "message_count",
                    f"turn {k + 1}: {count} messages; expected "
                    f"{rules.min_messages} to {rules.max_messages}",
                )
            )
        for m in turn.messages:
            text = m.text.strip()
            problem: tuple[str, str] | None = None
            if m.type not in TYPES:
                problem = ("message_type", f"turn {k + 1}: type {m.type!r}")
            elif not text:
                problem = ("empty_text", f"turn {k + 1}: a message with no text")
            elif _TAG.search(text):
                problem = ("leftover_tag", f"turn {k + 1}: markup in {text[:60]!r}")
            elif prefixes and text.lower().startswith(prefixes):
                problem = ("speaker_prefix", f"turn {k + 1}: {text[:60]!r}")
            if problem is not None and problem[0] not in seen:
                seen.add(problem[0])
                found.append(Finding(*problem))


def _check_clock(
    c: Conversation,
    rules: ChatChecks,
    start_date: str | None,
    start_time: str | None,
    found: list[Finding],
) -> None:
    gap_min, gap_max = rules.gaps.get(c.cadence, (0, 10**9))
    prev: int | None = None
    for k, turn in enumerate(c.turns):
        for i, m in enumerate(turn.messages):
            now = clock_minutes(m.d, m.t)
            where = f"turn {k + 1} at {m.t} {m.d}"
            if now is None:
                found.append(Finding("clock_format", f"{where}: not a real time and day"))
                return
            if prev is None:
                start = date.fromisoformat(start_date or rules.start_date)
                opens = clock_minutes(f"{start:%d.%m}", start_time) if start_time else None
                if opens is not None:
                    while now < opens - 24 * 60:  # past new year
                        now += _YEAR
                    if not opens <= now <= opens + rules.opening_minutes:
                        found.append(
                            Finding(
                                "clock_start",
                                f"{where}; the chat opens at {start_time} {start:%d.%m} "
                                f"and {rules.opening_minutes} min after",
                            )
                        )
                elif (now // 1440) != _day_of_year(start):
                    found.append(Finding("clock_start", f"{where}; the chat starts {start:%d.%m}"))
            else:
                while now < prev - 24 * 60:  # more than a day back: the calendar rolled over
                    now += _YEAR
                step = now - prev
                if step < 0:
                    found.append(Finding("clock_backwards", f"{where}: {-step} min back"))
                    return
                if step > gap_max:
                    found.append(Finding("gap", f"{where}: {step} min after; max {gap_max}"))
                    return
                if i == 0 and step < gap_min:
                    found.append(Finding("gap", f"{where}: {step} min after; min {gap_min}"))
                    return
            prev = now


def _day_of_year(d: date) -> int:
    """The day index of ``d`` in the leap-year calendar of :func:`clock_minutes`."""
    return sum(_DAYS_IN_MONTH[: d.month - 1]) + d.day - 1


def check_persona(p: Persona) -> list[Finding]:
    """The card's 12 sections in order, its sampled name and age stated."""
    text = p.persona_text
    found: list[Finding] = []
    if "<character>" not in text or "</character>" not in text:
        found.append(Finding("card_element", "no <character>...</character>"))
    positions = [text.find(f"**{s}**") for s in CARD_SECTIONS]
    missing = [s for s, pos in zip(CARD_SECTIONS, positions, strict=True) if pos < 0]
    if missing:
        found.append(Finding("card_sections", f"missing {', '.join(missing)}"))
    elif positions != sorted(positions):
        found.append(Finding("card_sections", "sections out of order"))
    if p.meta.name not in text or str(p.meta.age) not in text:
        found.append(Finding("card_sample", f"name {p.meta.name!r} or age {p.meta.age} not stated"))
    return found


def check_experience(
    e: Experience,
    persona_ids: Container[str] | None = None,
    *,
    min_events: int = 2,
    max_events: int = 5,
) -> list[Finding]:
    """Two distinct known personas, the opener one of them, positive budgets, one
    primary topic unless freeform, 2-5 instant events."""
    found: list[Finding] = []
    pair = e.persona_ids
    if len(pair) != 2 or pair[0] == pair[1]:
        found.append(Finding("pair", f"persona_ids {pair}: need two distinct"))
    elif persona_ids is not None and not all(p in persona_ids for p in pair):
        found.append(Finding("pair", "a persona not in personas.jsonl"))
    if e.opener not in pair:
        found.append(Finding("opener", f"opener {e.opener} not in the pair"))
    if any(t.turns < 1 for t in e.topics):
        found.append(Finding("budgets", "a topic with a budget below 1"))
    if e.style != "freeform" and sum(t.primary for t in e.topics) != 1:
        found.append(Finding("primary", "not exactly one PRIMARY topic"))
    if not min_events <= len(e.instant_events) <= max_events:
        found.append(
            Finding("events", f"{len(e.instant_events)} events; expected {min_events}-{max_events}")
        )
    owners = e.event_personas
    if owners and (
        len(owners) != len(e.instant_events) or any(o not in (None, *pair) for o in owners)
    ):
        found.append(Finding("event_personas", "owners not one per event, or not of the pair"))
    if e.start_time is not None and _HHMM.fullmatch(e.start_time) is None:
        found.append(Finding("start_time", f"start_time {e.start_time!r} is not HH:MM"))
    return found
