"""The persona stage: one `<character>` card per index, written by the model and checked.

:meth:`PersonaStage.write` samples who the persona is (a pure function of the run seed
and the index), draws do-not-imitate references from the shared ring, asks the model
(with a grammar when the config enables it), and validates the reply. The sample carries
a drawn temperament and way of coping with stress, which the prompt asks for; when the
archetype monitor finds one coping style dominating the recent cards, the prompt of a
persona drawn with another style names it as one to stay away from. An invalid reply is
retried with a one-line correction; an accepted card is pushed into the ring and becomes
a ``Persona`` record. It knows nothing of HTTP: a ``Completer`` does the asking.
"""

from __future__ import annotations

import random

from soc_async.archetypes import ArchetypeMonitor, KeywordTable, inner_text, written_label
from soc_async.calls import ask_until_valid, build_request
from soc_async.calls.prompts import render
from soc_async.config import RunConfig, RunFacts
from soc_async.fewshot import FewShotRing
from soc_async.formats.character import (
    CharacterCard,
    character_grammar,
    parse_character,
)
from soc_async.formats.refusal import TRUNCATED, Refusal
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.neardup import NearDuplicateIndex, is_near_duplicate
from soc_async.records import Failure, Persona, PersonaMeta, PersonaSample
from soc_async.stats import StatsEngine

# Words per token of English prose, roughly: the system prompt asks for a card of at
# most half the call's max_tokens, so that a reply is never cut off mid-card.
_WORDS_PER_TOKEN = 0.6


class PersonaStage:
    """Writes one persona per call; shares its ring and stats engine across calls."""

    def __init__(
        self,
        config: RunConfig,
        completer: Completer,
        sampler: StatsEngine,
        ring: FewShotRing[str],
        facts: RunFacts,
        *,
        priority: int = 0,  # lower is served first; the pipeline decides against chat turns
        dedup: NearDuplicateIndex | None = None,  # every card accepted so far in the run
        archetypes: ArchetypeMonitor | None = None,  # written coping styles of recent cards
    ) -> None:
        self.config = config
        self.completer = completer
        self.sampler = sampler
        self.ring = ring
        self.facts = facts
        self.priority = priority
        self.dedup = dedup
        self.archetypes = archetypes
        self._coping_keywords = KeywordTable(config.archetypes.coping)
        self._call = config.call("persona")
        max_words = max(150, round(self._call.max_tokens * _WORDS_PER_TOKEN / 2, -1))
        # Rendered once: byte-identical for every call, so vLLM's prefix cache shares it.
        self._system = render("persona_system.j2", max_words=int(max_words))

    def sample(self, index: int) -> tuple[PersonaSample, random.Random]:
        """Who persona ``index`` is, and the generator the rest of its call draws from."""
        rng = random.Random(f"{self.config.seed}:persona:{index}")
        return self.sampler.sample(rng, index), rng

    async def write(self, index: int, item_id: str) -> Persona | Failure:
        """The persona ``item_id`` (the ``index``-th of the run), or why there is none.

        Invalid replies (unparseable, truncated, a near-copy of a reference) are retried
        up to the call's ``retries``; a ``RequestError`` becomes a failure at once; a
        ``ServerError`` propagates, since a dead server is the run's problem, not the item's.
        """
        cfg = self.config.persona
        sample, rng = self.sample(index)
        seeds_only = index < cfg.seed_only_iterations
        references = self.ring.draw(cfg.few_shot, rng, seeds_only=seeds_only)
        bounded = self._call.grammar_bounds == "max_tokens"
        grammar = (
            character_grammar(sample, max_tokens=self._call.max_tokens if bounded else None)
            if self._call.grammar
            else None
        )
        base_seed = rng.getrandbits(31)
        hint = (
            self.archetypes.hint(sample.coping)
            if self.archetypes is not None and sample.coping
            else None
        )

        outcome = await ask_until_valid(
            self.completer,
            "persona",
            lambda attempt, correction: self._request(
                item_id, sample, references, correction, grammar, base_seed + attempt, hint
            ),
            lambda completion: self._check(completion, sample, references),
            CharacterCard,
            retries=self._call.retries,
            priority=self.priority,
        )
        card = outcome.value
        if card is None:
            return outcome.failure(item_id, "personas")
        if self.dedup is not None:  # no await since _check looked it up: still unique
            self.dedup.add(item_id, self.dedup.signature(card.text, [sample.name]))
        await self.ring.push(card.text)
        if self.archetypes is not None and sample.coping:
            self.archetypes.observe(self.written_coping(card.text, sample.coping))
        return Persona(
            id=item_id,
            persona_text=card.text,
            meta=PersonaMeta(
                iteration=index,
                model=outcome.model,
                region=sample.region,
                subregion=sample.subregion,
                name=sample.name,
                gender=sample.gender,
                age=sample.age,
                time_taken=outcome.time_taken,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                occupation=sample.occupation,
                band=sample.band,
                temperament=sample.temperament,
                coping=sample.coping,
                archetype_hint=hint or "",
            ),
        )

    def written_coping(self, card: str, drawn: str) -> str | None:
        """The coping style ``card`` shows by the table's keywords (no model call)."""
        return written_label(inner_text(card), self._coping_keywords, drawn)

    def _request(
        self,
        item_id: str,
        sample: PersonaSample,
        references: list[str],
        correction: str,
        grammar: str | None,
        seed: int,
        hint: str | None = None,
    ) -> ChatRequest:
        table = self.config.archetypes
        temperament = table.temperaments.get(sample.temperament)
        coping = table.coping.get(sample.coping)
        avoid = table.coping.get(hint) if hint else None
        user = render(
            "persona_user.j2",
            sample=sample,
            references=references,
            correction=correction,
            temperament=(temperament.prompt or sample.temperament) if temperament else "",
            coping=(coping.prompt or sample.coping) if coping else "",
            avoid=(avoid.prompt or hint) if avoid else "",
        )
        return build_request(
            self.config,
            self.facts,
            "persona",
            self._system,
            user,
            seed=seed % 2**31,
            grammar=grammar,
            item_id=item_id,
        )

    def _check(
        self, completion: Completion, sample: PersonaSample, references: list[str]
    ) -> CharacterCard | Refusal:
        cfg = self.config.persona
        if completion.finish_reason == "length":
            return TRUNCATED
        card = parse_character(
            completion.text, sample, min_chars=cfg.min_chars, max_chars=cfg.max_chars
        )
        if isinstance(card, Refusal):
            return card
        if is_near_duplicate(card.text, references, cfg.similarity_threshold):
            return Refusal(
                reason="near_duplicate",
                detail="the card is too close to one of the example cards; write a different "
                "life in your own words",
            )
        if self.dedup is not None:
            found = self.dedup.find(self.dedup.signature(card.text, [sample.name]))
            if found is not None:
                return Refusal(
                    reason="dataset_duplicate",
                    detail=f"the card repeats a card already in the dataset ({found[0]}); "
                    "write a different life in your own words",
                )
        return card


__all__ = ["PersonaStage"]
