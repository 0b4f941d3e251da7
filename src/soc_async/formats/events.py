"""Who an instant event happens to: the persona it names, or either when it names neither.

An experience's instant events are written about the people of the chat ("A forklift
alarm goes off near Lukas", "Agnieszka's manager asks her to recheck a figure"). One of
them is woven into the prompt of whoever speaks a turn, so an event that names one
person must never be given to the other. :func:`attribute_event` reads an event line
and returns the persona it names, by full name, any part of the name (given or family
name) or a possessive of either ("Lukas's", "Lukas'", "Đức’s"), with or without accents.
A name word that both people share counts for neither. An event that names neither of
them, or both, is unattributed (None): either speaker may get it.

Matching is case-sensitive on capitalised name words, so "will" or "rose" in a sentence
do not read as the names Will or Rose.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from soc_async.formats.names import name_tokens, strip_accents


@functools.lru_cache(maxsize=4096)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    """Any of ``tokens`` as a whole word, optionally followed by a possessive."""
    if not tokens:
        return None
    spelled = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
    return re.compile(rf"(?<![\w'’-])(?:{spelled})(?:['’]s?)?(?![\w-])")


def _references(people: Sequence[tuple[str, str]]) -> list[tuple[str, re.Pattern[str] | None]]:
    tokens = [set(name_tokens(name)) for _, name in people]
    shared = set.intersection(*tokens) if len(tokens) > 1 else set()
    return [
        (pid, _pattern(tuple(sorted(own - shared))))
        for (pid, _), own in zip(people, tokens, strict=True)
    ]


def attribute_event(event: str, people: Sequence[tuple[str, str]]) -> str | None:
    """The id of the one person in ``people`` (``(persona_id, display_name)`` pairs) that
    ``event`` names, or None when it names none of them or more than one."""
    return attribute_events([event], people)[0]


def attribute_events(events: Sequence[str], people: Sequence[tuple[str, str]]) -> list[str | None]:
    """:func:`attribute_event` for each of ``events``, in order."""
    references = _references(people)
    out: list[str | None] = []
    for event in events:
        plain = strip_accents(event)
        named = [pid for pid, pattern in references if pattern and pattern.search(plain)]
        out.append(named[0] if len(named) == 1 else None)
    return out


def events_for(speaker: str, events: Sequence[str], owners: Sequence[str | None]) -> list[str]:
    """The events that may go to ``speaker``: their own and the unattributed ones.

    ``owners`` is parallel to ``events`` (as ``Experience.event_personas``); when its
    length differs (a record from before attribution), every event is allowed.
    """
    if len(owners) != len(events):
        return list(events)
    return [e for e, owner in zip(events, owners, strict=True) if owner in (None, speaker)]


__all__ = ["attribute_event", "attribute_events", "events_for"]
