"""Figure 8, archetype drift: do the personas' traits and coping converge as the run
goes on?

For each persona, the content words of its Core Traits section, and of the sentences of
its Emotional Profile that speak of stress or coping, are counted in the window of
iterations it falls in. A window's concentration is the share of its words that are its
own 20 most frequent ones: a run whose cards converge on a few archetypes shows that
share rising from window to window.

Windows have equal widths in iterations. Personas may arrive in any order (a merged
directory holds its shards one after another), so words are counted in narrow buckets
whose width doubles, merging neighbours, whenever there are more than twice the wanted
windows: one pass, bounded memory, and 10 to 20 windows in the end.
"""

from __future__ import annotations

import re
from collections import Counter

from soc_async.records import Persona
from soc_async.report.lexical import tokens
from soc_async.report.model import Drift, DriftWindow

__all__ = ["COPING", "DriftFigure", "coping_words", "section", "trait_words"]

TOP = 20
COPING = re.compile(
    r"\b(cop(e|es|ed|ing)|stress\w*|overwhelm\w*|anxi\w*|calm\w*|worr\w*|pressure|"
    r"tense|upset|deal(s|t)? with|handles?|unwind\w*)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOPWORDS = """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    even ever every few for from further get gets got had has have having he her here hers
    herself him himself his how i if in into is it its itself just like make makes me
    more most much must my myself never no nor not now of off often on once one only or
    other our ours out over own rather really same she should so some still such than that
    the their theirs them themselves then there these they this those through to too
    under until up upon us very was we were what when where which while who whom why will
    with without would yet you your yours
"""
_STOP = frozenset(_STOPWORDS.split())


def section(card: str, title: str) -> str:
    """The text of one ``**Title**`` section of a card ("" when absent)."""
    start = card.find(f"**{title}**")
    if start < 0:
        return ""
    start += len(title) + 4
    following = re.search(r"^\s*\*\*[^*\n]+\*\*\s*$", card[start:], re.MULTILINE)
    end = start + following.start() if following else card.find("</character>", start)
    return card[start : end if end >= 0 else len(card)]


def _content(text: str) -> list[str]:
    return [w for w in tokens(text) if len(w) > 2 and w not in _STOP]


def trait_words(card: str) -> list[str]:
    """Content words of the Core Traits section."""
    return _content(section(card, "Core Traits"))


def coping_words(card: str) -> list[str]:
    """Content words of the Emotional Profile sentences about stress or coping."""
    profile = section(card, "Emotional Profile")
    return [w for s in _SENTENCE.split(profile) if COPING.search(s) for w in _content(s)]


class DriftFigure:
    def __init__(self, windows: int = 10) -> None:
        self._want = windows
        self._width = 1
        self._traits: dict[int, Counter[str]] = {}
        self._coping: dict[int, Counter[str]] = {}
        self._personas: Counter[int] = Counter()
        self._all_traits: Counter[str] = Counter()
        self._all_coping: Counter[str] = Counter()

    def persona(self, p: Persona) -> None:
        iteration = max(0, p.meta.iteration)
        while iteration // self._width >= 2 * self._want:
            self._widen()
        bucket = iteration // self._width
        traits, coping = trait_words(p.persona_text), coping_words(p.persona_text)
        self._traits.setdefault(bucket, Counter()).update(traits)
        self._coping.setdefault(bucket, Counter()).update(coping)
        self._personas[bucket] += 1
        self._all_traits.update(traits)
        self._all_coping.update(coping)

    def _widen(self) -> None:
        self._width *= 2
        for counters in (self._traits, self._coping):
            merged: dict[int, Counter[str]] = {}
            for bucket, counter in counters.items():
                merged.setdefault(bucket // 2, Counter()).update(counter)
            counters.clear()
            counters.update(merged)
        personas: Counter[int] = Counter()
        for bucket, n in self._personas.items():
            personas[bucket // 2] += n
        self._personas = personas

    def result(self) -> Drift:
        windows = []
        for bucket in sorted(self._personas):
            traits = self._traits.get(bucket, Counter())
            coping = self._coping.get(bucket, Counter())
            windows.append(
                DriftWindow(
                    start=bucket * self._width,
                    end=(bucket + 1) * self._width - 1,
                    personas=self._personas[bucket],
                    traits_top_share=_top_share(traits),
                    coping_top_share=_top_share(coping),
                    traits_words=sum(traits.values()),
                    coping_words=sum(coping.values()),
                )
            )
        return Drift(
            top=TOP,
            window_size=self._width,
            windows=windows,
            top_traits=_top(self._all_traits),
            top_coping=_top(self._all_coping),
        )


def _top(counter: Counter[str]) -> list[str]:
    """The most frequent words, ties in alphabetical order (so the order of arrival
    does not matter)."""
    return [w for w, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]]


def _top_share(counter: Counter[str]) -> float | None:
    total = sum(counter.values())
    if not total:
        return None
    return sum(n for _, n in counter.most_common(TOP)) / total
