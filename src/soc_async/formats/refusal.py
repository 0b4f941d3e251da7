"""Refusal: the one answer to "this reply is not acceptable, and why".

Every parser and validator of model output (cards, experiences, turns, the chat state
machine's rules) returns a :class:`Refusal` instead of raising: a model's mistake is an
expected outcome that the retry loop turns into a correction, not an exception.
"""

from __future__ import annotations

import msgspec


class Refusal(msgspec.Struct, frozen=True):
    """Why a reply was refused: a stable code that failure records count, and one line
    a correction prompt can quote to the model."""

    reason: str  # short and stable: "missing_section:Values", "state_mismatch", "truncated"
    detail: str  # one line a model can act on

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# A reply cut by max_tokens is unclosed whatever its kind; one code for all of them.
TRUNCATED = Refusal("truncated", "the reply was cut by max_tokens; write a shorter one")

__all__ = ["TRUNCATED", "Refusal"]
