"""Figure 7, duplicates: the near-duplicate rate among persona cards, experiences and
conversation openings (the first turn's text), by MinHash (:mod:`soc_async.neardup`, the
engine the run and ``merge`` use, here with the report's lexical tokenizer)."""

from __future__ import annotations

import re

from soc_async.neardup import NearDuplicates
from soc_async.records import Conversation, Experience, Persona
from soc_async.report.lexical import tokens
from soc_async.report.model import DuplicateKind, Duplicates

__all__ = ["DuplicatesFigure", "card_body", "kind_result"]

THRESHOLD = 0.8
NUM_PERM = 64
SHINGLE_WORDS = 3

_HEADER = re.compile(r"\*\*[^*\n]+\*\*")
_ELEMENT = re.compile(r"</?character>")


def card_body(text: str) -> str:
    """A card without its markup and section headers, which every card shares: what is
    left is what the model wrote about this person."""
    return _ELEMENT.sub(" ", _HEADER.sub(" ", text))


class DuplicatesFigure:
    def __init__(self) -> None:
        def index() -> NearDuplicates:
            return NearDuplicates(
                threshold=THRESHOLD,
                num_perm=NUM_PERM,
                shingle_words=SHINGLE_WORDS,
                tokenizer=tokens,
            )

        self._personas = index()
        self._experiences = index()
        self._openings = index()

    def persona(self, p: Persona) -> None:
        self._personas.add(p.id, card_body(p.persona_text))

    def experience(self, e: Experience) -> None:
        self._experiences.add(e.id, e.experience_text)

    def conversation(self, c: Conversation) -> None:
        if c.turns:
            first = c.turns[0]
            text = " ".join(m.text for m in first.messages if m.type == "text")
            self._openings.add(c.chat_id, text)

    def result(self) -> Duplicates:
        return Duplicates(
            threshold=THRESHOLD,
            num_perm=NUM_PERM,
            shingle_words=SHINGLE_WORDS,
            personas=kind_result(self._personas),
            experiences=kind_result(self._experiences),
            openings=kind_result(self._openings),
        )


def kind_result(index: NearDuplicates, examples: int = 5) -> DuplicateKind:
    """The figure of one kind: items, near-duplicates, their rate and a few example pairs."""
    pairs = index.duplicates()
    items = len(index.ids)
    return DuplicateKind(
        items=items,
        near_duplicates=len(pairs),
        rate=len(pairs) / items if items else None,
        examples=[[index.ids[i], index.ids[j]] for i, j in pairs[:examples]],
    )
