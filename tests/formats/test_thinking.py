"""Thinking text is stripped before parsing, and each part removed is counted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from soc_async.formats.thinking import strip_thinking


def test_a_reply_without_thinking_is_returned_as_it_is() -> None:
    """No tag: the text comes back unchanged and nothing is counted."""
    text = '<turn><state>a; 2 turns remaining; b</state><msg t="10:00">hi</msg></turn>'
    assert strip_thinking(text) == (text, 0)


def test_a_leading_block_is_removed_with_the_space_after_it() -> None:
    """The usual shape, a block before the answer: the answer alone is left."""
    text = "<think>\nThe user wants a card.\nLet me plan it.\n</think>\n\n<character>x</character>"
    assert strip_thinking(text) == ("<character>x</character>", 1)


def test_every_block_is_removed_and_counted() -> None:
    """Several blocks, one in the middle: all go, each counted."""
    text = "<think>a</think>one <think>b\nc</think>two"
    assert strip_thinking(text) == ("one two", 2)


def test_an_empty_block_counts() -> None:
    """A template that closes thinking at once still sends an empty block: it is removed."""
    assert strip_thinking("<think>\n\n</think>\n\nSummary.") == ("Summary.", 1)


def test_an_unclosed_block_takes_the_rest_of_the_reply() -> None:
    """Cut off by max_tokens while thinking: nothing usable is left."""
    assert strip_thinking("<think>I should first consider") == ("", 1)
    assert strip_thinking("Answer. <think>more") == ("Answer.", 1)


def test_a_close_tag_without_an_opening_ends_the_thinking() -> None:
    """A template that opens the block in the prompt: the reply starts inside it, and
    everything up to the closing tag is thinking."""
    assert strip_thinking("planning the turn...</think>\n<turn>x</turn>") == ("<turn>x</turn>", 1)


@given(st.text(alphabet=st.characters(blacklist_characters="<>")))
def test_text_without_tags_is_never_changed(text: str) -> None:
    """Whatever the text, with no angle brackets it passes through untouched."""
    assert strip_thinking(text) == (text, 0)


@given(st.text(alphabet=st.characters(blacklist_characters="<>")), st.text())
def test_no_thinking_tag_is_ever_left(answer: str, thought: str) -> None:
    """After stripping, neither tag remains, whatever the thought held."""
    out, n = strip_thinking(f"<think>{thought}</think>{answer}")
    assert "<think>" not in out and "</think>" not in out
    assert n >= 1


def test_a_stray_close_tag_inside_a_thought_is_removed_too() -> None:
    """A thought that itself holds a closing tag leaves no tag behind."""
    assert strip_thinking("<think></think></think>answer") == ("answer", 2)
