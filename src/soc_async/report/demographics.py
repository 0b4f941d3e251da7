"""Figure 3, demographics: who the personas are, against the law they were drawn from,
and how experiences pair them.

Occupation and socioeconomic band are read from persona meta when a run records them
(``meta.occupation``, ``meta.band``); older runs have neither and the figure says so.
"""

from __future__ import annotations

import math
from collections import Counter

from soc_async.config import ExperienceConfig, PersonaConfig
from soc_async.records import Experience, Persona
from soc_async.report.model import Demographics, Moments, Share
from soc_async.stats import age_law

__all__ = ["DemographicsFigure", "country_of"]

TOP_OCCUPATIONS = 30


def country_of(p: Persona) -> str:
    """The persona's country: the subregion's last part ("Wuhan, Hubei, China" ->
    "China"), which the card's Location states word for word."""
    return p.meta.subregion.rsplit(",", 1)[-1].strip() or "(unknown)"


class DemographicsFigure:
    def __init__(self, persona: PersonaConfig, experience: ExperienceConfig) -> None:
        self._cfg = persona
        self._match_target = experience.region_match
        self._regions: Counter[str] = Counter()
        self._countries: Counter[str] = Counter()
        self._genders: Counter[str] = Counter()
        self._ages: Counter[int] = Counter()
        self._age = Moments()
        self._occupations: Counter[str] = Counter()
        self._bands: Counter[str] = Counter()
        self._region_of: dict[str, str] = {}
        self._matched = Share()
        self._same = Share()

    def persona(self, p: Persona) -> None:
        m = p.meta
        self._regions[m.region] += 1
        self._countries[country_of(p)] += 1
        self._genders[m.gender] += 1
        self._ages[m.age] += 1
        self._age.add(m.age)
        self._region_of[p.id] = m.region
        if m.occupation.strip():  # "" in runs older than the field
            self._occupations[" ".join(m.occupation.lower().split())] += 1
        if m.band.strip():
            self._bands[m.band] += 1

    def experience(self, e: Experience) -> None:
        self._matched.add(bool(e.meta.region_matched))
        regions = [self._region_of.get(pid) for pid in e.persona_ids]
        if len(regions) == 2 and None not in regions:
            self._same.add(regions[0] == regions[1])

    def result(self) -> Demographics:
        c = self._cfg
        law = age_law(c)  # the law the sampler draws from, whichever the config chose
        law_mean = sum(a * w for a, w in law.items())
        law_sd = math.sqrt(sum(w * (a - law_mean) ** 2 for a, w in law.items()))
        return Demographics(
            personas=self._age.n,
            regions=dict(self._regions.most_common()),
            countries=dict(self._countries.most_common()),
            genders=dict(self._genders.most_common()),
            age=self._age,
            ages={str(a): n for a, n in sorted(self._ages.items())},
            age_target={str(a): w for a, w in law.items()},
            age_target_mean=c.age_mean if c.age_distribution == "normal" else law_mean,
            age_target_sd=c.age_sd if c.age_distribution == "normal" else law_sd,
            age_target_mean_actual=law_mean,
            age_target_sd_actual=law_sd,
            occupations=dict(self._occupations.most_common(TOP_OCCUPATIONS))
            if self._occupations
            else None,
            occupation_count=sum(self._occupations.values()),
            bands=dict(self._bands.most_common()) if self._bands else None,
            region_matched=self._matched,
            same_region=self._same,
            region_match_target=self._match_target,
        )
