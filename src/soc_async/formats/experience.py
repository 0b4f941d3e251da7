"""The `<experience>` text: its parser, its validation rules and its grammar.

The model writes an experience as plain text inside one `<experience>` element::

    <experience>
    narrative paragraphs: relationship, platform and situation, today's trigger

    Conversation style: semi-structured
    Message cadence: async (hours between replies)
    Opens: <one of the two persona names>           (optional: the first of the pair)

    The conversation will likely cover the following topics:
    - Title: description (8 turns) ← PRIMARY
    - Title: description (5 turns)

    Initial state: Title; 8; Next title

    Possible instant events:
    - a small real-life interruption
    - another one
    </experience>

:func:`parse_experience` turns that text into a :class:`ParsedExperience` or says why it
cannot, as a :class:`Refusal` with a short stable reason code; it never raises, so a
hostile reply is one more retry, not a crash. :func:`experience_grammar` builds the
xgrammar EBNF that keeps a small model inside the same shape; the grammar guarantees the
shape, the parser still checks the meaning (the initial state naming the first topic is
a cross-reference the grammar cannot state).
"""

from __future__ import annotations

import re

import msgspec

from soc_async.formats.ebnf import alternatives, literal
from soc_async.formats.names import fold, name_tokens
from soc_async.formats.refusal import Refusal
from soc_async.records import TopicSlot

# The element is found with a regular expression, not an XML parser: its body is free
# text in which "<- PRIMARY", "&" or "<3" are ordinary content that XML would refuse.
_ELEMENT_RE = re.compile(r"<experience\s*>(.*?)</experience\s*>", re.IGNORECASE | re.DOTALL)
_OPEN_RE = re.compile(r"<experience\s*>", re.IGNORECASE)

# Labels tolerate markdown decoration ("**Opens:** Ana"): models add it unasked.
_DECOR = r"[\s*#_]*"
_LABELS: dict[str, re.Pattern[str]] = {
    name: re.compile(rf"^{_DECOR}{label}[*_]*\s*:[\s*_]*(?P<value>.*?)\s*$", re.IGNORECASE)
    for name, label in (
        ("style", r"conversation\s+style"),
        ("cadence", r"message\s+cadence"),
        ("opens", r"opens"),
        ("state", r"initial\s+state"),
    )
}
_TOPICS_HEADER_RE = re.compile(
    rf"^{_DECOR}(?:the\s+conversation\s+will\s+likely\s+cover\s+the\s+following\s+topics"
    r"|topics)[*_]*\s*:?[\s*_]*$",
    re.IGNORECASE,
)
_EVENTS_HEADER_RE = re.compile(
    rf"^{_DECOR}possible\s+instant\s+events[*_]*\s*:?[\s*_]*$", re.IGNORECASE
)
_BULLET_RE = re.compile(r"^\s*[-*•]\s+(?P<body>.*?)\s*$")
_TOPIC_RE = re.compile(
    r"^(?P<head>.*?)\s*\(\s*(?P<turns>[+-]?\d+)\s*turns?\s*\)"
    r"\s*(?P<mark>(?:←|<-+|-+>?|—)?\s*PRIMARY)?\s*$",
    re.IGNORECASE,
)
_STYLE_RE = re.compile(
    r"^(?P<style>free[\s_-]?form|semi[\s_-]?structured|structured)\b", re.IGNORECASE
)
_CADENCE_RE = re.compile(
    r"^(?P<cadence>real[\s_-]?time|delayed|asynchronous|async)\b(?P<note>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_STATE_TURNS_RE = re.compile(r"^(?P<n>\d+)(?:\s+turns?(?:\s+remaining)?)?$", re.IGNORECASE)
_NAME_DECOR = "*_`\"'."  # quotes, markdown and a final full stop around a name
_MAX_DIGITS = 9
_NO_NEXT = frozenset({"", "end", "none", "-", "—", "n/a"})

STYLES_WITH_ROADMAP = ("semi-structured", "structured")


class ParsedExperience(msgspec.Struct, kw_only=True):
    """The fields of a valid `<experience>`, ready to become a ``records.Experience``."""

    text: str  # the element as written, `<experience>` to `</experience>`, no stray text
    narrative: str
    style: str  # one of records.STYLES
    cadence: str  # one of records.CADENCES
    cadence_note: str  # the free text after the cadence word, without its parentheses
    opener_name: str  # as given in ``names``, not as the model spelled it
    topics: list[TopicSlot]
    initial_state: str  # as written; "" for a freeform experience without a roadmap
    instant_events: list[str]
    initial_state_derived: bool = False  # the written one disagreed and was derived instead


class _Fail(Exception):
    """Internal: carries a Refusal out of the nested parsing helpers."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.rejection = Refusal(reason=reason, detail=detail)


def _norm(text: str) -> str:
    """Case- and whitespace-insensitive form used to compare names and titles."""
    return " ".join(text.split()).casefold()


def _clip(text: str, limit: int = 80) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def parse_experience(
    text: str,
    names: tuple[str, str],
    *,
    min_events: int,
    max_events: int,
    derive_initial_state: bool = False,
) -> ParsedExperience | Refusal:
    """The experience in ``text`` (a model reply), or why it is not one. Never raises.

    ``names`` are the two personas' names; "Opens:" must name one of them (its full
    name, or a part of it that the other name lacks, such as the given name); without
    an "Opens:" line the first of ``names`` opens, as in the SOC-2602 write-up's format.
    ``min_events``/``max_events`` bound the instant events. With
    ``derive_initial_state`` an "Initial state:" line that disagrees with a valid roadmap
    is not a rejection: the line is derived from the roadmap (the topic tracker in code
    is the truth anyway) and the text is corrected to match. A grammar can shape the
    roadmap but cannot make the state line repeat a title the model chose, so a small
    model under a grammar gets it wrong more often than anything else.
    """
    try:
        return _parse(text, names, min_events, max_events, derive_initial_state)
    except _Fail as fail:
        return fail.rejection
    except Exception as exc:  # a parser bug must not kill a run; it is one more rejection
        return Refusal(reason="parser_error", detail=f"{type(exc).__name__}: {_clip(str(exc))}")


def _parse(
    text: str, names: tuple[str, str], min_events: int, max_events: int, derive: bool
) -> ParsedExperience:
    match = _ELEMENT_RE.search(text)
    if match is None:
        if _OPEN_RE.search(text):
            raise _Fail("unclosed", "the <experience> element is not closed with </experience>")
        raise _Fail("no_element", "no <experience> ... </experience> element in the reply")
    body = match.group(1)
    lines = body.splitlines()

    sections = _split_sections(lines)
    narrative = "\n".join(sections.narrative).strip()
    if not narrative:
        raise _Fail("no_narrative", "the narrative before 'Conversation style:' is empty")

    style = _style(sections.labels.get("style"))
    cadence, note = _cadence(sections.labels.get("cadence"))
    opener = _opener(sections.labels.get("opens"), names)
    topics = [_topic(line) for line in sections.topics]
    events = _events(sections, min_events, max_events)

    primaries = sum(t.primary for t in topics)
    if style in STYLES_WITH_ROADMAP:
        if not topics:
            raise _Fail("no_topics", f"a {style} experience needs a topic list with turn budgets")
        if primaries != 1:
            raise _Fail("primary_count", f"mark exactly one topic PRIMARY (found {primaries})")
    elif primaries > 1:
        raise _Fail("primary_count", f"mark at most one topic PRIMARY (found {primaries})")

    state = sections.labels.get("state")
    element = match.group(0)
    derived = False
    if topics:
        try:
            if state is None:
                raise _Fail(
                    "missing_initial_state", "add 'Initial state: first topic; N; next topic'"
                )
            _check_state(state, topics)
        except _Fail:
            if not derive or state is None:
                raise
            nxt = topics[1].title if len(topics) > 1 else "end"
            written, state = state, f"{topics[0].title}; {topics[0].turns}; {nxt}"
            element = element.replace(f"Initial state: {written}", f"Initial state: {state}", 1)
            derived = True
    elif state is not None:
        raise _Fail(
            "initial_state_without_topics",
            "an experience without a topic list has no 'Initial state:' line",
        )

    return ParsedExperience(
        text=element,
        narrative=narrative,
        style=style,
        cadence=cadence,
        cadence_note=note,
        opener_name=opener,
        topics=topics,
        initial_state=state or "",
        instant_events=events,
        initial_state_derived=derived,
    )


class _Sections(msgspec.Struct):
    narrative: list[str]
    labels: dict[str, str]
    topics: list[str]
    events: list[str]
    seen_topics_header: bool
    seen_events_header: bool


def _split_sections(lines: list[str]) -> _Sections:
    """Lines sorted into narrative, labelled values and the two bullet lists.

    The narrative is everything before the first labelled line; after it every non-blank
    line must be a label, a list header, or a bullet under the most recent list header.
    """
    out = _Sections(
        narrative=[],
        labels={},
        topics=[],
        events=[],
        seen_topics_header=False,
        seen_events_header=False,
    )
    in_narrative = True
    current: list[str] | None = None
    for raw in lines:
        line = raw.strip()
        label = _label(line)
        is_header = bool(_TOPICS_HEADER_RE.match(line) or _EVENTS_HEADER_RE.match(line))
        if in_narrative and label is None and not is_header:
            out.narrative.append(raw)
            continue
        in_narrative = False
        if not line:
            continue
        if label is not None:
            name, value = label
            if name in out.labels:
                raise _Fail("duplicate_section", f"more than one '{_clip(line, 30)}' line")
            out.labels[name] = value
            current = None
        elif _TOPICS_HEADER_RE.match(line):
            if out.seen_topics_header:
                raise _Fail("duplicate_section", "more than one topic list")
            out.seen_topics_header = True
            current = out.topics
        elif _EVENTS_HEADER_RE.match(line):
            if out.seen_events_header:
                raise _Fail("duplicate_section", "more than one instant-event list")
            out.seen_events_header = True
            current = out.events
        else:
            bullet = _BULLET_RE.match(line)
            if bullet is None or current is None:
                raise _Fail("unexpected_line", f"line not in the format: {_clip(line)!r}")
            current.append(bullet.group("body"))
    return out


def _label(line: str) -> tuple[str, str] | None:
    for name, pattern in _LABELS.items():
        m = pattern.match(line)
        if m:
            return name, m.group("value")
    return None


def _style(value: str | None) -> str:
    if value is None:
        raise _Fail(
            "missing_style", "add 'Conversation style: freeform|semi-structured|structured'"
        )
    m = _STYLE_RE.match(value.strip().strip("*_`\"'"))
    if m is None:
        raise _Fail(
            "bad_style",
            f"style must be freeform, semi-structured or structured, got {_clip(value, 40)!r}",
        )
    word = re.sub(r"[\s_-]", "", m.group("style").lower())
    return {"freeform": "freeform", "semistructured": "semi-structured"}.get(word, "structured")


def _cadence(value: str | None) -> tuple[str, str]:
    if value is None:
        raise _Fail("missing_cadence", "add 'Message cadence: realtime|delayed|async (note)'")
    m = _CADENCE_RE.match(value.strip().strip("*_`\"'"))
    if m is None:
        raise _Fail(
            "bad_cadence",
            f"cadence must start with realtime, delayed or async, got {_clip(value, 40)!r}",
        )
    word = re.sub(r"[\s_-]", "", m.group("cadence").lower())
    cadence = {"realtime": "realtime", "delayed": "delayed"}.get(word, "async")
    note = m.group("note").strip().lstrip("-—–,:;").strip()
    if note.startswith("(") and note.endswith(")"):
        note = note[1:-1].strip()
    return cadence, note


def opener_spellings(names: tuple[str, str]) -> list[list[str]]:
    """For each of ``names``, the ways "Opens:" may write it: the full name, then each
    word of it the other name lacks (so "Ahmed" for "Ahmed Khan" beside "Wei Zhang")."""
    words = [[w for w in n.split() if name_tokens(w)] for n in names]
    out = []
    for i, name in enumerate(names):
        other = {fold(w) for w in words[1 - i]}
        own = [w for w in words[i] if fold(w) not in other and w != name]
        out.append([name, *dict.fromkeys(own)])
    return out


def _opener(value: str | None, names: tuple[str, str]) -> str:
    if value is None:
        return names[0]
    given = fold(value.strip().strip(_NAME_DECOR).strip())
    for name, spellings in zip(names, opener_spellings(names), strict=True):
        if any(given == fold(s.strip().strip(_NAME_DECOR).strip()) for s in spellings):
            return name
    raise _Fail(
        "bad_opener", f"'Opens:' must be {names[0]!r} or {names[1]!r}, got {_clip(value, 40)!r}"
    )


def _topic(line: str) -> TopicSlot:
    m = _TOPIC_RE.match(line)
    if m is None:
        raise _Fail(
            "bad_topic_line",
            f"topic lines read '- Title: description (N turns)', got {_clip(line)!r}",
        )
    head = m.group("head")
    title, _, description = head.partition(":")
    title = title.strip().strip("*_").strip()
    if not title:
        raise _Fail("bad_topic_line", f"topic without a title: {_clip(line)!r}")
    if ";" in title:
        # The chat's state line is "topic; N turns remaining; next": a ';' would split it.
        raise _Fail("bad_topic_title", f"a topic title may not contain ';': {_clip(title, 40)!r}")
    digits = m.group("turns")
    # Python refuses to read ints of thousands of digits; anything this long is nonsense.
    turns = int(digits) if len(digits) <= _MAX_DIGITS else 0
    if turns < 1:
        raise _Fail("bad_budget", f"turn budgets are positive integers, got {turns} for {title!r}")
    return TopicSlot(
        title=title,
        turns=turns,
        primary=m.group("mark") is not None,
        description=description.strip(),
    )


def _events(sections: _Sections, min_events: int, max_events: int) -> list[str]:
    if not sections.seen_events_header:
        raise _Fail(
            "missing_events",
            f"add 'Possible instant events:' with {min_events} to {max_events} lines",
        )
    events = [e for e in sections.events if e]
    if not min_events <= len(events) <= max_events:
        raise _Fail(
            "event_count",
            f"write {min_events} to {max_events} instant events, not {len(events)}",
        )
    return events


def _check_state(state: str, topics: list[TopicSlot]) -> None:
    """The initial state must be "first title; its budget; second title (or end)"."""
    parts = [p.strip() for p in state.split(";")]
    first = topics[0]
    expected_next = topics[1].title if len(topics) > 1 else "end"
    want = f"'Initial state: {first.title}; {first.turns}; {expected_next}'"
    if len(parts) == 2 and len(topics) == 1:
        parts.append("end")
    if len(parts) != 3:
        raise _Fail("bad_initial_state", f"initial state has three fields separated by ';': {want}")
    title, turns, nxt = parts
    if _norm(title) != _norm(first.title):
        raise _Fail("initial_state_topic", f"the initial state must name the first topic: {want}")
    m = _STATE_TURNS_RE.match(turns)
    if m is None or len(m.group("n")) > _MAX_DIGITS or int(m.group("n")) != first.turns:
        raise _Fail(
            "initial_state_turns", f"the initial state must give the first topic's budget: {want}"
        )
    if len(topics) > 1:
        if _norm(nxt) != _norm(topics[1].title):
            raise _Fail(
                "initial_state_next", f"the initial state must name the second topic next: {want}"
            )
    elif _norm(nxt) not in _NO_NEXT:
        raise _Fail(
            "initial_state_next", f"with one topic the initial state ends with 'end': {want}"
        )


# ---------------------------------------------------------------------------- grammar

_TOPICS_HEADER = "The conversation will likely cover the following topics:\n"
_EVENTS_HEADER = "Possible instant events:\n"


def experience_grammar(
    names: tuple[str, str],
    *,
    min_events: int,
    max_events: int,
    max_topics: int = 5,
    max_budget: int = 20,
    style: str | None = None,
    max_tokens: int | None = None,
) -> str:
    """xgrammar EBNF for one `<experience>` written for ``names``.

    Style and cadence come from their sets (``style`` forces one, as the style monitor's
    hint does), "Opens:" (optional) is one of the two names, topic lines carry budgets
    in 1..``max_budget`` and exactly one "← PRIMARY" mark, the initial state is shaped
    "title; N; next", and there are ``min_events``..``max_events`` instant events.
    Structured and semi-structured experiences must have a topic list; freeform may not.

    Without ``max_tokens`` the grammar fixes that shape and nothing else: no part has a
    length bound, so a real model writes as much as it would unconstrained. With it (the
    embedded-cpu profile) every free part is bounded so that even a small model that
    rambles closes the element inside the call's limit: see :func:`text_bounds`.
    """
    styles = [style] if style is not None else ["freeform", "semi-structured", "structured"]
    roadmap_styles = [s for s in styles if s in STYLES_WITH_ROADMAP]
    branches = []
    if roadmap_styles:
        branches.append(
            f'"Conversation style: " {alternatives(roadmap_styles)} "\\n" common roadmap events'
        )
    if "freeform" in styles:
        branches.append('"Conversation style: freeform\\n" common roadmap? events')
    budgets = alternatives([str(n) for n in range(1, max_budget + 1)])
    # Exactly one PRIMARY among 1..max_topics lines: one alternative per position of it.
    primary_positions = " | ".join(
        "(" + " ".join(_primary_at(p, max_topics - 1 - p)) + ")" for p in range(max_topics)
    )
    openers = [s for spellings in opener_spellings(names) for s in spellings]
    # Free text stops at '<' so that no line can close the element early; titles also
    # stop at ':' and ';', which separate a title from its description and state fields.
    # The cadence note is never bounded: it is one parenthesis on one line, and each
    # bounded repeat costs xgrammar seconds to compile (this grammar: 0.08 s unbounded,
    # about 7 s bounded).
    if max_tokens is None:
        narrative = 'narrative ::= text ("\\n" "\\n"? text)*'
        title = "title ::= [^\\n<:;( ] [^\\n<:;(]*"
        line = "line ::= [^\\n<←]*"
    else:
        bound = text_bounds(max_tokens, max_topics=max_topics, max_events=max_events)
        # One character class with the newline in it: a bounded repeat of a single class
        # costs xgrammar little per token, a bounded repeat of a group a great deal.
        # Descriptions and events share one bounded class (an event has no use for "←").
        narrative = f"narrative ::= [^\\n< ] [^<]{{0,{bound.narrative - 1}}}"
        title = f"title ::= [^\\n<:;( ] [^\\n<:;(]{{0,{bound.title - 1}}}"
        line = f"line ::= [^\\n<←]{{0,{bound.line - 1}}}"
    rules = [
        'root ::= "<experience>\\n" narrative "\\n\\n" body "</experience>"',
        narrative,
        "text ::= [^\\n<] [^\\n<]*",
        "body ::= " + " | ".join(f"({b})" for b in branches),
        'common ::= "Message cadence: " cadence note? "\\n" ("Opens: " opener "\\n")? "\\n"',
        f"cadence ::= {alternatives(['realtime', 'delayed', 'async'])}",
        'note ::= " (" [^\\n<()] [^\\n<()]* ")"',
        f"opener ::= {alternatives(list(dict.fromkeys(openers)))}",
        f'roadmap ::= {literal(_TOPICS_HEADER)} topics "\\n" state "\\n\\n"',
        f"topics ::= {primary_positions}",
        'plain ::= topic "\\n"',
        'primary ::= topic " ← PRIMARY\\n"',
        'topic ::= "- " title ": " desc " (" budget turnword ")"',
        'turnword ::= " turns" | " turn"',
        title,
        "desc ::= [^\\n<←()] line",
        line,
        f"budget ::= {budgets}",
        'state ::= "Initial state: " title "; " budget "; " title',
        f"events ::= {literal(_EVENTS_HEADER)} event{{{min_events},{max_events}}}",
        'event ::= "- " [^\\n<←] line "\\n"',
    ]
    return "\n".join(rules) + "\n"


class TextBounds(msgspec.Struct, frozen=True, kw_only=True):
    """Characters each free part of an experience may hold under a token budget."""

    narrative: int
    title: int
    line: int  # a topic's description, or an instant event


# A small model's odd words and names can come down to two characters a token.
_CHARS_PER_TOKEN = 2
_FIXED_CHARS = 300  # the labels, headers and marks of an experience


def text_bounds(max_tokens: int, *, max_topics: int, max_events: int) -> TextBounds:
    """How ``max_tokens`` is shared: a third for the narrative, the rest evenly over the
    topic lines (a title of a quarter of a line, and a description) and the event lines,
    so that an experience with most parts full still fits the budget."""
    chars = max_tokens * _CHARS_PER_TOKEN
    narrative = max(120, chars // 3)
    line = max(40, (chars - narrative - _FIXED_CHARS) // (max_topics + max_events))
    return TextBounds(narrative=narrative, title=max(20, line // 4), line=line)


def _primary_at(before: int, after_max: int) -> list[str]:
    parts = [f"plain{{{before}}}"] if before else []
    parts.append("primary")
    if after_max:
        parts.append(f"plain{{0,{after_max}}}")
    return parts
