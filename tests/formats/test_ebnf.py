"""EBNF literals: every string spelled so that xgrammar reads back exactly that string."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from soc_async.formats.ebnf import alternatives, literal


def reference_literal(text: str) -> str:
    """The escaping rules written out one character at a time."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@given(st.text(st.characters(exclude_categories=())))
def test_literal_escapes_as_the_rules_say(text: str) -> None:
    """Backslash, quote, the named controls and the other controls as \\xNN; the rest as is."""
    assert literal(text) == reference_literal(text)


def test_examples() -> None:
    """A few spellings written out."""
    assert literal('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert literal("a\\b\t\x01") == '"a\\\\b\\t\\x01"'
    assert alternatives(["text", "image"]) == '("text" | "image")'
