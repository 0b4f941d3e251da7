"""The bench's cast: personas and experiences built from the seed files, no model calls.

The bench measures the chat stage, so it needs conversations to roll out without first
generating personas and experiences. The hand-written seed cards and experiences serve:
each seed experience is about two seed personas, named in full. Rolling out the same
experience many times would share its whole fixed prompt part across conversations and
flatter the prefix-cache figure, so beyond the first round each conversation *recasts*
an experience with another pair of seed personas: the two full names are swapped for
the new pair's (the prose keeps the old first names, which changes nothing for
throughput), so its people section and hence its prompt prefix are its own.
"""

from __future__ import annotations

import random
import re

from soc_async.config import RunConfig
from soc_async.errors import SeedError
from soc_async.formats.experience import parse_experience
from soc_async.formats.refusal import Refusal
from soc_async.records import Experience, ExperienceMeta, Persona, PersonaMeta, make_id
from soc_async.seeds import persona_cards
from soc_async.stages import experiences as experience_stage

__all__ = ["SeedExperience", "bench_conversations", "cast_experiences", "recast", "seed_personas"]

_NAME_RE = re.compile(r"^\*\*Name:\*\*\s*(.+?)\s*$", re.MULTILINE)
_AGE_RE = re.compile(r"^\*\*Age:\*\*\s*(\d+)", re.MULTILINE)
_LOCATION_RE = re.compile(r"^\*\*Location:\*\*\s*(.+?)\s*$", re.MULTILINE)
_PRONOUNS_RE = re.compile(r"^\*\*Pronouns:\*\*\s*(\w+)", re.MULTILINE)
_GENDERS = {"she": "female", "he": "male"}


def seed_personas(seed: int = 0) -> list[Persona]:
    """One Persona per hand-written seed card, its meta read off the card's Basic Information.

    Raises SeedError for a card without a Name or Age line.
    """
    out = []
    for i, card in enumerate(persona_cards()):
        name = _NAME_RE.search(card)
        age = _AGE_RE.search(card)
        if name is None or age is None:
            raise SeedError(f"seeds/personas: card {i + 1} has no **Name:** or **Age:** line")
        location = _LOCATION_RE.search(card)
        place = [p.strip() for p in location.group(1).split(",")] if location else [""]
        pronoun = _PRONOUNS_RE.search(card)
        out.append(
            Persona(
                id=make_id(seed, "personas", i),
                persona_text=card.strip(),
                meta=PersonaMeta(
                    iteration=i,
                    model="seed",
                    region=place[-1],
                    subregion=", ".join(place[:-1]),
                    name=name.group(1),
                    gender=_GENDERS.get(pronoun.group(1).lower(), "unknown") if pronoun else "",
                    age=int(age.group(1)),
                    time_taken=0.0,
                ),
            )
        )
    return out


class SeedExperience:
    """A seed experience's text and the two seed personas it is about, opener first."""

    __slots__ = ("opener", "other", "text")

    def __init__(self, text: str, opener: Persona, other: Persona) -> None:
        self.text = text
        self.opener = opener
        self.other = other


def cast_experiences(personas: list[Persona], config: RunConfig) -> list[SeedExperience]:
    """The seed experiences with their two personas; SeedError if one does not parse.

    An experience's people are the seed personas whose full names it mentions; exactly
    two must appear.
    """
    exp = config.experience
    out = []
    for i, text in enumerate(experience_stage.seed_experiences()):
        named = [p for p in personas if p.meta.name in text]
        if len(named) != 2:
            raise SeedError(
                f"seeds/experiences: experience {i + 1} names {len(named)} seed personas, "
                "expected exactly 2 (full names as on their cards)"
            )
        a, b = named
        parsed = parse_experience(
            text, (a.meta.name, b.meta.name), min_events=exp.min_events, max_events=exp.max_events
        )
        if isinstance(parsed, Refusal):
            raise SeedError(
                f"seeds/experiences: experience {i + 1}: {parsed.reason}: {parsed.detail}"
            )
        opener, other = (a, b) if parsed.opener_name == a.meta.name else (b, a)
        out.append(SeedExperience(text.strip(), opener, other))
    return out


def recast(text: str, old: tuple[str, str], new: tuple[str, str]) -> str:
    """``text`` with the full names ``old`` replaced by ``new``, pairwise and at once.

    Replaced through placeholders, so a new name equal to the other old one is not
    replaced twice.
    """
    marks = ("\x000\x00", "\x001\x00")
    for name, mark in zip(old, marks, strict=True):
        text = text.replace(name, mark)
    for name, mark in zip(new, marks, strict=True):
        text = text.replace(mark, name)
    return text


def bench_conversations(
    n: int,
    personas: list[Persona],
    seeds: list[SeedExperience],
    config: RunConfig,
    *,
    start: int = 0,
) -> list[Experience]:
    """Conversations ``start`` to ``start + n``: the seeds as written, then recast.

    Conversation ``k`` is seed experience ``k % E`` played by the ``k // E``-th pair of a
    seeded shuffle of all ordered persona pairs, so the first ``E * P * (P - 1)`` (728
    with the shipped seeds) are all different; past that they repeat, and a repeat's
    first turn finds its prefix cached. Phases of one bench take disjoint ranges, so no
    phase finds another's prompts in the cache. Deterministic in ``config.seed``. Raises
    SeedError when a recast text no longer parses (a name that is also an ordinary word
    would do that).
    """
    if len(personas) < 2 or not seeds:
        raise SeedError("the bench needs at least 2 seed personas and 1 seed experience")
    pairs = [(a, b) for a in personas for b in personas if a.id != b.id]
    random.Random(f"{config.seed}:bench-pairs").shuffle(pairs)
    # Each seed's recasts skip the pair it was written for, which the first round plays.
    recasts = [[p for p in pairs if (p[0].id, p[1].id) != (s.opener.id, s.other.id)] for s in seeds]
    exp = config.experience
    out = []
    for i in range(start, start + n):
        base = seeds[i % len(seeds)]
        if i < len(seeds):
            opener, other = base.opener, base.other
        else:
            own = recasts[i % len(seeds)]
            opener, other = own[(i // len(seeds) - 1) % len(own)]
        names = (opener.meta.name, other.meta.name)
        text = recast(base.text, (base.opener.meta.name, base.other.meta.name), names)
        parsed = parse_experience(text, names, min_events=exp.min_events, max_events=exp.max_events)
        if isinstance(parsed, Refusal):
            raise SeedError(f"bench conversation {i}: recast experience: {parsed.detail}")
        out.append(
            Experience(
                id=make_id(config.seed, "experiences", i),
                persona_ids=[opener.id, other.id],
                experience_text=parsed.text,
                style=parsed.style,  # type: ignore[arg-type]  # the parser checked it
                cadence=parsed.cadence,  # type: ignore[arg-type]
                topics=parsed.topics,
                initial_state=parsed.initial_state,
                instant_events=parsed.instant_events,
                opener=opener.id,
                meta=ExperienceMeta(iteration=i, model="seed", time_taken=0.0),
            )
        )
    return out
