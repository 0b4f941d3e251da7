"""Messages per turn by cadence, against the pacing the run's config sets
(``chat.pacing``, ``chat.pacing_by_style``): the share of turns of each count and how
far it lies from the configured share, in standard errors of a binomial share."""

from __future__ import annotations

from collections import Counter, defaultdict

from soc_async.config import ChatConfig, pacing_for
from soc_async.records import CADENCES, Conversation
from soc_async.report.model import Pacing, PacingRow
from soc_async.report.proportions import z_score

__all__ = ["PacingFigure"]


class PacingFigure:
    def __init__(self, chat: ChatConfig) -> None:
        self._chat = chat
        self._counts: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._styles: defaultdict[str, Counter[str]] = defaultdict(Counter)  # turns by style

    def conversation(self, c: Conversation) -> None:
        counts = self._counts[c.cadence]
        for turn in c.turns:
            counts[len(turn.messages)] += 1
        self._styles[c.cadence][c.style] += len(c.turns)

    def _target(self, cadence: str) -> dict[int, float]:
        """The configured shares, mixed over this cadence's styles by their turns."""
        styles = self._styles[cadence]
        total = sum(styles.values())
        mixed: Counter[int] = Counter()
        for style, turns in styles.items():
            for count, share in pacing_for(self._chat, cadence, style).items():
                mixed[count] += share * turns / total
        return dict(sorted(mixed.items()))

    def result(self) -> Pacing:
        rows = []
        present = [c for c in CADENCES if c in self._counts]
        present += sorted(c for c in self._counts if c not in CADENCES)
        for cadence in present:
            counts = self._counts[cadence]
            turns = sum(counts.values())
            if not turns:
                continue
            target = self._target(cadence)
            keys = sorted(set(counts) | set(target))
            shares = {k: counts[k] / turns for k in keys}
            worst = None
            if target:
                worst = max(abs(z_score(counts[k], turns, target.get(k, 0.0))) for k in keys)
            rows.append(
                PacingRow(
                    cadence=cadence,
                    turns=turns,
                    counts={str(k): counts[k] for k in keys},
                    shares={str(k): v for k, v in shares.items()},
                    target={str(k): target.get(k, 0.0) for k in keys} if target else {},
                    worst_z=worst,
                )
            )
        return Pacing(rows=rows, configured=bool(self._chat.pacing or self._chat.pacing_by_style))
