"""The experience stage: why two personas talk today, written by the model and checked.

One :meth:`ExperienceStage.write` call turns a pair of personas into an ``Experience``
record or a ``Failure``: it draws when the chat starts (:func:`start_for`), renders the
prompt (both cards, few-shot examples from the experience ring, the start's weekday and
time, the style monitor's hint), asks the model (with a grammar when the config enables
it), parses and validates the reply, checks it against every experience accepted so far,
attributes each instant event to the persona it names, and retries an invalid reply with
a one-line correction. It knows nothing of HTTP: a ``Completer`` does the asking.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from datetime import date, datetime, time, timedelta
from itertools import accumulate

from soc_async import seeds
from soc_async.calls import ask_until_valid, build_request
from soc_async.calls.prompts import render
from soc_async.config import ChatConfig, RunConfig, RunFacts
from soc_async.fewshot import FewShotRing
from soc_async.formats.clock import format_time, long_day, weekday_name
from soc_async.formats.events import attribute_events
from soc_async.formats.experience import (
    ParsedExperience,
    experience_grammar,
    parse_experience,
)
from soc_async.formats.refusal import TRUNCATED, Refusal
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.neardup import NearDuplicateIndex, is_near_duplicate
from soc_async.records import Experience, ExperienceMeta, Failure, Persona
from soc_async.stages.style_monitor import StyleMonitor

# Bounds the prompt states and the grammar enforces; the parser itself accepts any
# positive budget and any number of topics, so old records stay valid if these change.
MAX_TOPICS = 5
MAX_BUDGET = 20


def start_for(chat: ChatConfig, seed: int, index: int) -> datetime:
    """When the chat of experience ``index`` opens: a day of the window ``[start_date,
    start_date + start_days)`` drawn uniformly, an hour by ``start_hours``, a minute.

    A pure function of the run seed and the index, so a resumed run or another shard
    draws the same start for the same experience.
    """
    rng = random.Random(f"{seed}:experience-start:{index}")
    day = date.fromisoformat(chat.start_date) + timedelta(days=rng.randrange(chat.start_days))
    cumulative = list(accumulate(chat.start_hours))
    hour = min(bisect_right(cumulative, rng.random() * cumulative[-1]), 23)
    return datetime.combine(day, time(hour, rng.randrange(60)))


def seed_experiences() -> list[str]:
    """The hand-written `<experience>` texts of ``seeds/experiences``: they seed the
    experience few-shot ring. Raises ``SeedError`` when none can be read."""
    return seeds.cards("experiences", ".txt")


class ExperienceStage:
    """Writes one experience per call; shares its ring and style monitor across calls."""

    def __init__(
        self,
        config: RunConfig,
        completer: Completer,
        ring: FewShotRing[str],
        monitor: StyleMonitor,
        facts: RunFacts,
        *,
        priority: int = 0,  # lower is served first; the pipeline decides against chat turns
        dedup: NearDuplicateIndex | None = None,  # every experience accepted so far
    ) -> None:
        self.config = config
        self.completer = completer
        self.ring = ring
        self.monitor = monitor
        self.facts = facts
        self.priority = priority
        self.dedup = dedup
        self._call = config.call("experience")
        # Rendered once: byte-identical for every call, so vLLM's prefix cache shares it.
        self._system = render(
            "experience_system.j2",
            min_events=config.experience.min_events,
            max_events=config.experience.max_events,
            max_topics=MAX_TOPICS,
            max_budget=MAX_BUDGET,
        )

    async def write(
        self, index: int, item_id: str, pair: tuple[Persona, Persona], region_matched: bool
    ) -> Experience | Failure:
        """The experience ``item_id`` (the ``index``-th) for ``pair``, or why there is none.

        Invalid replies (unparseable, truncated, a near-copy of a reference) are retried
        up to the call's ``retries``; a ``RequestError`` becomes a failure at once; a
        ``ServerError`` propagates, since a dead server is the run's problem, not the item's.
        """
        a, b = pair
        names = (a.meta.name, b.meta.name)
        exp = self.config.experience
        hint = self.monitor.hint()
        rng = random.Random(f"{self.config.seed}:experience-fewshot:{index}")
        references = list(self.ring.draw(exp.few_shot, rng)) if exp.few_shot else []
        start = start_for(self.config.chat, self.config.seed, index)
        bounded = self._call.grammar_bounds == "max_tokens"
        grammar = (
            experience_grammar(
                names,
                min_events=exp.min_events,
                max_events=exp.max_events,
                max_topics=MAX_TOPICS,
                max_budget=MAX_BUDGET,
                style=hint,
                max_tokens=self._call.max_tokens if bounded else None,
            )
            if self._call.grammar
            else None
        )

        outcome = await ask_until_valid(
            self.completer,
            "experience",
            lambda attempt, correction: self._request(
                index, item_id, attempt, pair, start, references, hint, correction, grammar
            ),
            lambda completion: self._check(completion, names, references),
            ParsedExperience,
            retries=self._call.retries,
            priority=self.priority,
        )
        parsed = outcome.value
        if parsed is None:
            return outcome.failure(item_id, "experiences")
        if self.dedup is not None:  # no await since _check looked it up: still unique
            self.dedup.add(item_id, self.dedup.signature(parsed.text, names))
        await self.ring.push(parsed.text)
        self.monitor.observe(parsed.style)
        return Experience(
            id=item_id,
            persona_ids=[a.id, b.id],
            experience_text=parsed.text,
            style=parsed.style,  # one of records.STYLES: the parser checked it
            cadence=parsed.cadence,
            topics=parsed.topics,
            initial_state=parsed.initial_state,
            instant_events=parsed.instant_events,
            opener=a.id if parsed.opener_name == names[0] else b.id,
            meta=ExperienceMeta(
                iteration=index,
                model=outcome.model,
                time_taken=outcome.time_taken,
                region_matched=region_matched,
                style_hint=hint,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                initial_state_derived=parsed.initial_state_derived,
            ),
            start_date=start.date().isoformat(),
            start_time=format_time(start),
            event_personas=attribute_events(
                parsed.instant_events, [(a.id, a.meta.name), (b.id, b.meta.name)]
            ),
        )

    def _request(
        self,
        index: int,
        item_id: str,
        attempt: int,
        pair: tuple[Persona, Persona],
        start: datetime,
        references: list[str],
        hint: str | None,
        correction: str,
        grammar: str | None,
    ) -> ChatRequest:
        user = render(
            "experience_user.j2",
            people=[{"name": p.meta.name, "card": p.persona_text.strip()} for p in pair],
            examples=references,
            start_weekday=weekday_name(start),
            start_day=long_day(start),
            start_time=format_time(start),
            style_hint=hint,
            correction=correction,
        )
        return build_request(
            self.config,
            self.facts,
            "experience",
            self._system,
            user,
            seed=_request_seed(self.config.seed, index, attempt),
            grammar=grammar,
            item_id=item_id,
        )

    def _check(
        self, completion: Completion, names: tuple[str, str], references: list[str]
    ) -> ParsedExperience | Refusal:
        exp = self.config.experience
        if completion.finish_reason == "length":
            return TRUNCATED
        parsed = parse_experience(
            completion.text,
            names,
            min_events=exp.min_events,
            max_events=exp.max_events,
            derive_initial_state=self._call.grammar,
        )
        if isinstance(parsed, Refusal):
            return parsed
        # A freeform chat ends with its roadmap: one shorter than chat.min_turns would only
        # become a too_short failure of its chat, so the plan is corrected here instead.
        chat = self.config.chat
        least = min(chat.min_turns, chat.max_turns)
        planned = sum(t.turns for t in parsed.topics)
        if parsed.style == "freeform" and parsed.topics and planned < least:
            return Refusal(
                reason="short_plan",
                detail=f"the topics add up to {planned} turns, but a freeform chat ends with "
                f"its topics and needs at least {least}: give them more turns or leave "
                "the topic list out",
            )
        if is_near_duplicate(parsed.text, references, exp.similarity_threshold):
            return Refusal(
                reason="near_duplicate",
                detail="it is too close to one of the examples; invent a different situation",
            )
        if self.dedup is not None:
            found = self.dedup.find(self.dedup.signature(parsed.text, names))
            if found is not None:
                return Refusal(
                    reason="dataset_duplicate",
                    detail=f"it repeats an experience already in the dataset ({found[0]}); "
                    "invent a different situation",
                )
        return parsed


def _request_seed(seed: int, index: int, attempt: int) -> int:
    """A sampling seed per (run, item, attempt): a rerun asks the same questions."""
    digest = hashlib.blake2b(f"{seed}:experience:{index}:{attempt}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "big") >> 1  # non-negative 31-bit
