"""Age coverage: the run's persona ages against the law the config draws them from
(``persona.age_distribution``), by band (the configured bands, else decades) and as
one distance over single years."""

from __future__ import annotations

from collections import Counter

from soc_async.config import PersonaConfig
from soc_async.records import Persona
from soc_async.report.model import AgeBandRow, AgeCoverage
from soc_async.report.proportions import distance, z_score
from soc_async.stats import age_law

__all__ = ["AgesFigure", "describe_law"]


def describe_law(c: PersonaConfig) -> str:
    """The configured age law in words, e.g. ``N(25, 5) on 18..70``."""
    where = f"on {c.age_min}..{c.age_max}"
    if c.age_distribution == "bands":
        parts = ", ".join(f"{b.min}-{b.max}: {b.weight:g}" for b in c.age_bands)
        return f"bands {parts}"
    if c.age_distribution == "mixture":
        parts = " + ".join(f"{m.weight:g}·N({m.mean:g}, {m.sd:g})" for m in c.age_mixture)
        return f"mixture {parts} {where}"
    return f"N({c.age_mean:g}, {c.age_sd:g}) {where}"


def _bands(c: PersonaConfig) -> list[tuple[int, int]]:
    if c.age_distribution == "bands":
        return sorted((b.min, b.max) for b in c.age_bands)
    # Decades, the first and last cut at the allowed range: 18-19, 20-29, ... 70-70.
    edges = [c.age_min, *range((c.age_min // 10 + 1) * 10, c.age_max + 1, 10)]
    return [(lo, hi - 1) for lo, hi in zip(edges, [*edges[1:], c.age_max + 1], strict=True)]


class AgesFigure:
    def __init__(self, persona: PersonaConfig) -> None:
        self._cfg = persona
        self._ages: Counter[int] = Counter()

    def persona(self, p: Persona) -> None:
        self._ages[p.meta.age] += 1

    def result(self) -> AgeCoverage:
        law = age_law(self._cfg)
        n = sum(self._ages.values())
        rows = []
        for lo, hi in _bands(self._cfg):
            count = sum(self._ages[a] for a in range(lo, hi + 1))
            target = sum(law.get(a, 0.0) for a in range(lo, hi + 1))
            share = count / n if n else None
            # No z where the band is certain (all or none of the law): no error to scale by.
            z = z_score(count, n, target) if n and 0 < target < 1 else None
            rows.append(
                AgeBandRow(band=f"{lo}-{hi}", personas=count, share=share, target=target, z=z)
            )
        outside = sum(k for a, k in self._ages.items() if law.get(a, 0.0) == 0)
        if outside:  # ages the law cannot draw (another config, or an older run)
            rows.append(AgeBandRow(band="outside the law", personas=outside, share=outside / n))
        tv = None
        if n:
            tv = distance({a: k / n for a, k in self._ages.items()}, law)
        return AgeCoverage(law=describe_law(self._cfg), personas=n, bands=rows, total_variation=tv)
