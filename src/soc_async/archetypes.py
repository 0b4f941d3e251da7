"""Archetypes: a persona's temperament and way of coping with stress, drawn and read back.

The SOC-2602 write-up saw its personas converge, across iterations, on a few
personality types, "most visibly in how characters handle stress and coping". Three
pure parts counter and measure that here:

- :class:`ArchetypeDraw` draws a row of a weighted table (``[archetypes]``) for persona
  index ``i`` as a pure function of the run seed and ``i`` (so a resumed run or another
  shard draws the same). Draws are stratified: the indices of each block of ``block``
  are dealt the rows by systematic sampling (one seeded offset per block, then a seeded
  shuffle), so every index still has exactly the row's weight as its probability, and
  any stretch of the run holds each row within about one count per block of its weight,
  far inside the sampling error of independent draws.
- :func:`written_label` is the run's cheap reading of what a card wrote: no model call,
  only the table's keywords in the card's Core Traits and Emotional Profile. When the
  drawn row's keywords are there, the card agrees with its draw and the drawn row is
  taken; otherwise the row with the most distinct keywords found (ties to the table's
  order), or None when none shows. It is biased toward the drawn row by design: it asks
  "did the card follow its draw, and if not, what did it write instead", which is what
  the monitor needs; the report's judge (``report --judge``) gives the unbiased reading.
- :class:`ArchetypeMonitor` keeps the written coping styles of the recent cards and,
  when one is written more than ``hint_z`` standard errors above its weight, names it,
  so the prompt of a persona drawn with another style can say "not that one".
"""

from __future__ import annotations

import hashlib
import random
import re
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Mapping
from functools import lru_cache
from itertools import accumulate

from soc_async.config import Archetype

__all__ = [
    "ArchetypeDraw",
    "ArchetypeMonitor",
    "KeywordTable",
    "card_section",
    "shares",
    "written_label",
]


def shares(table: Mapping[str, Archetype]) -> dict[str, float]:
    """Each row's probability: its weight over the table's total."""
    total = sum(a.weight for a in table.values())
    return {label: a.weight / total for label, a in table.items()}


def _unit(*parts: object) -> float:
    """A number in [0, 1), a pure function of ``parts`` in every process."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class ArchetypeDraw:
    """Rows of one weighted table for persona indices; see the module docstring."""

    def __init__(self, weights: Mapping[str, float], *, seed: int, salt: str, block: int) -> None:
        if not weights or any(w <= 0 for w in weights.values()):
            raise ValueError(f"an archetype table needs positive weights, got {dict(weights)}")
        if block < 0:
            raise ValueError(f"block must be >= 0, got {block}")
        self.labels = list(weights)
        self._cum = list(accumulate(weights.values()))
        self.seed, self.salt, self.block = seed, salt, block
        self._dealt = lru_cache(maxsize=64)(self._deal)

    def _at(self, point: float) -> str:
        """The row whose cumulative share holds ``point`` in [0, 1)."""
        i = bisect_right(self._cum, point * self._cum[-1])
        return self.labels[min(i, len(self.labels) - 1)]

    def _deal(self, block: int) -> tuple[str, ...]:
        # Systematic sampling: points (k + u) / B for one uniform u cover [0, 1) evenly,
        # so a row of weight w gets floor(wB) or ceil(wB) of the block, and a shuffle
        # makes each position's row as likely as any other's: P(row) = w at every index.
        u = _unit(self.seed, self.salt, "offset", block)
        rows = [self._at((k + u) / self.block) for k in range(self.block)]
        random.Random(f"{self.seed}:{self.salt}:deal:{block}").shuffle(rows)
        return tuple(rows)

    def draw(self, index: int) -> str:
        """The row of persona ``index``."""
        if self.block == 0:
            return self._at(_unit(self.seed, self.salt, index))
        return self._dealt(index // self.block)[index % self.block]

    def draw_rng(self, rng: random.Random) -> str:
        """An independent row from ``rng`` (which it advances), for samples with no index."""
        return self._at(rng.random())


class KeywordTable:
    """A table's keywords compiled once: one pattern per row, matched at word starts."""

    def __init__(self, table: Mapping[str, Archetype]) -> None:
        self.labels = list(table)
        self._patterns: dict[str, list[re.Pattern[str]]] = {}
        for label, row in table.items():
            words = row.keywords or [w for w in re.findall(r"[\w-]+", label.lower()) if len(w) > 3]
            self._patterns[label] = [
                re.compile(r"\b" + re.escape(w.lower().strip())) for w in words if w.strip()
            ]

    def hits(self, text: str) -> dict[str, int]:
        """Distinct keywords of each row found in ``text``."""
        low = text.lower()
        return {
            label: sum(1 for p in patterns if p.search(low))
            for label, patterns in self._patterns.items()
        }


def written_label(text: str, keywords: KeywordTable, drawn: str | None) -> str | None:
    """The row ``text`` shows: ``drawn`` when any of its keywords is there, else the row
    with the most distinct keywords (ties to table order), else None."""
    hits = keywords.hits(text)
    if drawn is not None and hits.get(drawn, 0) > 0:
        return drawn
    best = max(keywords.labels, key=lambda label: hits[label])
    return best if hits[best] > 0 else None


_HEADER = re.compile(r"^\s*\*\*[^*\n]+\*\*\s*$", re.MULTILINE)


def card_section(card: str, title: str) -> str:
    """The text of one ``**Title**`` section of a stored (canonical) card, "" if absent."""
    start = card.find(f"**{title}**")
    if start < 0:
        return ""
    start += len(title) + 4
    following = _HEADER.search(card, start)
    end = following.start() if following else card.find("</character>", start)
    return card[start : end if end >= 0 else len(card)]


def inner_text(card: str) -> str:
    """What the keywords are read in: the Core Traits and Emotional Profile sections."""
    return card_section(card, "Core Traits") + "\n" + card_section(card, "Emotional Profile")


class ArchetypeMonitor:
    """Written coping styles of the last ``window`` accepted cards, and the style a new
    prompt should steer away from. Pure bookkeeping: no I/O, no awaits."""

    def __init__(
        self, weights: Mapping[str, float], *, window: int, min_pool: int, hint_z: float
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        total = sum(weights.values())
        self.weights = {label: w / total for label, w in weights.items()}
        self.window, self.min_pool, self.hint_z = window, min_pool, hint_z
        self._recent: deque[str | None] = deque(maxlen=window)
        self._seen = 0

    def observe(self, written: str | None) -> None:
        """Counts one accepted card whose written style is ``written`` (None: unclear)."""
        if written is not None and written not in self.weights:
            raise ValueError(f"unknown archetype {written!r}; expected one of {list(self.weights)}")
        self._recent.append(written)
        self._seen += 1

    def dominant(self) -> str | None:
        """The style written furthest above its weight, when that is more than ``hint_z``
        standard errors (of independent draws at the weights) over the window's cards
        whose style could be read; ties go to the table's order."""
        known = [w for w in self._recent if w is not None]
        n = len(known)
        if self._seen < self.min_pool or n == 0:
            return None
        counts = Counter(known)
        best, best_z = None, self.hint_z
        for label, w in self.weights.items():
            if w >= 1.0:
                continue
            z = (counts[label] - n * w) / (n * w * (1 - w)) ** 0.5
            if z > best_z:
                best, best_z = label, z
        return best

    def hint(self, drawn: str) -> str | None:
        """The dominant style, when the persona about to be written was drawn another."""
        found = self.dominant()
        return found if found is not None and found != drawn else None

    def __repr__(self) -> str:
        counts = Counter(self._recent)
        return f"ArchetypeMonitor(seen={self._seen}, window={self.window}: {dict(counts)})"
