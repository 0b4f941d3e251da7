"""Parsing, validation and grammar of the `<experience>` text."""

from __future__ import annotations

import pytest
import xgrammar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xgrammar.testing import _is_grammar_accept_string

from soc_async.formats.experience import (
    ParsedExperience,
    experience_grammar,
    parse_experience,
)
from soc_async.formats.refusal import Refusal

NAMES = ("Lucía", "Tomasz")

VALID = """<experience>
Lucía and Tomasz have shared a desk row at the Kraków office of a logistics company
for a year; since Lucía moved back to Valencia in spring they only talk on Slack.

It is Thursday afternoon. Tomasz just found Lucía's old mug in the kitchen cupboard,
labelled in her handwriting, and the office manager wants the shelf cleared by Friday.

Conversation style: semi-structured
Message cadence: delayed (both at work, replies between meetings)
Opens: Tomasz

The conversation will likely cover the following topics:
- The mug: whether to post it, keep it or adopt it (3 turns) ← PRIMARY
- Office gossip: the new coffee machine nobody can operate (4 turns)
- Visiting: Tomasz might be in Valencia for a conference in June (2 turns)

Initial state: The mug; 3; Office gossip

Possible instant events:
- Tomasz gets pulled into a call about a delayed truck
- Lucía's laptop starts a forced update
- A courier rings Lucía's doorbell with a parcel for a neighbour
</experience>"""


def parse(text: str, *, min_events: int = 2, max_events: int = 5) -> ParsedExperience | Refusal:
    return parse_experience(text, NAMES, min_events=min_events, max_events=max_events)


def reason(text: str, **kwargs: int) -> str:
    result = parse(text, **kwargs)
    assert isinstance(result, Refusal), f"expected a rejection, got {result!r}"
    return result.reason


def test_valid_text_parses_into_its_fields() -> None:
    """Every field of a well-formed experience is read back as written."""
    result = parse(VALID)
    assert isinstance(result, ParsedExperience)
    assert result.style == "semi-structured"
    assert result.cadence == "delayed"
    assert result.cadence_note == "both at work, replies between meetings"
    assert result.opener_name == "Tomasz"
    assert [(t.title, t.turns, t.primary) for t in result.topics] == [
        ("The mug", 3, True),
        ("Office gossip", 4, False),
        ("Visiting", 2, False),
    ]
    assert result.topics[0].description == "whether to post it, keep it or adopt it"
    assert result.initial_state == "The mug; 3; Office gossip"
    assert len(result.instant_events) == 3
    assert result.narrative.startswith("Lucía and Tomasz have shared")
    assert result.narrative.endswith("by Friday.")
    assert result.text.startswith("<experience>") and result.text.endswith("</experience>")


def test_stray_text_around_the_element_is_ignored() -> None:
    """Chatter before and after the element does not matter, and is not kept in ``text``."""
    result = parse("Sure! Here it is:\n\n" + VALID + "\n\nHope this helps.")
    assert isinstance(result, ParsedExperience)
    assert result.text == VALID


def test_tolerated_variants() -> None:
    """ASCII arrow, "1 turn", markdown bold labels, CRLF and other name case are accepted."""
    text = (
        VALID.replace("(3 turns) ← PRIMARY", "(1 turn) <- PRIMARY")
        .replace("The mug; 3;", "the MUG; 1 turns remaining;")
        .replace("Opens: Tomasz", "**Opens:** tomasz")
        .replace("Message cadence: delayed (", "Message cadence: Delayed - (")
        .replace("\n", "\r\n")
    )
    result = parse(text)
    assert isinstance(result, ParsedExperience), result
    assert result.topics[0].turns == 1 and result.topics[0].primary
    assert result.opener_name == "Tomasz"
    assert result.cadence == "delayed"


@pytest.mark.parametrize(
    ("written", "style", "cadence"),
    [
        ("structured", "structured", "realtime"),
        ("Semi structured", "semi-structured", "async"),
        ("free-form", "freeform", "async"),
    ],
)
def test_style_and_cadence_words_map_onto_their_sets(
    written: str, style: str, cadence: str
) -> None:
    """Spelling variants map onto the canonical style; the cadence's first word decides it."""
    cadence_line = {"realtime": "real-time, both online", "async": "asynchronous replies"}[cadence]
    text = VALID.replace("semi-structured", written).replace(
        "delayed (both at work, replies between meetings)", cadence_line
    )
    result = parse(text)
    assert isinstance(result, ParsedExperience), result
    assert (result.style, result.cadence) == (style, cadence)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace("<experience>", ""), "no_element"),
        (lambda t: t.replace("</experience>", ""), "unclosed"),
        (lambda t: t.replace("Conversation style: semi-structured\n", ""), "missing_style"),
        (lambda t: t.replace("semi-structured", "chaotic"), "bad_style"),
        (lambda t: t.replace("delayed (both", "slowish (both"), "bad_cadence"),
        (lambda t: t.replace("Message cadence", "Cadence"), "unexpected_line"),
        (lambda t: t.replace("Opens: Tomasz", "Opens: Marek"), "bad_opener"),
        (lambda t: t.replace("(4 turns)", "(0 turns)"), "bad_budget"),
        (lambda t: t.replace("(4 turns)", "(-4 turns)"), "bad_budget"),
        (lambda t: t.replace("(4 turns)", "(four turns)"), "bad_topic_line"),
        (lambda t: t.replace("Office gossip:", "Office; gossip:"), "bad_topic_title"),
        (lambda t: t.replace(" ← PRIMARY", ""), "primary_count"),
        (lambda t: t.replace("(4 turns)", "(4 turns) ← PRIMARY"), "primary_count"),
        (
            lambda t: t.replace("Initial state: The mug; 3; Office gossip\n", ""),
            "missing_initial_state",
        ),
        (
            lambda t: t.replace("Initial state: The mug;", "Initial state: Visiting;"),
            "initial_state_topic",
        ),
        (lambda t: t.replace("The mug; 3;", "The mug; 4;"), "initial_state_turns"),
        (lambda t: t.replace("; Office gossip\n", "; Visiting\n"), "initial_state_next"),
        (
            lambda t: t.replace("The mug; 3; Office gossip", "The mug 3 Office gossip"),
            "bad_initial_state",
        ),
        (
            lambda t: t.replace(
                "Possible instant events:", "Possible instant events:\n- x\n- y\n- z"
            ),
            "event_count",
        ),
        (lambda t: t.split("Possible instant events:")[0] + "</experience>", "missing_events"),
        (lambda t: t.replace("Opens: Tomasz", "Opens: Tomasz\nOpens: Lucía"), "duplicate_section"),
        (
            lambda t: t.replace("Lucía and Tomasz have", "Conversation style: x\nLucía and Tomasz"),
            "unexpected_line",
        ),
        (
            lambda t: "<experience>\nConversation style: freeform" + t.split("semi-structured")[1],
            "no_narrative",
        ),
        (lambda t: t.replace("- Tomasz gets", "Tomasz gets"), "unexpected_line"),
    ],
)
def test_invalid_texts_are_rejected_with_their_reason(change, expected: str) -> None:
    """Each broken rule yields its own stable reason code and a one-line detail."""
    result = parse(change(VALID))
    assert isinstance(result, Refusal)
    assert result.reason == expected, result
    assert result.detail and "\n" not in result.detail


def test_event_bounds_come_from_the_caller() -> None:
    """The instant-event count is checked against the bounds given, not fixed ones."""
    assert isinstance(parse(VALID, min_events=3, max_events=3), ParsedExperience)
    assert reason(VALID, min_events=4, max_events=5) == "event_count"
    assert reason(VALID, min_events=1, max_events=2) == "event_count"


def test_structured_needs_a_roadmap_but_freeform_may_skip_it() -> None:
    """Freeform may omit topics and initial state; (semi-)structured may not."""
    without_roadmap = (
        VALID.split("The conversation will likely")[0]
        + VALID.split("Initial state: The mug; 3; Office gossip\n")[1]
    )
    assert reason(without_roadmap) == "no_topics"
    freeform = without_roadmap.replace("semi-structured", "freeform")
    result = parse(freeform)
    assert isinstance(result, ParsedExperience), result
    assert result.topics == [] and result.initial_state == ""
    stray_state = freeform.replace(
        "Possible instant events:", "Initial state: chat; 3; end\n\nPossible instant events:"
    )
    assert reason(stray_state) == "initial_state_without_topics"


def test_freeform_with_a_roadmap_may_leave_out_the_primary_mark() -> None:
    """A freeform roadmap is checked like the others, except that PRIMARY is optional."""
    text = VALID.replace("semi-structured", "freeform").replace(" ← PRIMARY", "")
    result = parse(text)
    assert isinstance(result, ParsedExperience), result
    assert not any(t.primary for t in result.topics)


def test_single_topic_initial_state_ends_with_end() -> None:
    """With one topic the state's third field is "end" (or missing); a title there is wrong."""
    one = VALID.replace(
        "- Office gossip: the new coffee machine nobody can operate (4 turns)\n", ""
    )
    one = one.replace(
        "- Visiting: Tomasz might be in Valencia for a conference in June (2 turns)\n", ""
    )
    assert isinstance(parse(one.replace("; Office gossip", "; end")), ParsedExperience)
    assert isinstance(parse(one.replace("; Office gossip", "")), ParsedExperience)
    assert reason(one) == "initial_state_next"


def test_names_with_markup_characters_do_not_break_the_parser() -> None:
    """Names are compared as text, never compiled into a pattern."""
    names = ("Zoë (Jo)", "A.*+?")
    text = VALID.replace("Opens: Tomasz", "Opens: A.*+?")
    result = parse_experience(text, names, min_events=2, max_events=5)
    assert isinstance(result, ParsedExperience) and result.opener_name == "A.*+?"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=3000))
def test_parser_never_raises_on_arbitrary_text(text: str) -> None:
    """Any string yields a ParsedExperience or a Refusal, never an exception."""
    result = parse(text)
    assert isinstance(result, ParsedExperience | Refusal)
    assert getattr(result, "reason", None) != "parser_error"


_PIECES = st.sampled_from(
    [
        "<experience>", "</experience>", "\n", "Conversation style: ", "structured",
        "freeform", "Message cadence: async", "Opens: Tomasz", "Opens: Lucía",
        "The conversation will likely cover the following topics:", "- a: b (3 turns)",
        " ← PRIMARY", "<- PRIMARY", "Initial state: a; 3; end", "Possible instant events:",
        "- something", "(", ")", ";", ":", "99999999999999999999", "- : (0 turns)", "**",
        "\r\n", "\x00", "&amp;", "<3", "\u2028", "9" * 5000,
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=60))
def test_parser_never_raises_on_format_like_fragments(pieces: list[str]) -> None:
    """Shuffled pieces of the format (the likeliest hostile inputs) never make it raise."""
    result = parse("".join(pieces))
    assert isinstance(result, ParsedExperience | Refusal)
    assert getattr(result, "reason", None) != "parser_error", result
    if isinstance(result, ParsedExperience):
        assert result.opener_name in NAMES
        assert all(t.turns >= 1 for t in result.topics)
        assert 2 <= len(result.instant_events) <= 5


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 40), st.text(max_size=20))
def test_parser_never_raises_on_mutated_valid_text(at: int, cut: int, insert: str) -> None:
    """A valid text with a slice replaced by arbitrary text still never makes it raise."""
    result = parse(VALID[:at] + insert + VALID[at + cut :])
    assert isinstance(result, ParsedExperience | Refusal)
    assert getattr(result, "reason", None) != "parser_error", result


# ----------------------------------------------------------------------------- grammar


def grammar(**kwargs: object) -> str:
    return experience_grammar(NAMES, min_events=2, max_events=5, **kwargs)  # type: ignore[arg-type]


def test_grammar_compiles_with_xgrammar() -> None:
    """The EBNF is accepted by xgrammar, for each forced style and for none."""
    for style in (None, "freeform", "semi-structured", "structured"):
        xgrammar.Grammar.from_ebnf(grammar(style=style))


def test_grammar_accepts_a_valid_text_that_then_parses() -> None:
    """A text in the format passes the grammar, and the parser accepts it too."""
    assert _is_grammar_accept_string(grammar(), VALID)
    assert isinstance(parse(VALID), ParsedExperience)


@pytest.mark.parametrize(
    "bad",
    [
        VALID.replace("Possible instant events:", "Possible instant events:\n- a\n- b\n- c"),
        VALID.replace("semi-structured", "chaotic"),
        VALID.replace("delayed (", "slowish ("),
        VALID.replace("Opens: Tomasz", "Opens: Marek"),
        VALID.replace("(4 turns)", "(0 turns)"),
        VALID.replace("(4 turns)", "(21 turns)"),
        VALID.replace(" ← PRIMARY", ""),
        VALID.replace("(4 turns)", "(4 turns) ← PRIMARY"),
        VALID.replace("The mug; 3; Office gossip", "The mug; three; Office gossip"),
        VALID + " trailing",
    ],
)
def test_grammar_rejects_texts_out_of_shape(bad: str) -> None:
    """Six events, an unknown style or cadence, a stranger opening, a budget of 0 or over
    the maximum, no or two PRIMARY marks, a worded budget, text after the element: refused."""
    assert not _is_grammar_accept_string(grammar(), bad)


def test_forced_style_admits_only_that_style() -> None:
    """With a style hint the grammar refuses the other styles."""
    assert _is_grammar_accept_string(grammar(style="semi-structured"), VALID)
    assert not _is_grammar_accept_string(grammar(style="structured"), VALID)
    assert not _is_grammar_accept_string(grammar(style="freeform"), VALID)


def test_grammar_lets_freeform_skip_the_roadmap_only() -> None:
    """Without topics the grammar accepts freeform and refuses semi-structured."""
    no_roadmap = (
        VALID.split("The conversation will likely")[0]
        + VALID.split("Initial state: The mug; 3; Office gossip\n\n")[1]
    )
    assert _is_grammar_accept_string(grammar(), no_roadmap.replace("semi-structured", "freeform"))
    assert not _is_grammar_accept_string(grammar(), no_roadmap)


def test_grammar_accepted_text_with_a_mismatched_state_is_caught_by_the_validator() -> None:
    """The grammar cannot cross-reference the first topic; the parser does."""
    text = VALID.replace("The mug; 3;", "Visiting; 3;")
    assert _is_grammar_accept_string(grammar(), text)
    assert reason(text) == "initial_state_topic"


def test_absurd_budgets_are_rejected_not_crashed_on() -> None:
    """A budget of thousands of digits is a bad budget, not an int-conversion error."""
    assert reason(VALID.replace("(4 turns)", f"({'9' * 5000} turns)")) == "bad_budget"
    assert reason(VALID.replace("The mug; 3;", f"The mug; {'3' * 5000};")) == "initial_state_turns"


def test_bounded_grammar_refuses_a_rambling_narrative() -> None:
    """With max_tokens the narrative is bounded: a paragraph far longer than the budget
    allows is refused, so a small model closes the element before the token limit."""
    from soc_async.formats.experience import experience_grammar as eg

    names = ("Ana", "Bo")
    bounded = eg(names, min_events=2, max_events=5, max_tokens=700)
    short = (
        "<experience>\nAna and Bo met at a chess club.\n\nConversation style: freeform\n"
        "Message cadence: realtime\nOpens: Ana\n\nPossible instant events:\n- a\n- b\n"
        "</experience>"
    )
    rambling = short.replace("chess club.", "chess club. " + "and then " * 200)
    assert _is_grammar_accept_string(bounded, short)
    assert not _is_grammar_accept_string(bounded, rambling)
    assert _is_grammar_accept_string(eg(names, min_events=2, max_events=5), rambling)


def test_derived_initial_state_replaces_a_disagreeing_line() -> None:
    """With derive_initial_state a state line that names the wrong topic is rewritten from
    the roadmap, in the field and in the text; without it, it is still a rejection."""
    text = (
        "<experience>\nAna and Bo met at a chess club.\n\nConversation style: structured\n"
        "Message cadence: realtime\nOpens: Ana\n\n"
        "The conversation will likely cover the following topics:\n"
        "- Plans: the weekend (3 turns) ← PRIMARY\n- Money: who pays (2 turns)\n\n"
        "Initial state: Something else; 9; end\n\n"
        "Possible instant events:\n- a call\n- a knock\n</experience>"
    )
    names = ("Ana", "Bo")
    strict = parse_experience(text, names, min_events=2, max_events=5)
    assert isinstance(strict, Refusal) and strict.reason == "initial_state_topic"
    derived = parse_experience(text, names, min_events=2, max_events=5, derive_initial_state=True)
    assert isinstance(derived, ParsedExperience)
    assert derived.initial_state == "Plans; 3; Money" and derived.initial_state_derived
    assert "Initial state: Plans; 3; Money" in derived.text
    assert "Something else" not in derived.text
