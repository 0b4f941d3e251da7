"""Archetypes drawn and written, per window of iterations: is the mix the table's, and
does what the model writes drift from it?

For each table (temperament, coping) and each window of iterations: how many personas
were drawn each row, and how far each row's share lies from its weight in standard
errors of independent draws (the run's draws are stratified, so they should sit well
inside 3); what the cards wrote by the table's keywords (:func:`.archetypes.written_label`,
"unclear" when no keyword shows); and, with ``report --judge``, what the judge read in a
seeded sample of the cards. The share of cards whose written row matches the drawn one,
and the total variation distance between the first and the last window's written mix
(drift as one figure), close each table.

Windows are made as in :mod:`.drift`: equal widths in iterations, counted in narrow
buckets that merge pairwise whenever there are more than twice the wanted windows, so
personas may arrive in any order (a merged directory holds its shards one after another).
"""

from __future__ import annotations

from collections import Counter

from soc_async.archetypes import KeywordTable, inner_text, shares, written_label
from soc_async.config import ArchetypeConfig
from soc_async.records import Persona
from soc_async.report.archetype_judge import ArchetypeJudged
from soc_async.report.model import (
    ArchetypeJudgeInfo,
    Archetypes,
    ArchetypeTable,
    ArchetypeWindow,
    Share,
)
from soc_async.report.proportions import total_variation, z_score

__all__ = ["UNCLEAR", "ArchetypeFigure", "total_variation", "z_score"]

UNCLEAR = "unclear"
TABLES = ("temperament", "coping")
_KINDS = ("drawn", "written", "judged")


class ArchetypeFigure:
    def __init__(
        self, config: ArchetypeConfig, judged: ArchetypeJudged | None = None, windows: int = 10
    ) -> None:
        self._tables = {"temperament": config.temperaments, "coping": config.coping}
        self._keywords = {name: KeywordTable(t) for name, t in self._tables.items()}
        self._judged = judged
        self._want = windows
        self._width = 1
        # bucket -> (table, kind) -> label -> count
        self._buckets: dict[int, dict[tuple[str, str], Counter[str]]] = {}
        self._personas: Counter[int] = Counter()
        self._written_match = {name: Share() for name in TABLES}
        self._judged_match = {name: Share() for name in TABLES}
        self._hinted = Share()
        self._hint_styles: Counter[str] = Counter()
        self._without = 0

    def persona(self, p: Persona) -> None:
        drawn = {"temperament": p.meta.temperament, "coping": p.meta.coping}
        if not drawn["temperament"] or not drawn["coping"]:
            self._without += 1
            return
        iteration = max(0, p.meta.iteration)
        while iteration // self._width >= 2 * self._want:
            self._widen()
        bucket = iteration // self._width
        counts = self._buckets.setdefault(bucket, {})
        self._personas[bucket] += 1
        self._hinted.add(bool(p.meta.archetype_hint))
        if p.meta.archetype_hint:
            self._hint_styles[p.meta.archetype_hint] += 1
        text = inner_text(p.persona_text)
        for name in TABLES:
            counts.setdefault((name, "drawn"), Counter())[drawn[name]] += 1
            written = written_label(text, self._keywords[name], drawn[name])
            counts.setdefault((name, "written"), Counter())[written or UNCLEAR] += 1
            self._written_match[name].add(written == drawn[name])
            read = getattr(self._judged, name).get(p.id) if self._judged else None
            if read is not None:
                counts.setdefault((name, "judged"), Counter())[read] += 1
                self._judged_match[name].add(read == drawn[name])

    def _widen(self) -> None:
        self._width *= 2
        merged: dict[int, dict[tuple[str, str], Counter[str]]] = {}
        for bucket, counters in self._buckets.items():
            into = merged.setdefault(bucket // 2, {})
            for key, counter in counters.items():
                into.setdefault(key, Counter()).update(counter)
        self._buckets = merged
        personas: Counter[int] = Counter()
        for bucket, n in self._personas.items():
            personas[bucket // 2] += n
        self._personas = personas

    def _table(self, name: str) -> ArchetypeTable:
        weights = shares(self._tables[name])
        windows = []
        totals = {kind: Counter[str]() for kind in _KINDS}
        for bucket in sorted(self._personas):
            counts = self._buckets.get(bucket, {})
            n = self._personas[bucket]
            got = {kind: counts.get((name, kind), Counter()) for kind in _KINDS}
            for kind in _KINDS:
                totals[kind].update(got[kind])
            windows.append(
                ArchetypeWindow(
                    start=bucket * self._width,
                    end=(bucket + 1) * self._width - 1,
                    personas=n,
                    drawn={label: got["drawn"][label] for label in weights},
                    z={
                        label: round(z_score(got["drawn"][label], n, w), 3) + 0.0  # no -0.0
                        for label, w in weights.items()
                    },
                    written=_ordered(got["written"], weights),
                    judged=_ordered(got["judged"], weights),
                )
            )
        zs = [abs(z) for w in windows for z in w.z.values()]
        first = windows[0] if windows else None
        last = windows[-1] if windows else None
        return ArchetypeTable(
            name=name,
            weights={label: round(w, 6) for label, w in weights.items()},
            drawn={label: totals["drawn"][label] for label in weights},
            written=_ordered(totals["written"], weights),
            judged=_ordered(totals["judged"], weights),
            windows=windows,
            max_abs_z=max(zs) if zs else None,
            within_3se=all(z <= 3 for z in zs) if zs else None,
            written_match=self._written_match[name],
            judged_match=self._judged_match[name],
            written_drift=_drift(first, last, "written"),
            judged_drift=_drift(first, last, "judged"),
            drawn_drift=_drift(first, last, "drawn"),
        )

    def result(self) -> Archetypes:
        j = self._judged
        return Archetypes(
            personas=sum(self._personas.values()),
            without=self._without,
            window_size=self._width,
            hinted=self._hinted,
            hint_styles=dict(self._hint_styles.most_common()),
            tables=[self._table(name) for name in TABLES],
            judge=ArchetypeJudgeInfo(
                sample=j.sample, seed=j.seed, model=j.model, read=j.read, refused=dict(j.refused)
            )
            if j is not None
            else None,
        )


def _ordered(counts: Counter[str], weights: dict[str, float]) -> dict[str, int]:
    """Counts in table order, "unclear" last, leaving out rows never seen."""
    out = {label: counts[label] for label in weights if counts[label]}
    if counts[UNCLEAR]:
        out[UNCLEAR] = counts[UNCLEAR]
    return out


def _drift(first: ArchetypeWindow | None, last: ArchetypeWindow | None, kind: str) -> float | None:
    if first is None or last is None or first is last:
        return None
    tv = total_variation(Counter(getattr(first, kind)), Counter(getattr(last, kind)))
    return None if tv is None else round(tv, 4)
