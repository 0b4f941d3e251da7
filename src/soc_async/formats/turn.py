"""Reading one chat turn as the model writes it, and the reason codes a reply is refused with.

A turn reply looks like this (the ending tag only on a turn that closes a structured or
semi-structured chat)::

    <turn>
    <state>
    Night shift swap; 1 turn remaining; Birthday dinner
    <predefined_topics_exhausted/>
    </state>
    <message t="06:12" d="02.11" type="text">made it home, the bus was empty</message>
    <message t="06:13" d="02.11" type="sticker">[sleepy cat sticker]</message>
    </turn>

:func:`parse_turn` checks the *shape*: one ``<turn>``, closed, with one state line and
messages that each have a known type and a well-formed stamp. Whether the reply obeys the
chat (the right state line, time moving forward, who may end) is the *meaning*, checked by
``chat.state``. Both refuse with a :class:`Reason`, a stable string that failure
records and ``soc-async status`` count by.
"""

from __future__ import annotations

import re
from enum import StrEnum

import msgspec
from lxml import etree

from soc_async.formats.clock import parse_day, parse_time
from soc_async.formats.refusal import Refusal
from soc_async.records import MESSAGE_TYPES


class Reason(StrEnum):
    """Why a turn reply was refused. The values are stable: they are stored and counted."""

    # Shape, found by parse_turn.
    NO_TURN = "no_turn"  # no <turn> element at all
    SEVERAL_TURNS = "several_turns"  # more than one <turn>: the model wrote ahead
    UNCLOSED = "unclosed"  # a <turn>, <state> or <message> that is never closed
    MISSING_STATE = "missing_state"  # no <state>, or an empty one
    BAD_STATE_LINE = "bad_state_line"  # not one "topic; N turns remaining; next" line
    NO_MESSAGES = "no_messages"  # a turn with nothing said
    UNKNOWN_TYPE = "unknown_type"  # a message type outside the allowed set
    BAD_TIMESTAMP = "bad_timestamp"  # t/d missing or not a real HH:MM / DD.MM
    LEFTOVER_TAG = "leftover_tag"  # markup inside a message, or an element out of place
    # Meaning, found by the chat state machine.
    TOO_FEW_MESSAGES = "too_few_messages"  # fewer than the rules' minimum (above zero)
    TOO_MANY_MESSAGES = "too_many_messages"  # more than the rules' maximum
    EMPTY_TEXT = "empty_text"  # a message with only whitespace
    SPEAKER_PREFIX = "speaker_prefix"  # "Mia: ..." written into the message text
    STATE_MISMATCH = "state_mismatch"  # the state line disagrees with the topic tracker
    EARLY_ENDING = "early_ending"  # the ending tag before every topic is spent, or in freeform
    CLOCK_BACKWARDS = "clock_backwards"  # a message stamped before the one before it
    GAP_TOO_SHORT = "gap_too_short"  # a reply sooner than the cadence allows
    GAP_TOO_LONG = "gap_too_long"  # a step between messages longer than the cadence allows
    WRONG_DATE_START = "wrong_date_start"  # the first message outside the opening window
    # The plan, found before the first turn.
    TOO_SHORT = "too_short"  # the experience ends the chat before chat.min_turns
    # Transport, reported by the rollout driver.
    TRUNCATED = "truncated"  # the reply was cut off by max_tokens


class RawMessage(msgspec.Struct, frozen=True):
    """One ``<message>`` as written; ``t`` and ``d`` are well-formed but not yet placed in time."""

    t: str
    d: str
    type: str
    text: str


class ParsedTurn(msgspec.Struct, frozen=True):
    """A reply of the right shape, not yet checked against the chat."""

    state_line: str
    ended: bool  # the reply carried <predefined_topics_exhausted/>
    messages: list[RawMessage]


ENDING_TAG = "predefined_topics_exhausted"

# A state line has three parts; the tracker decides whether their values are right.
STATE_LINE_RE = re.compile(r"[^;]+;\s*\d+\s+turns?\s+remaining\s*;[^;]+", re.IGNORECASE)

# The only tags a turn is made of. Any other "<" is text: it is escaped before parsing so
# that a "<3" or a stray "<b>" reaches the message text, where the state machine judges it.
# (An "&" is escaped everywhere, so no entity is ever decoded.)
_OWN_TAG_RE = re.compile(
    rf"</?(?:turn|state|message)\b[^<>]*>|<{ENDING_TAG}\s*/?>|</{ENDING_TAG}\s*>", re.IGNORECASE
)
_TURN_OPEN_RE = re.compile(r"<turn\b[^<>]*>", re.IGNORECASE)
_TURN_CLOSE_RE = re.compile(r"</turn\s*>", re.IGNORECASE)
_PARSER = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)


def parse_turn(text: str) -> ParsedTurn | Refusal:
    """The one ``<turn>`` in a reply, or why there is not a usable one. Never raises.

    Text before ``<turn>`` and after ``</turn>`` is ignored (small models like to announce
    what they write), as is loose text between the elements inside it.
    """
    opens = list(_TURN_OPEN_RE.finditer(text))
    if not opens:
        return Refusal(Reason.NO_TURN, "the reply has no <turn> element")
    if len(opens) > 1:
        return Refusal(Reason.SEVERAL_TURNS, f"the reply has {len(opens)} <turn> elements")
    close = _TURN_CLOSE_RE.search(text, opens[0].end())
    if close is None:
        return Refusal(Reason.UNCLOSED, "<turn> is never closed with </turn>")
    body = _escape_text(text[opens[0].start() : close.end()])
    unbalanced = _unbalanced_tag(body)
    if unbalanced:
        return Refusal(Reason.UNCLOSED, unbalanced)
    try:
        # "replace": a lone surrogate (JSON can carry one) must not make encoding raise.
        root = etree.fromstring(body.encode("utf-8", "replace"), _PARSER)
    except etree.XMLSyntaxError as exc:  # recover gives up only on hopeless input
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Refusal(Reason.UNCLOSED, f"the <turn> is not readable markup ({first_line})")
    if root is None:
        return Refusal(Reason.UNCLOSED, "the <turn> is not readable markup")
    return _read_turn(root)


def _escape_text(body: str) -> str:
    """``body`` with every ``<``, ``>`` and ``&`` outside the turn's own tags escaped.

    Message text is taken literally: a model writes "R&D" or "<3", not entities, and an
    "&lt;" it does write stays those four characters.

    The own tags' names are lowercased on the way, so ``<Message>`` reads as ``<message>``,
    and the ending tag is always read as the empty element it is, however it was closed.
    """
    out, pos = [], 0
    for match in _OWN_TAG_RE.finditer(body):
        out.append(_escape_segment(body[pos : match.start()]))
        tag = re.sub(r"^</?\w+", lambda name: name.group(0).lower(), match.group(0))
        if ENDING_TAG in tag:
            tag = "" if tag.startswith("</") else f"<{ENDING_TAG}/>"
        out.append(tag.replace("&", "&amp;"))
        pos = match.end()
    out.append(_escape_segment(body[pos:]))
    return "".join(out)


def _escape_segment(segment: str) -> str:
    return segment.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unbalanced_tag(body: str) -> str | None:
    """A detail naming the first element opened and closed a different number of times."""
    for name in ("state", "message"):
        opened = len(re.findall(rf"<{name}\b[^<>]*(?<!/)>", body, re.IGNORECASE))
        closed = len(re.findall(rf"</{name}\s*>", body, re.IGNORECASE))
        if opened != closed:
            return f"<{name}> opened {opened} times but closed {closed} times"
    return None


def _read_turn(root: etree._Element) -> ParsedTurn | Refusal:
    states, messages, ended = [], [], False
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions carry nothing
        tag = child.tag
        if tag == "state":
            states.append(child)
        elif tag == "message":
            messages.append(child)
        elif tag == ENDING_TAG:
            ended = True
        else:
            return Refusal(Reason.LEFTOVER_TAG, f"a <{child.tag}> directly inside <turn>")

    if not states:
        return Refusal(Reason.MISSING_STATE, "the turn has no <state> element")
    if len(states) > 1:
        return Refusal(Reason.BAD_STATE_LINE, f"the turn has {len(states)} <state> elements")
    state = _read_state(states[0])
    if isinstance(state, Refusal):
        return state
    line, ended_in_state = state

    if not messages:
        return Refusal(Reason.NO_MESSAGES, "the turn has no <message> element")
    raw = []
    for number, element in enumerate(messages, start=1):
        message = _read_message(number, element)
        if isinstance(message, Refusal):
            return message
        raw.append(message)
    return ParsedTurn(state_line=line, ended=ended or ended_in_state, messages=raw)


def _read_state(element: etree._Element) -> tuple[str, bool] | Refusal:
    """The state line and whether the ending tag sits inside ``<state>``."""
    text, ended = element.text or "", False
    for child in element:
        if child.tag == ENDING_TAG:
            ended = True
        elif isinstance(child.tag, str):
            return Refusal(Reason.LEFTOVER_TAG, f"a <{child.tag}> inside <state>")
        text += "\n" + (child.tail or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return Refusal(Reason.MISSING_STATE, "<state> is empty")
    if len(lines) > 1:
        return Refusal(Reason.BAD_STATE_LINE, f"<state> holds {len(lines)} lines, not one")
    if not STATE_LINE_RE.fullmatch(lines[0]):
        return Refusal(
            Reason.BAD_STATE_LINE,
            f"state {lines[0]!r} is not 'topic; N turns remaining; next topic'",
        )
    return lines[0], ended


def _read_message(number: int, element: etree._Element) -> RawMessage | Refusal:
    kind = (element.get("type") or "").strip().lower()
    if kind not in MESSAGE_TYPES:
        return Refusal(
            Reason.UNKNOWN_TYPE,
            f"message {number} has type {element.get('type')!r}; "
            f"expected one of {', '.join(MESSAGE_TYPES)}",
        )
    t, d = element.get("t"), element.get("d")
    if t is None or parse_time(t) is None:
        return Refusal(Reason.BAD_TIMESTAMP, f'message {number} has t={t!r}; expected "HH:MM"')
    if d is None or parse_day(d) is None:
        return Refusal(Reason.BAD_TIMESTAMP, f'message {number} has d={d!r}; expected "DD.MM"')
    for child in element:
        if isinstance(child.tag, str):
            return Refusal(Reason.LEFTOVER_TAG, f"message {number} contains a <{child.tag}>")
    return RawMessage(t=t, d=d, type=kind, text=(element.text or "").strip())
