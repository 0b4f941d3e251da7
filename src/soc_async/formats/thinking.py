"""Reasoning text a model may write before its answer: ``<think>...</think>`` blocks.

Models such as Qwen3 think by default. The run turns thinking off through the chat
template (``calls.*.chat_template_kwargs``, ``enable_thinking = false``), but a template
that ignores the switch, or a model that thinks anyway, still sends it. Every parser
downstream expects the answer alone, so the engine strips what arrives here before any
parsing and counts it.

Three shapes are removed:

- a whole ``<think>...</think>`` block, wherever it stands (the usual case: first);
- an unclosed ``<think>`` (the reply was cut by max_tokens while thinking): the rest of the
  text is thinking, and what is left is empty, so the reply is retried as unusable;
- a ``</think>`` with no opening tag before it: templates that open the block inside the
  prompt make the model's reply start mid-thought, so everything up to it goes.
"""

from __future__ import annotations

__all__ = ["strip_thinking"]

_OPEN = "<think>"
_CLOSE = "</think>"


def strip_thinking(text: str) -> tuple[str, int]:
    """``text`` without its thinking, and how many thinking parts were removed (0: none)."""
    if "think>" not in text:  # the fast path: almost every reply of a run
        return text, 0
    removed = 0
    while True:
        opened = text.find(_OPEN)
        closed = text.find(_CLOSE)
        if closed >= 0 and (opened < 0 or closed < opened):
            # Opened in the prompt: everything up to the closing tag is thinking.
            text = text[closed + len(_CLOSE) :].lstrip()
        elif opened >= 0 and closed > opened:
            text = text[:opened] + text[closed + len(_CLOSE) :].lstrip()
        elif opened >= 0:  # opened and never closed: cut off while thinking
            text = text[:opened].rstrip()
        else:
            return text, removed
        removed += 1
