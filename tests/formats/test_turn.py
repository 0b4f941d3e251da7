"""Reading a ``<turn>`` reply: what a well-shaped reply yields, and each shape it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soc_async.formats.refusal import Refusal
from soc_async.formats.turn import ParsedTurn, RawMessage, Reason, parse_turn

LINE = "Lost library card; 2 turns remaining; Saturday market"
GOOD = """<turn>
<state>
Lost library card; 2 turns remaining; Saturday market
</state>
<message t="09:14" d="04.06" type="text">did you see my card anywhere, the blue one</message>
<message t="09:15" d="04.06" type="image">[photo of the sofa cushions pulled apart]</message>
</turn>"""


def reason_of(text: str) -> Reason:
    result = parse_turn(text)
    assert isinstance(result, Refusal), result
    assert result.detail and "\n" not in result.detail
    return result.reason


def test_reads_a_well_formed_turn() -> None:
    """A clean reply gives its state line, no ending, and its messages in order."""
    assert parse_turn(GOOD) == ParsedTurn(
        state_line=LINE,
        ended=False,
        messages=[
            RawMessage("09:14", "04.06", "text", "did you see my card anywhere, the blue one"),
            RawMessage("09:15", "04.06", "image", "[photo of the sofa cushions pulled apart]"),
        ],
    )


def test_ignores_text_around_the_turn() -> None:
    """Chatter before and a code fence after the element do not matter."""
    wrapped = f"Here is the next turn:\n```xml\n{GOOD}\n```\nHope that works!"
    assert parse_turn(wrapped) == parse_turn(GOOD)


def test_ending_tag_inside_state() -> None:
    """<predefined_topics_exhausted/> on its own line after the state line marks the end."""
    text = GOOD.replace("market\n</state>", "market\n<predefined_topics_exhausted/>\n</state>")
    parsed = parse_turn(text)
    assert isinstance(parsed, ParsedTurn)
    assert parsed.ended
    assert parsed.state_line == LINE


def test_ending_tag_directly_in_turn_also_counts() -> None:
    """A model that puts the ending tag after its messages still said it ends."""
    text = GOOD.replace("</turn>", "<predefined_topics_exhausted/>\n</turn>")
    parsed = parse_turn(text)
    assert isinstance(parsed, ParsedTurn) and parsed.ended


def test_message_text_is_taken_literally() -> None:
    """ "<3", "R&D" and even "&lt;" reach the text as written; nothing is decoded."""
    text = GOOD.replace("the blue one", "R&D badge, the blue one <3 &lt;")
    parsed = parse_turn(text)
    assert isinstance(parsed, ParsedTurn)
    assert (
        parsed.messages[0].text == "did you see my card anywhere, R&D badge, the blue one <3 &lt;"
    )


def test_unknown_markup_in_text_reaches_the_text() -> None:
    """A stray <b> is text here; the state machine refuses it as a leftover tag."""
    parsed = parse_turn(GOOD.replace("the blue one", "the <b>blue</b> one"))
    assert isinstance(parsed, ParsedTurn)
    assert "<b>blue</b>" in parsed.messages[0].text


def test_tag_names_and_types_are_read_case_insensitively() -> None:
    """<Message type="Text"> is read as <message type="text">."""
    text = GOOD.replace("<message", "<Message").replace("</message>", "</MESSAGE>")
    parsed = parse_turn(text.replace('type="text"', 'type="Text"'))
    assert isinstance(parsed, ParsedTurn)
    assert parsed.messages[0].type == "text"


def test_ending_tag_written_as_open_and_close() -> None:
    """<predefined_topics_exhausted></predefined_topics_exhausted> is the same ending."""
    tag = "<predefined_topics_exhausted></predefined_topics_exhausted>"
    parsed = parse_turn(GOOD.replace("market\n</state>", f"market\n{tag}\n</state>"))
    assert isinstance(parsed, ParsedTurn) and parsed.ended and parsed.state_line == LINE


def test_lone_surrogate_does_not_raise() -> None:
    """A lone surrogate (JSON can decode to one) is replaced, not a crash."""
    parsed = parse_turn(GOOD.replace("the blue one", "the blue one \ud83d"))
    assert isinstance(parsed, ParsedTurn)
    assert parsed.messages[0].text.endswith("the blue one ?")


def test_text_is_stripped() -> None:
    """Whitespace around a message's text is not part of it."""
    parsed = parse_turn(GOOD.replace(">did you", ">\n   did you"))
    assert isinstance(parsed, ParsedTurn)
    assert parsed.messages[0].text.startswith("did you")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sure! hi, how are you", Reason.NO_TURN),
        ("", Reason.NO_TURN),
        (GOOD + "\n" + GOOD, Reason.SEVERAL_TURNS),
        (GOOD.replace("</turn>", ""), Reason.UNCLOSED),
        (GOOD.replace("</message>\n</turn>", "\n</turn>"), Reason.UNCLOSED),
        (GOOD.replace("</state>", ""), Reason.UNCLOSED),
        (GOOD.replace(f"<state>\n{LINE}\n</state>\n", ""), Reason.MISSING_STATE),
        (GOOD.replace(LINE, "  "), Reason.MISSING_STATE),
        (GOOD.replace("Saturday market\n", "Saturday market\nthen lunch\n"), Reason.BAD_STATE_LINE),
        (GOOD.replace("2 turns remaining; ", ""), Reason.BAD_STATE_LINE),
        (GOOD.replace("2 turns", "two turns"), Reason.BAD_STATE_LINE),
        (GOOD.replace("</state>", f"</state>\n<state>{LINE}</state>"), Reason.BAD_STATE_LINE),
        (GOOD.split("<message")[0] + "</turn>", Reason.NO_MESSAGES),
        (GOOD.replace('type="image"', 'type="gif"'), Reason.UNKNOWN_TYPE),
        (GOOD.replace(' type="image"', ""), Reason.UNKNOWN_TYPE),
        (GOOD.replace('t="09:14"', 't="24:10"'), Reason.BAD_TIMESTAMP),
        (GOOD.replace('t="09:14"', 't="9:14"'), Reason.BAD_TIMESTAMP),
        (GOOD.replace('d="04.06"', 'd="31.06"', 1), Reason.BAD_TIMESTAMP),
        (GOOD.replace(' d="04.06"', "", 1), Reason.BAD_TIMESTAMP),
        (GOOD.replace("the blue one", "the blue one <state>x</state>"), Reason.LEFTOVER_TAG),
        (GOOD.replace("market\n</state>", "<message>hi</message></state>"), Reason.LEFTOVER_TAG),
    ],
    ids=[
        "chatter only", "empty", "two turns", "no turn close", "no message close",
        "no state close", "no state", "blank state", "two state lines", "no count",
        "count in words", "two states", "no messages", "gif", "no type", "hour 24",
        "unpadded hour", "31 June", "no day", "state in message", "message in state",
    ],
)  # fmt: skip
def test_refuses_each_bad_shape(text: str, reason: Reason) -> None:
    """Each malformed reply is refused with the reason that names its flaw, in one line."""
    assert reason_of(text) == reason


@given(st.text(st.characters(exclude_categories=()), max_size=400))
def test_never_raises_on_any_text(text: str) -> None:
    """parse_turn returns a result for any string, however broken, lone surrogates included."""
    assert isinstance(parse_turn(text), ParsedTurn | Refusal)


@given(st.data())
def test_never_raises_on_damaged_turns(data: st.DataObject) -> None:
    """Cutting, splicing and inserting characters in a good turn never makes parse_turn raise."""
    text = GOOD
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 20))
        insert = data.draw(st.sampled_from(["", "<", ">", "&", '"', "</", "<turn>", "\x00", "é"]))
        text = text[:at] + insert + text[at + cut :]
    assert isinstance(parse_turn(text), ParsedTurn | Refusal)


def test_reason_codes_are_stable() -> None:
    """The stored reason strings never change: failure records and status count by them."""
    assert {r.value for r in Reason} == {
        "no_turn", "several_turns", "unclosed", "missing_state", "bad_state_line",
        "no_messages", "too_few_messages", "too_many_messages", "unknown_type",
        "bad_timestamp", "empty_text", "leftover_tag", "speaker_prefix", "state_mismatch",
        "early_ending", "clock_backwards", "gap_too_short", "gap_too_long", "too_short",
        "wrong_date_start", "truncated",
    }  # fmt: skip
    assert str(Refusal(Reason.UNCLOSED, "x")) == "unclosed: x"
    assert f"{Reason.UNCLOSED}" == "unclosed"
