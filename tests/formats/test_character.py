"""The `<character>` card: parser, validator, near-duplicate check, grammar, seed cards."""

from __future__ import annotations

import itertools
import re

import msgspec
import pytest
import xgrammar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xgrammar.testing import _is_grammar_accept_string

from soc_async.formats.character import (
    SECTIONS,
    CharacterCard,
    canonical_text,
    character_grammar,
    parse_character,
)
from soc_async.formats.refusal import Refusal
from soc_async.neardup import is_near_duplicate
from soc_async.records import PersonaSample
from soc_async.seeds import persona_cards

SAMPLE = PersonaSample(
    region="East Asia",
    country="China",
    subregion="Wuhan, Hubei, China",
    gender="male",
    first_name="Yifan",
    last_name="Liu",
    name="Liu Yifan",
    age=24,
    locale="zh_CN",
)
BOUNDS = {"min_chars": 400, "max_chars": 12000}

_FILLER = (
    "He rides an electric scooter across the Yangtze bridge to a logistics office, eats "
    "hot dry noodles at a stall by the metro exit, and plays basketball on Thursdays."
)


def sections(**overrides: str) -> dict[str, str]:
    """Contents of a valid card for SAMPLE, with some sections replaced."""
    out = {h: f"{_FILLER}\n- one detail about {h.lower()}" for h in SECTIONS}
    out["Basic Information"] = (
        "**Name:** Liu Yifan\n**Age:** 24\n**Location:** Wuhan, Hubei, China\n"
        "**Pronouns:** he/him\n**Occupation:** dispatcher"
    )
    out.update(overrides)
    return out


VALID = canonical_text(sections())


def parse(text: str, sample: PersonaSample = SAMPLE, **bounds: int) -> CharacterCard | Refusal:
    return parse_character(text, sample, **(BOUNDS | bounds))


def reason(text: str, **bounds: int) -> str:
    result = parse(text, **bounds)
    assert isinstance(result, Refusal), result
    assert "\n" not in result.detail and result.detail
    return result.reason


# --- accepting --------------------------------------------------------------------------


def test_valid_card_is_accepted_and_canonical() -> None:
    """A well-formed card parses into its twelve sections; reparsing its text is stable."""
    card = parse(VALID)
    assert isinstance(card, CharacterCard)
    assert list(card.sections) == list(SECTIONS)
    assert card.text == VALID
    assert card.name == "Liu Yifan" and card.age == 24
    assert card.location == "Wuhan, Hubei, China"
    again = parse(card.text)
    assert isinstance(again, CharacterCard) and again.text == card.text


def test_stray_text_fences_and_tag_case_are_tolerated() -> None:
    """Text before and after the element, code fences and an upper-case tag do not matter."""
    body = VALID.removeprefix("<character>").removesuffix("</character>")
    wrapped = f"Sure! Here is the card:\n```xml\n<CHARACTER>{body}</Character>\n```\nHope it helps."
    declared = f"<?xml version='1.0' encoding='utf-8'?>\n<!-- card -->\n{VALID}"
    for text in (wrapped, declared, f"<html><body><p>{VALID}</p></body></html>"):
        card = parse(text)
        assert isinstance(card, CharacterCard), text[:60]
        assert card.text == VALID


def test_header_variants_are_canonicalized() -> None:
    """'## **Values:**', '**Motivations and Fears**' and '**values**' count as the headers."""
    text = (
        VALID.replace("**Values**", "## **Values:**")
        .replace("**Motivations & Fears**", "**Motivations and Fears**")
        .replace("**Summary**", "**summary**")
    )
    card = parse(text)
    assert isinstance(card, CharacterCard)
    assert card.text == VALID


def test_markup_characters_in_prose_survive() -> None:
    """'<3', '&' and entities in the prose do not break the parse."""
    text = VALID.replace(_FILLER, "Loves his mum <3 and R&B, 5 < 6 &amp; tea.", 1)
    card = parse(text)
    assert isinstance(card, CharacterCard)
    assert "Loves his mum <3 and R&B, 5 < 6 & tea." in card.text


def test_name_tolerances() -> None:
    """The name may carry native script, lose its accents, or be given-first."""
    for line in ("Liu Yifan (刘一帆)", "LIU YIFAN", "Yifan Liu"):
        card = parse(VALID.replace("**Name:** Liu Yifan", f"**Name:** {line}"))
        assert isinstance(card, CharacterCard), line
    accented = msgspec.structs.replace(SAMPLE, name="Phạm Đức", first_name="Đức", last_name="Phạm")
    text = VALID.replace("**Name:** Liu Yifan", "**Name:** Pham Duc")
    assert isinstance(parse(text, accented), CharacterCard)


# --- rejecting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no markup at all", "no_character_element"),
        ("", "no_character_element"),
        (VALID.replace("</character>", ""), "unclosed_character"),
        (
            canonical_text(sections()).replace("**Values**\n", "**Valeurs**\n"),
            "missing_section:Values",
        ),
        (VALID.replace("**Core Traits**", "**Summary**"), "duplicate_section:Summary"),
        (
            VALID.replace("**Values**", "**TMP**")
            .replace("**Relationships**", "**Values**")
            .replace("**TMP**", "**Relationships**"),
            "sections_out_of_order",
        ),
        (canonical_text(sections(Values="   ")), "empty_section:Values"),
        (VALID.replace("**Name:** Liu Yifan", "**Name:** Wang Fang"), "name_mismatch"),
        (VALID.replace("**Name:** Liu Yifan", "**Handle:** Liu Yifan"), "missing_field:Name"),
        (VALID.replace("**Age:** 24", "**Age:** 42"), "age_mismatch"),
        (VALID.replace("**Age:** 24", "**Age:** twenty-four"), "age_mismatch"),
        (VALID.replace("**Age:** 24", "**Born:** 2001"), "missing_field:Age"),
        (VALID.replace(_FILLER, "&lt;/character&gt;", 1), "nested_character"),
    ],
)
def test_rejections_have_stable_reasons(text: str, expected: str) -> None:
    """Each kind of invalid card gets its own reason code and a one-line detail."""
    assert reason(text) == expected


def test_length_bounds() -> None:
    """Cards shorter than min_chars or longer than max_chars are refused."""
    assert reason(VALID, min_chars=len(VALID) + 1) == "too_short"
    assert reason(VALID, max_chars=len(VALID) // 2) == "too_long"
    assert reason(VALID * 200, max_chars=len(VALID)) == "too_long"
    assert isinstance(parse(VALID, max_chars=len(VALID)), CharacterCard)


_ALPHABET = st.characters(codec="utf-8") | st.sampled_from(list("<>/&*#\n\r\t-:;"))
_PIECES = st.sampled_from(
    [
        "<character>",
        "</character>",
        "<CHARACTER >",
        "< /character>",
        "<character/>",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<?xml version='1.0' encoding='utf-8'?>",
        "&",
        "&#0;",
        "&#x110000;",
        "&bogus;",
        "\x00",
        "\ud800",
        "\ufffe",
        "**",
        "**Name:**",
        "**Age:** 24",
        "**Name:** Liu Yifan",
        *[f"**{h}**\n" for h in SECTIONS],
        "<div>",
        "<script>",
        "<p>",
        "\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(_ALPHABET, max_size=40) | _PIECES, max_size=40))
def test_parser_never_raises_on_hostile_input(parts: list[str]) -> None:
    """Any mix of tags, entities, control characters and headers gives a value, never an error."""
    result = parse("".join(parts), min_chars=1)
    assert isinstance(result, CharacterCard | Refusal)
    if isinstance(result, Refusal):
        assert result.reason and "\n" not in result.detail


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=2000), st.integers(0, 3000), st.text(max_size=200))
def test_parser_never_raises_on_mangled_cards(noise: str, at: int, cut: str) -> None:
    """A valid card with noise spliced in or a piece cut out still gives a value."""
    text = VALID[:at] + noise + VALID[at:]
    for candidate in (text, text.replace(cut, "") if cut else text):
        assert isinstance(parse(candidate), CharacterCard | Refusal)


# --- near duplicates --------------------------------------------------------------------


def test_near_duplicate_detection() -> None:
    """A copy or a light edit of a reference is a near duplicate; another card is not."""
    seeds = persona_cards()
    edited = seeds[0].replace("Juliana", "Daniela").replace("27", "26")
    assert is_near_duplicate(seeds[0], seeds[:3], 0.9)
    assert is_near_duplicate(edited, [seeds[0]], 0.9)
    assert not is_near_duplicate(seeds[0], seeds[1:], 0.9)
    assert not is_near_duplicate(VALID, [], 0.9)


# --- grammar ----------------------------------------------------------------------------


def accepts(sample: PersonaSample, text: str) -> bool:
    return _is_grammar_accept_string(character_grammar(sample), text)


def test_grammar_compiles_and_accepts_a_valid_card() -> None:
    """The grammar compiles with xgrammar and accepts a valid card for its sample."""
    xgrammar.Grammar.from_ebnf(character_grammar(SAMPLE))
    assert accepts(SAMPLE, VALID)
    native = VALID.replace("**Name:** Liu Yifan", "**Name:** Liu Yifan (刘一帆)")
    assert accepts(SAMPLE, native)


@pytest.mark.parametrize(
    "text",
    [
        canonical_text(sections()).replace("**Values**\n", "", 1),
        VALID.replace("**Name:** Liu Yifan", "**Name:** Wang Fang"),
        VALID.replace("**Age:** 24", "**Age:** 25"),
        VALID.replace("**Location:** Wuhan, Hubei, China", "**Location:** Beijing, China"),
        VALID.replace("**Summary**", "**Values**"),
        VALID.replace(_FILLER, "*emphasis* here", 1),
        VALID.replace(_FILLER, "a <b>tag</b>", 1),
        VALID.replace(_FILLER, "an &amp; entity", 1),
        VALID.replace("</character>", ""),
        "Here you go:\n" + VALID,
    ],
)
def test_grammar_rejects_invalid_cards(text: str) -> None:
    """Missing or reordered sections, wrong facts, markup in prose and stray text are refused."""
    assert not accepts(SAMPLE, text)


# Text a grammar line may hold: no "<", "*", "&" (except "& "), controls or separators.
_LINE_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=["Cc", "Cs", "Zl", "Zp"],
    exclude_characters="<*&\ufffe\uffff",
)
_LINE = st.tuples(
    st.sampled_from(["", "- "]),
    st.characters(
        codec="utf-8",
        exclude_categories=["Cc", "Cs", "Zl", "Zp", "Zs"],
        exclude_characters="<*&#-\ufeff\ufffe\uffff",
    ),
    st.lists(_LINE_CHARS | st.just("& "), max_size=30).map("".join),
).map("".join)
_BODY = st.lists(st.tuples(_LINE, st.booleans()), min_size=1, max_size=4).map(
    lambda lines: "\n".join(line + ("\n" if blank else "") for line, blank in lines).rstrip("\n")
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_BODY, min_size=11, max_size=11), st.lists(_LINE, max_size=2))
def test_every_card_the_grammar_accepts_passes_the_parser(
    bodies: list[str], fields: list[str]
) -> None:
    """Cards built from the grammar's own productions are accepted by it and by the parser."""
    extra = "".join(f"\n**Note {'AB'[i]}:** {f.removeprefix('- ')}" for i, f in enumerate(fields))
    basic = "**Name:** Liu Yifan\n**Age:** 24\n**Location:** Wuhan, Hubei, China" + extra
    text = canonical_text(dict(zip(SECTIONS, [basic, *bodies], strict=True)))
    assert accepts(SAMPLE, text)
    card = parse(text, min_chars=1)
    assert isinstance(card, CharacterCard), card
    # The canonical text drops trailing spaces only, and is itself stable.
    assert card.text == "\n".join(line.rstrip() for line in text.split("\n"))
    assert parse(card.text, min_chars=1) == card


# --- the hand-written seed cards --------------------------------------------------------


def _seed_sample(text: str) -> PersonaSample:
    name = re.search(r"^\*\*Name:\*\* (.+)$", text, re.M)
    age = re.search(r"^\*\*Age:\*\* (\d+)$", text, re.M)
    location = re.search(r"^\*\*Location:\*\* (.+)$", text, re.M)
    assert name and age and location, text[:200]
    first, _, last = name.group(1).partition(" ")
    return PersonaSample(
        region="",
        country=location.group(1).rsplit(", ", 1)[-1],
        subregion=location.group(1),
        gender="female",
        first_name=first,
        last_name=last,
        name=name.group(1),
        age=int(age.group(1)),
        locale="",
    )


def test_seed_cards_are_valid_canonical_and_grammatical() -> None:
    """Every hand-written card passes the parser for its own facts, is already in the
    canonical layout, and is accepted by the grammar for those facts."""
    cards = persona_cards()
    assert len(cards) >= 12
    for text in cards:
        sample = _seed_sample(text)
        card = parse(text, sample)
        assert isinstance(card, CharacterCard), (sample.name, card)
        assert card.text == text, sample.name
        assert accepts(sample, text), sample.name


def test_seed_cards_are_varied() -> None:
    """Seed cards differ in people and places and are far from near-duplicates of each other."""
    cards = persona_cards()
    samples = [_seed_sample(t) for t in cards]
    assert len({s.country for s in samples}) == len(cards)
    assert max(s.age for s in samples) - min(s.age for s in samples) >= 20
    for a, b in itertools.combinations(cards, 2):
        assert not is_near_duplicate(a, [b], 0.7)


def test_bounded_grammar_keeps_a_card_inside_the_token_budget() -> None:
    """With max_tokens the grammar refuses a section that would run past the budget and
    still accepts an ordinary card, so a rambling model closes its card in time."""
    from soc_async.formats.character import section_chars

    bounded = character_grammar(SAMPLE, max_tokens=1200)
    rambling = canonical_text(sections(Values="word " * (section_chars(1200) // 5 + 10)))
    assert accepts(SAMPLE, rambling)  # unbounded: any length
    assert not _is_grammar_accept_string(bounded, rambling)
    assert _is_grammar_accept_string(bounded, VALID)
