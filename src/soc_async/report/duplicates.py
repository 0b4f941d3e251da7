"""Figure 7, duplicates: the near-duplicate rate among persona cards, experiences and
conversation openings (the first turn's text), by MinHash (:mod:`.neardup`)."""

from __future__ import annotations

import re

from soc_async.records import Conversation, Experience, Persona
from soc_async.report.model import Duplicates
from soc_async.report.neardup import NearDuplicates

__all__ = ["DuplicatesFigure", "card_body"]

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
                threshold=THRESHOLD, num_perm=NUM_PERM, shingle_words=SHINGLE_WORDS
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
            personas=self._personas.result(),
            experiences=self._experiences.result(),
            openings=self._openings.result(),
        )
