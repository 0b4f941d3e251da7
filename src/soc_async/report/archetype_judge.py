"""What a card actually wrote, read by the served model: the ``archetype`` call kind.

The pure half: which cards (the same seeded bottom-k sample by hash as the
conversation judge, over persona ids), the prompt (``prompts/archetype_*.j2``), the JSON
schema the reply is held to (each field one of the table's labels, so vLLM's structured
outputs can only emit a label), and the strict reading of a reply: anything but an
object with exactly a known temperament and a known coping style is refused with a
correction. The model calls and archetypes.jsonl live in :mod:`.archetype_judging`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from soc_async.archetypes import inner_text
from soc_async.calls.prompts import render
from soc_async.config import Archetype, ArchetypeConfig
from soc_async.formats.refusal import TRUNCATED, Refusal
from soc_async.llm.types import Completion

__all__ = [
    "ArchetypeJudged",
    "ArchetypeReading",
    "CardReading",
    "read_reply",
    "reading_schema",
    "system_prompt",
    "user_prompt",
]


class CardReading(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A reply as the schema allows it: one label of each table."""

    temperament: str
    coping: str


class ArchetypeReading(msgspec.Struct, kw_only=True, tag="archetype_reading", tag_field="kind"):
    """One line of archetypes.jsonl: a card read, and by what."""

    persona_id: str
    temperament: str
    coping: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ArchetypeJudged(msgspec.Struct, kw_only=True):
    """The readings of one report's sample, by persona id, for the figure to count."""

    sample: int  # cards asked for
    seed: int
    model: str = ""
    read: int = 0
    refused: dict[str, str] = {}  # persona id -> why its reading was refused (this session)
    temperament: dict[str, str] = {}  # persona id -> label
    coping: dict[str, str] = {}


def reading_schema(config: ArchetypeConfig) -> dict[str, Any]:
    """The JSON schema of a reply: each field an enum of its table's labels."""
    return {
        "type": "object",
        "properties": {
            "temperament": {"type": "string", "enum": list(config.temperaments)},
            "coping": {"type": "string", "enum": list(config.coping)},
        },
        "required": ["temperament", "coping"],
        "additionalProperties": False,
    }


def _rows(table: Mapping[str, Archetype]) -> list[tuple[str, str]]:
    return [(label, row.prompt or label) for label, row in table.items()]


def system_prompt(config: ArchetypeConfig) -> str:
    """The static system message: the task and both tables (the same for every card)."""
    return render(
        "archetype_system.j2",
        temperaments=_rows(config.temperaments),
        coping=_rows(config.coping),
    )


def user_prompt(card: str, correction: str = "") -> str:
    """One card's message: its Core Traits and Emotional Profile, as the card wrote them."""
    return render("archetype_user.j2", card=inner_text(card).strip(), correction=correction)


_decode = msgspec.json.Decoder(CardReading).decode


def read_reply(completion: Completion, config: ArchetypeConfig) -> CardReading | Refusal:
    """The reading in a reply, or why it is refused (a one-line correction)."""
    if completion.finish_reason == "length":
        return TRUNCATED
    try:
        reading = _decode(completion.text.strip().encode())
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Refusal(
            "malformed_reading",
            "answer with one JSON object with exactly the keys temperament and coping "
            f"({str(exc).replace('$.', '') or 'not JSON'})",
        )
    if reading.temperament not in config.temperaments:
        return Refusal(
            "unknown_temperament",
            f"temperament must be one of {', '.join(config.temperaments)}; "
            f"got {reading.temperament!r}",
        )
    if reading.coping not in config.coping:
        return Refusal(
            "unknown_coping",
            f"coping must be one of {', '.join(config.coping)}; got {reading.coping!r}",
        )
    return reading
