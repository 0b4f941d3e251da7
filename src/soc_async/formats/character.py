"""The `<character>` card: parsing, validation, near-duplicate check and grammar.

A card is markdown inside a ``<character>`` element: twelve sections, each opened by a
``**Header**`` line, in a fixed order, the first stating the sampled name, age and
location. :func:`parse_character` finds the element with lxml's HTML parser (it takes
stray text around the element, unescaped ``&`` and ``<3`` in stride), checks the
sections and the facts, and returns either a :class:`CharacterCard` whose ``text`` is the
card rewritten in one canonical layout, or a :class:`Refusal` with a short stable
reason code. It never raises.

:func:`character_grammar` is the xgrammar EBNF sent with a request so that even a small
model's card has that shape: headers as literals in order, the name, age and location
as literals, and free text that can hold neither ``<`` nor ``*``, so no section can be
skipped, faked or closed early. Any card the grammar accepts has the shape the parser
wants; length and near-duplicates are still the parser's and the stage's to check.
"""

from __future__ import annotations

import re

import lxml.etree
import lxml.html
import msgspec

from soc_async.formats.ebnf import literal
from soc_async.formats.names import fold
from soc_async.formats.refusal import Refusal
from soc_async.records import PersonaSample

SECTIONS: tuple[str, ...] = (
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


class CharacterCard(msgspec.Struct, kw_only=True, frozen=True):
    """A valid card, rewritten canonically: headers as ``**Header**``, one blank line apart."""

    text: str  # "<character>\n**Basic Information**\n...\n</character>"
    sections: dict[str, str]  # header -> its markdown, in SECTIONS order
    name: str  # the Name field as written, e.g. "Liu Yifan (刘一帆)"
    age: int
    location: str  # the Location field as written ("" when the card has none)


# Characters XML cannot carry (lxml refuses them) and lone surrogates (unencodable).
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# "<?xml ... encoding=...?>" makes lxml refuse a str; no declaration or PI matters here.
_PI = re.compile(r"<\?.*?\?>", re.DOTALL)
_OPEN = re.compile(r"<\s*character\b", re.IGNORECASE)
_CLOSE = re.compile(r"<\s*/\s*character\s*>", re.IGNORECASE)
_HEADER = re.compile(r"^[ \t]{0,3}(?:#{1,6}[ \t]*)?\*\*[ \t]*([^*\n]+?)[ \t]*\*\*[ \t]*:?[ \t]*$")


def _header_key(text: str) -> str:
    key = fold(text.rstrip(":").strip())
    return re.sub(r"\s+and\s+", " & ", key)


_CANONICAL = {_header_key(h): h for h in SECTIONS}


def _field(label: str) -> re.Pattern[str]:
    # "**Name:** x", "**Name**: x", "- **Name:** x", "Name: x"
    return re.compile(
        rf"^[ \t]*(?:[-*][ \t]+)?(?:\*\*)?[ \t]*{label}[ \t]*(?::[ \t]*\*\*|\*\*[ \t]*:|:)"
        r"[ \t]*(?P<value>[^\n]*)$",
        re.IGNORECASE | re.MULTILINE,
    )


_NAME, _AGE, _LOCATION = _field("Name"), _field("Age"), _field("Location")


def _reject(reason: str, detail: str) -> Refusal:
    return Refusal(reason=reason, detail=detail)


def _element_text(text: str) -> str | Refusal:
    """The text of the `<character>` element holding the most section headers."""
    try:
        root = lxml.html.document_fromstring(text)
        elements = list(root.iter("character"))
    except (lxml.etree.LxmlError, ValueError) as exc:
        return _reject("no_character_element", f"the reply could not be read as markup ({exc})")
    if not elements:
        return _reject(
            "no_character_element",
            "no <character> element: write the whole card between <character> and </character>",
        )
    bodies = [el.text_content() for el in elements]
    return max(bodies, key=lambda body: sum(bool(_HEADER.match(x)) for x in body.splitlines()))


def _sections(body: str) -> tuple[dict[str, str], list[str]] | Refusal:
    """Section contents by canonical header, and the headers in the order they came."""
    order: list[str] = []
    contents: dict[str, list[str]] = {}
    current: list[str] | None = None  # text before the first header is dropped
    # Lines end at "\n" only, as in the grammar; str.splitlines() would also split on
    # \x85, \u2028 and other separators a model's prose may carry.
    for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        match = _HEADER.match(line)
        header = _CANONICAL.get(_header_key(match.group(1))) if match else None
        if header is None:
            if current is not None:
                current.append(line.rstrip())
            continue
        if header in contents:
            return _reject(
                f"duplicate_section:{header}",
                f"the card has two **{header}** sections: write each section once",
            )
        order.append(header)
        current = contents[header] = []
    for header in SECTIONS:
        if header not in contents:
            return _reject(
                f"missing_section:{header}",
                f"the card has no **{header}** section: write all twelve sections in order, "
                "each header alone on its line",
            )
    if order != list(SECTIONS):
        return _reject(
            "sections_out_of_order",
            "the sections are out of order: write them in the order the format lists them",
        )
    sections = {h: "\n".join(contents[h]).strip("\n") for h in SECTIONS}
    for header, content in sections.items():
        if not content.strip():
            return _reject(f"empty_section:{header}", f"the **{header}** section is empty")
    return sections, order


def canonical_text(sections: dict[str, str]) -> str:
    """The card in the layout the project stores: one blank line between sections."""
    parts = [f"**{h}**\n{sections[h]}" for h in SECTIONS]
    return "<character>\n" + "\n\n".join(parts) + "\n</character>"


def parse_character(
    text: str, sample: PersonaSample, *, min_chars: int, max_chars: int
) -> CharacterCard | Refusal:
    """The card in ``text`` if it is a valid card for ``sample``, else why not.

    Length bounds apply to the card's content (the element's text, stripped). Never
    raises: any input gives a value.
    """
    clean = _PI.sub("", _INVALID.sub("", text))
    # A reply far over the bound is refused before the parser spends time on it.
    if len(clean) > 4 * max_chars + 4096:
        return _reject("too_long", f"the reply is far longer than {max_chars} characters")
    if not _OPEN.search(clean):
        return _reject(
            "no_character_element",
            "no <character> element: write the whole card between <character> and </character>",
        )
    if not _CLOSE.search(clean):
        return _reject("unclosed_character", "the card is not closed: end it with </character>")
    body = _element_text(clean)
    if isinstance(body, Refusal):
        return body
    if _OPEN.search(body) or _CLOSE.search(body):
        return _reject(
            "nested_character", "the card contains another <character> tag: write exactly one"
        )
    size = len(body.strip())
    if size < min_chars:
        return _reject(
            "too_short",
            f"the card has {size} characters, fewer than {min_chars}: give each "
            "section a few full sentences",
        )
    if size > max_chars:
        return _reject(
            "too_long", f"the card has {size} characters, more than {max_chars}: shorten it"
        )
    found = _sections(body)
    if isinstance(found, Refusal):
        return found
    sections, _ = found
    basic = sections["Basic Information"]
    name = _NAME.search(basic)
    if name is None:
        return _reject(
            "missing_field:Name",
            f"Basic Information has no **Name:** line: write **Name:** {sample.name}",
        )
    written = fold(name.group("value"))
    wanted = fold(sample.name)
    parts = (fold(sample.first_name), fold(sample.last_name))
    if wanted not in written and not all(p and p in written for p in parts):
        return _reject(
            "name_mismatch", f"the Name line must give the name {sample.name}, exactly as written"
        )
    age = _AGE.search(basic)
    if age is None:
        return _reject(
            "missing_field:Age",
            f"Basic Information has no **Age:** line: write **Age:** {sample.age}",
        )
    number = re.search(r"\d+", age.group("value"))
    if number is None or int(number.group()) != sample.age:
        return _reject("age_mismatch", f"the Age line must give the age {sample.age}")
    location = _LOCATION.search(basic)
    return CharacterCard(
        text=canonical_text(sections),
        sections=sections,
        name=name.group("value").strip(),
        age=sample.age,
        location=location.group("value").strip() if location else "",
    )


# --- grammar ----------------------------------------------------------------------------

# Free text holds no "<" (nothing can open or close an element), no "*" (no line can read
# as a header or a Name/Age field), no "&" but "& " (no character reference can turn into
# either once the HTML parser decodes it) and no control or line-separator characters.
# Every line starts with a visible character, or "- " and one, so no section is blank.
_GRAMMAR_RULES = r"""
field ::= "**" label ":** " lead rest "\n"
label ::= [A-Za-z] [A-Za-z &/'()-]*
line ::= ("- ")? lead rest "\n"
lead ::= [^<*&#\- \x00-\x1f\x7f-\x9f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]
name_extra ::= " (" ([^<*&()\x00-\x1f\x7f-\x9f\u2028\u2029] | "& ")+ ")"
"""

# Characters per token of a card (about 4 for English prose with common tokenizers):
# with max_tokens, each section gets an equal share of what is left of max_tokens * 4
# characters once the headers and the unbounded fact lines of Basic Information have
# theirs, so a card with every section full still closes before the call's limit.
# Measured on the embedded model: cards of 3,975-3,986 characters took 954-982 tokens,
# and with no share kept back two of six cards were cut off four times each.
_CHARS_PER_TOKEN = 4.0
_KEPT_BACK = 0.2  # of the budget, for headers and Basic Information's facts


def section_chars(max_tokens: int) -> int:
    """Characters one section's text may hold when a card must fit ``max_tokens``."""
    budget = max_tokens * _CHARS_PER_TOKEN * (1 - _KEPT_BACK)
    return max(120, int(budget / (len(SECTIONS) - 1)))


def character_grammar(sample: PersonaSample, *, max_tokens: int | None = None) -> str:
    """xgrammar EBNF for a card about ``sample`` (root rule ``root``).

    Without ``max_tokens`` it fixes the shape only (headers, facts, no markup in the
    text) and never the length: a real model writes as much as it would unconstrained.
    With it (the embedded-cpu profile) each section holds at most
    :func:`section_chars` characters, lines and blank lines included, so that a small
    model that rambles closes its card before the token limit.
    """
    # Field lines of Basic Information are never bounded: each bounded repeat costs
    # xgrammar seconds to compile (measured: 0.01 s for this grammar unbounded, 2.6 s
    # with the sections bounded, 8.8 s with fields and labels bounded too), and a field
    # is one line that a model closes with its newline.
    rest = 'rest ::= ([^<*&\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029] | "& ")*'
    if max_tokens is None:
        body = 'body ::= line ("\\n"? line)*'
    else:
        # A bounded repeat of one character class costs xgrammar little per token; of a
        # group with alternatives (like "& " above, or a line) a third of a second. So the
        # bounded text is one class with the newline in it, and '&' joins the class: the
        # card parser reads a stray entity as text anyway.
        size = section_chars(max_tokens)
        body = (
            f'body ::= ("- ")? lead '
            f'[^<*\\x00-\\x09\\x0b-\\x1f\\x7f-\\x9f\\u2028\\u2029]{{0,{size - 2}}} "\\n"'
        )
    rules = {h: f"s{i}" for i, h in enumerate(SECTIONS)}
    order = ' "\\n" '.join(rules[h] for h in SECTIONS)
    lines = [f'root ::= "<character>\\n" {order} "</character>"']
    lines.append(
        f's0 ::= {literal("**Basic Information**")} "\\n" '
        f'"**Name:** " {literal(sample.name)} name_extra? "\\n" '
        f'"**Age:** " {literal(str(sample.age))} "\\n" '
        f'"**Location:** " {literal(sample.subregion)} "\\n" field{{0,4}}'
    )
    for header in SECTIONS[1:]:
        lines.append(f'{rules[header]} ::= {literal(f"**{header}**")} "\\n" body')
    lines.append(body)
    lines.append(rest)
    return "\n".join(lines) + "\n" + _GRAMMAR_RULES.lstrip("\n")


__all__ = [
    "SECTIONS",
    "CharacterCard",
    "canonical_text",
    "character_grammar",
    "parse_character",
    "section_chars",
]
