"""Grammars constrain shape, never richness: every hand-written seed and the project's own
excerpts in the SOC-2602 write-up's format are accepted by the card and experience
grammars of the default profile (sized for a real model), and by the embedded CPU
profile's tighter grammars once each free part is cut to the length that profile allows
(its bounds exist to make a 135M model finish, not to judge a card), checked offline with
xgrammar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from xgrammar.testing import _is_grammar_accept_string

from soc_async import config as cfg
from soc_async.formats.character import (
    CharacterCard,
    character_grammar,
    parse_character,
    section_chars,
)
from soc_async.formats.experience import ParsedExperience, experience_grammar, parse_experience
from soc_async.records import PersonaSample
from soc_async.seeds import cards, persona_cards
from soc_async.stages.experiences import MAX_BUDGET, MAX_TOPICS

EXCERPTS = Path(__file__).parent / "excerpts"
PROFILES = ("default", "embedded-cpu")


def grammar_tokens(profile: str, kind: str) -> int | None:
    """The max_tokens a profile's grammar of ``kind`` is bounded by (None: shape only)."""
    call = cfg.from_dict({"profile": profile}).call(kind)
    return call.max_tokens if call.grammar_bounds == "max_tokens" else None


def card_sample(text: str) -> PersonaSample:
    name = re.search(r"^\*\*Name:\*\* (.+)$", text, re.M)
    age = re.search(r"^\*\*Age:\*\* (\d+)$", text, re.M)
    location = re.search(r"^\*\*Location:\*\* (.+)$", text, re.M)
    assert name and age and location, text[:200]
    written = name.group(1).split(" (")[0]  # "Minh (Trần Văn Minh)": the name is "Minh"
    first, _, last = written.partition(" ")
    return PersonaSample(
        region="",
        country=location.group(1).rsplit(", ", 1)[-1],
        subregion=location.group(1),
        gender="female",
        first_name=first,
        last_name=last,
        name=written,
        age=int(age.group(1)),
        locale="",
    )


def experience_names(text: str) -> tuple[str, str]:
    """The pair an experience was written for, as its first sentence names them."""
    first = text.split("\n")[1]
    match = re.match(r"(.+?) and (.+?) (?:have|met|know|are)\b", first)
    assert match, first
    return match.group(1), match.group(2)


ALL_CARDS = [*persona_cards(), (EXCERPTS / "card_minh.md").read_text(encoding="utf-8").strip()]
ALL_EXPERIENCES = [
    *cards("experiences", ".txt"),
    (EXCERPTS / "experience_ines_paolo.txt").read_text(encoding="utf-8").strip(),
]


def test_default_profile_is_sized_for_a_real_model() -> None:
    """The default card budget holds twice the longest seed (at 4 characters a token), and
    the default grammars bound nothing but shape; only the embedded profile bounds text."""
    default = cfg.from_dict({"profile": "default"})
    longest = max(len(c) for c in persona_cards())
    assert default.calls.persona.max_tokens * 4 >= 2 * longest
    assert default == cfg.RunConfig(profile="default")
    assert grammar_tokens("default", "persona") is None
    assert grammar_tokens("default", "experience") is None
    assert grammar_tokens("embedded-cpu", "persona") is not None
    assert grammar_tokens("embedded-cpu", "experience") is not None


def cut_sections(card: str, size: int) -> str:
    """``card`` with the text under each header after Basic Information cut to one line of
    at most ``size`` characters (newline included), at a word boundary."""
    parts = re.split(r"^(\*\*[^*\n:]+\*\*)\n", card, flags=re.M)
    sections = []
    for header, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.strip().removesuffix("</character>").strip()
        if header != "**Basic Information**":
            flat = " ".join(body.split()).removeprefix("- ")
            body = flat if len(flat) <= size - 2 else flat[: size - 2].rsplit(" ", 1)[0]
        sections.append(f"{header}\n{body}\n")
    return parts[0] + "\n".join(sections) + "</character>"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_seed_card_and_excerpt_is_accepted(profile: str) -> None:
    """Each hand-written card and the write-up-style excerpt passes the profile's card
    grammar built for its own facts, and the parser; under a bounded grammar (the
    embedded profile) the card with each section cut to the bound does."""
    tokens = grammar_tokens(profile, "persona")
    for text in ALL_CARDS:
        sample = card_sample(text)
        grammar = character_grammar(sample, max_tokens=tokens)
        if tokens is not None:
            text = cut_sections(text, section_chars(tokens))
        assert _is_grammar_accept_string(grammar, text), (profile, sample.name)
        parsed = parse_character(text, sample, min_chars=400, max_chars=12000)
        assert isinstance(parsed, CharacterCard), (sample.name, parsed)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_seed_experience_and_excerpt_is_accepted(profile: str) -> None:
    """Each hand-written experience and the write-up-style excerpt (no "Opens:" line,
    wrapped narrative lines, long topic lines, a lower-case state title) passes the
    profile's experience grammar for its two names, and the parser."""
    tokens = grammar_tokens(profile, "experience")
    for text in ALL_EXPERIENCES:
        names = experience_names(text)
        grammar = experience_grammar(
            names,
            min_events=2,
            max_events=5,
            max_topics=MAX_TOPICS,
            max_budget=MAX_BUDGET,
            max_tokens=tokens,
        )
        assert _is_grammar_accept_string(grammar, text), (profile, names)
        parsed = parse_experience(text, names, min_events=2, max_events=5)
        assert isinstance(parsed, ParsedExperience), (names, parsed)


def test_excerpt_without_opens_line_is_opened_by_the_first_of_the_pair() -> None:
    """The write-up's format has no "Opens:" line: the first of the pair opens."""
    text = ALL_EXPERIENCES[-1]
    parsed = parse_experience(text, ("Inês Duarte", "Paolo Reyes"), min_events=2, max_events=5)
    assert isinstance(parsed, ParsedExperience) and parsed.opener_name == "Inês Duarte"
    assert parsed.initial_state == "weekend catch-up; 7; the exchange itself"


@pytest.mark.parametrize(
    ("written", "opener"),
    [("Paolo", "Paolo Reyes"), ("paolo reyes", "Paolo Reyes"), ("Ines", "Inês Duarte")],
)
def test_opens_may_give_the_first_name(written: str, opener: str) -> None:
    """ "Opens:" may name a person by a word of their name the other lacks; the parser
    also forgives case and accents, the grammar offers the exact spellings only."""
    text = ALL_EXPERIENCES[-1].replace(
        "(long gaps while one of them sleeps, quicker bursts when both are awake)\n",
        f"(long gaps)\nOpens: {written}\n",
    )
    names = ("Inês Duarte", "Paolo Reyes")
    parsed = parse_experience(text, names, min_events=2, max_events=5)
    assert isinstance(parsed, ParsedExperience) and parsed.opener_name == opener
    grammar = experience_grammar(names, min_events=2, max_events=5)
    exact = written in ("Paolo", "Inês", "Inês Duarte", "Paolo Reyes", "Duarte", "Reyes")
    assert _is_grammar_accept_string(grammar, text) == exact


def test_embedded_bounds_still_refuse_a_rambling_section() -> None:
    """The embedded profile's bounds are loose enough for the seeds and still finite: a
    section several times the longest seed section is refused."""
    tokens = grammar_tokens("embedded-cpu", "persona")
    text = ALL_CARDS[0]
    sample = card_sample(text)
    rambling = text.replace("**Values**\n", "**Values**\n" + "and so on " * 300, 1)
    assert _is_grammar_accept_string(character_grammar(sample), rambling)
    assert not _is_grammar_accept_string(character_grammar(sample, max_tokens=tokens), rambling)
