"""Keeps the experience pool from collapsing onto one conversation style.

Left alone, a model tends to write most experiences in one style (often
semi-structured). The monitor watches the styles of recently accepted experiences and,
when one dominates, names the least used style so that the next prompt (and grammar) can
ask for it. Pure bookkeeping: no I/O and no awaits, so on one event loop it needs no lock.
"""

from __future__ import annotations

from collections import Counter, deque

from soc_async.records import STYLES


class StyleMonitor:
    """Styles of the last ``window`` accepted experiences, and the hint they call for."""

    def __init__(self, window: int, min_pool: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.min_pool = min_pool  # no hint until this many experiences were accepted
        self._recent: deque[str] = deque(maxlen=window)
        self._seen = 0

    def observe(self, style: str) -> None:
        """Counts one accepted experience of ``style`` (one of ``records.STYLES``)."""
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
        self._recent.append(style)
        self._seen += 1

    def hint(self) -> str | None:
        """The least used style when the most used one outnumbers twice it plus one.

        Ties between least used styles go to the first in ``records.STYLES`` order, so
        the hint is a function of the observed sequence alone.
        """
        if self._seen < self.min_pool:
            return None
        counts = Counter(self._recent)
        most = max(counts[s] for s in STYLES)
        least_style = min(STYLES, key=lambda s: counts[s])
        if most > 2 * counts[least_style] + 1:
            return least_style
        return None

    def __repr__(self) -> str:
        counts = Counter(self._recent)
        shown = ", ".join(f"{s}={counts[s]}" for s in STYLES)
        return f"StyleMonitor(seen={self._seen}, window={self.window}: {shown})"
