"""Figure 4, experiences: style and cadence mix, topics and their turn budgets, instant
events, the style monitor's hints; start dates and models when a run records them."""

from __future__ import annotations

from collections import Counter

from soc_async.records import Experience
from soc_async.report.model import ExperienceMix, Moments, Share

__all__ = ["ExperienceMixFigure"]


def _keyed(counter: Counter[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(counter.items())}


class ExperienceMixFigure:
    def __init__(self) -> None:
        self._styles: Counter[str] = Counter()
        self._cadences: Counter[str] = Counter()
        self._topics: Counter[int] = Counter()
        self._budgets: Counter[int] = Counter()
        self._roadmap = Moments()
        self._events: Counter[int] = Counter()
        self._hinted = Share()
        self._derived = Share()
        self._months: Counter[str] = Counter()
        self._models: Counter[str] = Counter()

    def experience(self, e: Experience) -> None:
        self._styles[e.style] += 1
        self._cadences[e.cadence] += 1
        self._topics[len(e.topics)] += 1
        for t in e.topics:
            self._budgets[t.turns] += 1
        self._roadmap.add(sum(t.turns for t in e.topics))
        self._events[len(e.instant_events)] += 1
        self._hinted.add(e.meta.style_hint is not None)
        self._derived.add(e.meta.initial_state_derived)
        if e.start_date and len(e.start_date) >= 7:
            self._months[e.start_date[:7]] += 1
        self._models[e.meta.model or "(unnamed)"] += 1

    def result(self) -> ExperienceMix:
        return ExperienceMix(
            experiences=self._roadmap.n,
            styles=dict(self._styles.most_common()),
            cadences=dict(self._cadences.most_common()),
            topics=_keyed(self._topics),
            budgets=_keyed(self._budgets),
            roadmap_turns=self._roadmap,
            events=_keyed(self._events),
            style_hinted=self._hinted,
            initial_state_derived=self._derived,
            start_months=dict(sorted(self._months.items())) if self._months else None,
            models=dict(self._models.most_common()),
        )
