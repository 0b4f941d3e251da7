"""Small helpers for writing xgrammar EBNF grammars (vLLM's ``structured_outputs.grammar``)."""

from __future__ import annotations

# What a literal escapes: backslash, quote, the three usual control characters by name,
# the others as \xNN. One table, applied by str.translate (a chat turn builds several
# literals per request).
_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in range(0x20)}
_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r"})
_ESCAPES[ord("\t")] = "\\t"


def literal(text: str) -> str:
    """``text`` as an EBNF string literal: quotes, backslashes and control characters escaped."""
    return '"' + text.translate(_ESCAPES) + '"'


def alternatives(options: list[str] | tuple[str, ...]) -> str:
    """A group matching exactly one of ``options`` as literals."""
    return "(" + " | ".join(literal(o) for o in options) + ")"
