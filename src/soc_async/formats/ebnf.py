"""Small helpers for writing xgrammar EBNF grammars (vLLM's ``structured_outputs.grammar``)."""

from __future__ import annotations


def literal(text: str) -> str:
    """``text`` as an EBNF string literal: quotes, backslashes and control characters escaped."""
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


def alternatives(options: list[str] | tuple[str, ...]) -> str:
    """A group matching exactly one of ``options`` as literals."""
    return "(" + " | ".join(literal(o) for o in options) + ")"
