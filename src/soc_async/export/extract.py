"""Fields that SOC-2508 and SPB-2508 kept apart and SOC-2602 writes as free text.

A persona here is a markdown ``<character>`` card and an experience an ``<experience>``
text; the older formats want short fields. The rules (docs/export.md states them for
users) are deterministic and never fail: a card or text that lacks a part gives an
empty string, an empty list or None for that field, never an error.

Persona (from the card's sections; see formats/character.py for the layout):

- ``name``: the card's ``Name:`` field as written, else the sampled ``meta.name``;
- ``username``: a ``Username:`` or ``Handle:`` field of Basic Information, else None;
- ``occupation``: ``meta.occupation`` when the run recorded it, else an
  ``Occupation:`` field, else None;
- ``traits``: the bullets of **Core Traits**, each cut to its label (the part before
  ``:``, `` - `` or `` — `` when that part has at most 5 words), markdown emphasis and a
  final full stop removed; a section without bullets gives its sentences; at most 5;
- ``background``: **Summary**, whitespace collapsed, cut to at most 300 characters at the
  last sentence end (else the last word, with "…");
- ``chatting_style``: the first sentence of **Communication Style**, cut to at most 120
  characters the same way.

Experience (from the prose before the labelled lines ``Conversation style:``,
``Message cadence:`` ...):

- ``relationship``: the first prose paragraph (relationship and history);
- ``situation``: the prose paragraphs after it (platform, situation, trigger); when there
  is a single paragraph, its first sentence is the relationship and the rest the situation;
- ``topic``: the PRIMARY topic as ``"title: description"`` (the first topic when none is
  primary, as in freeform; the initial state's topic when there are none).
"""

from __future__ import annotations

import re
from functools import lru_cache

import msgspec

from soc_async.formats.character import SECTIONS
from soc_async.records import Experience, Persona

__all__ = [
    "BACKGROUND_MAX",
    "CHATTING_STYLE_MAX",
    "MAX_TRAITS",
    "PersonaFields",
    "card_field",
    "card_sections",
    "clip",
    "experience_fields",
    "persona_fields",
    "sentences",
    "unwrap",
]

BACKGROUND_MAX = 300  # SPB-2508: "1-2 sentence, <=300 characters"
CHATTING_STYLE_MAX = 120  # SPB-2508: "<=120 characters"
MAX_TRAITS = 5  # SPB-2508: "3-5 adjectives"

_HEADER = re.compile(r"^[ \t]{0,3}(?:#{1,6}[ \t]*)?\*\*[ \t]*([^*\n]+?)[ \t]*\*\*[ \t]*:?[ \t]*$")
_KNOWN = {h.casefold(): h for h in SECTIONS}
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+(.*\S)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+(?=\S)")
_LABEL_SPLIT = re.compile(r"\s*(?::|\s-\s|\s—\s|\s–\s)\s*")
_EXPERIENCE_LABEL = re.compile(
    r"^\s*[*_#]*\s*(conversation style|message cadence|opens|initial state|"
    r"the conversation will likely cover|possible instant events)\b",
    re.IGNORECASE,
)


class PersonaFields(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    username: str | None
    age: int
    occupation: str | None
    traits: tuple[str, ...]
    background: str
    chatting_style: str


def unwrap(text: str, element: str) -> str:
    """The content of the outer ``<element>`` of ``text``; the whole text when it has none."""
    m = re.search(rf"<\s*{element}\s*>(.*?)(?:<\s*/\s*{element}\s*>|\Z)", text, re.S | re.I)
    return (m.group(1) if m else text).strip("\n")


def card_sections(text: str) -> dict[str, str]:
    """A card's sections by canonical header, in the order they come; unknown headers are
    part of the section before them."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in unwrap(text, "character").splitlines():
        m = _HEADER.match(line)
        header = _KNOWN.get(m.group(1).rstrip(":").strip().casefold()) if m else None
        if header is not None and header not in out:
            current = out[header] = []
        elif current is not None:
            current.append(line)
    return {h: "\n".join(lines).strip() for h, lines in out.items()}


def card_field(section: str, *labels: str) -> str | None:
    """The value of the first ``**Label:** value`` line (any of ``labels``) in ``section``."""
    for label in labels:
        m = re.search(
            rf"^[ \t]*(?:[-*][ \t]+)?(?:\*\*)?[ \t]*{re.escape(label)}[ \t]*"
            r"(?::[ \t]*\*\*|\*\*[ \t]*:|:)[ \t]*(?P<v>[^\n]*?)[ \t]*$",
            section,
            re.IGNORECASE | re.MULTILINE,
        )
        if m and m.group("v"):
            return m.group("v")
    return None


def sentences(text: str) -> list[str]:
    """``text`` with whitespace collapsed, split after ``.``, ``!``, ``?`` and ``…``."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if s] if flat else []


def clip(text: str, limit: int) -> str:
    """``text`` (whitespace collapsed) in at most ``limit`` characters: whole sentences
    when the first one fits, else whole words and an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    kept = ""
    for s in sentences(flat):
        candidate = f"{kept} {s}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept:
        return kept
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:") + "…"


def _plain(text: str) -> str:
    return re.sub(r"[*_`]+", "", text).strip().rstrip(".").strip()


def _traits(section: str) -> list[str]:
    bullets = [m.group(1) for line in section.splitlines() if (m := _BULLET.match(line))]
    if not bullets:
        return [_plain(s) for s in sentences(section)][:MAX_TRAITS]
    out = []
    for bullet in bullets:
        head = _LABEL_SPLIT.split(bullet, maxsplit=1)[0]
        trait = _plain(head if len(head.split()) <= 5 else bullet)
        if trait:
            out.append(trait)
    return out[:MAX_TRAITS]


def persona_fields(persona: Persona) -> PersonaFields:
    """The SPB-2508 fields of ``persona`` by the rules of this module's docstring."""
    return _fields(
        persona.persona_text,
        persona.meta.name,
        persona.meta.age,
        persona.meta.occupation or None,
    )


@lru_cache(maxsize=8192)  # a persona is in many conversations; its card is read once
def _fields(text: str, name: str, age: int, occupation: str | None) -> PersonaFields:
    sections = card_sections(text)
    basic = sections.get("Basic Information", "")
    style = sentences(sections.get("Communication Style", ""))
    return PersonaFields(
        name=card_field(basic, "Name") or name,
        username=card_field(basic, "Username", "Handle"),
        age=age,
        occupation=occupation or card_field(basic, "Occupation"),
        traits=tuple(_traits(sections.get("Core Traits", ""))),
        background=clip(sections.get("Summary", ""), BACKGROUND_MAX),
        chatting_style=clip(style[0], CHATTING_STYLE_MAX) if style else "",
    )


def _prose(text: str) -> list[str]:
    """The prose paragraphs of an experience: blocks before the first labelled line."""
    out = []
    for block in re.split(r"\n\s*\n", unwrap(text, "experience")):
        lines = [x for x in block.splitlines() if x.strip()]
        if not lines:
            continue
        if _EXPERIENCE_LABEL.match(lines[0]) or _BULLET.match(lines[0]):
            break
        out.append(" ".join(" ".join(lines).split()))
    return out


def experience_fields(exp: Experience) -> tuple[str, str, str]:
    """(relationship, situation, topic) of ``exp`` by the rules of this module's docstring."""
    prose = _prose(exp.experience_text)
    if len(prose) >= 2:
        relationship, situation = prose[0], "\n\n".join(prose[1:])
    elif prose:
        first, *rest = sentences(prose[0])
        relationship, situation = first, " ".join(rest)
    else:
        relationship = situation = ""
    slot = next((t for t in exp.topics if t.primary), exp.topics[0] if exp.topics else None)
    if slot is None:
        topic = exp.initial_state.split(";")[0].strip()
    else:
        topic = f"{slot.title}: {slot.description}" if slot.description else slot.title
    return relationship, situation, topic
