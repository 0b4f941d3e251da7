"""StatsEngine: who a persona is before the model writes a word of them.

One sample draws, in order: a world region weighted by population, a country of it
weighted by population, a subregion (a real city or province from ``seeds/``), a gender,
a given and a family name native to the place, and an age. The region feeds the prompt
so cultural details stay coherent rather than generic.

Names come from Faker's locale providers where Faker has gendered, Latin-script names
for the place, else from a names list in ``seeds/names``. Faker instances are made once
per locale and reseeded from the caller's ``random.Random`` on every draw, so a sample is
a pure function of that generator's state: the same seed gives the same persona on any
run, whatever was sampled before.

Ages follow N(mean, sd) rounded to whole years and restricted to [age_min, age_max]:
the normal's mass on each allowed year, renormalised (the same law as resampling until
the age fits, without a loop that could spin when the range sits far in a tail). The
config may ask for a mixture of normals or a table of age bands instead
(:func:`age_weights`).

Then an occupation and a band, for the spread of lives the SOC-2602 write-up asks for
while "aiming for the statistical average rather than the dramatic exception". The
occupation is "student" for a share of the young (``student_share`` of those aged
``student_max_age`` or under) and otherwise a job from Faker's list for the place's
locale (its own list where Faker has one, else a locale of the same language, else
en_US), as the job is called there. The band, a life circumstance / socioeconomic
label, is drawn from configurable weights (``persona.bands``).

Last, a temperament and a way of coping with stress from the ``[archetypes]`` tables
(:mod:`soc_async.archetypes`): given the persona's index, a stratified draw that is a
pure function of the run seed and the index (the generator is not touched, so every
earlier draw stays what it was); without one, independent draws from the generator.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from statistics import NormalDist

import msgspec
from faker import Faker
from faker.config import AVAILABLE_LOCALES

from soc_async.archetypes import ArchetypeDraw, shares
from soc_async.config import ArchetypeConfig, PersonaConfig
from soc_async.errors import SeedError
from soc_async.records import PersonaSample
from soc_async.seeds import Gender, NameList, SeedData, load_seed_data


class _Place(msgspec.Struct, frozen=True):
    """One subregion with everything its samples need, resolved once at start."""

    region: str
    country: str
    location: str
    locale: str
    names: str | None  # names-list key, or None for Faker with ``locale``
    romanized: bool
    family_first: bool


def _person_provider(fake: Faker) -> object:
    for provider in fake.providers:
        if provider.__provider__ == "faker.providers.person":
            return provider
    raise LookupError("no person provider")


def _faker_problem(fake: Faker | None, locale: str, romanized: bool) -> str | None:
    """Why Faker cannot give gendered names for ``locale``, or None when it can."""
    if fake is None:
        return f"{locale!r} is not a Faker locale (give a names list instead)"
    provider = _person_provider(fake)
    female = getattr(provider, "first_names_female", None)
    male = getattr(provider, "first_names_male", None)
    if not female or not male or female == male:
        return f"Faker's {locale} names are not split by gender (give a names list instead)"
    if romanized and not hasattr(provider, "first_romanized_names_female"):
        return f"Faker's {locale} has no gendered romanized names"
    return None


def _clean(name: str) -> str:
    """Faker's zh_TW romanizations are upper case ("HSIU-FENG"): write them as names."""
    name = " ".join(name.split())
    return name.title() if name.isupper() and len(name) > 1 else name


class StatsEngine:
    """Samples persona facts from validated seed data; see the module docstring."""

    def __init__(
        self,
        data: SeedData,
        age_min: int = 18,
        age_max: int = 70,
        age_mean: float = 25.0,
        age_sd: float = 5.0,
        *,
        bands: dict[str, float] | None = None,
        student_share: float = 0.35,
        student_max_age: int = 24,
        age_weights: dict[int, float] | None = None,
        archetypes: ArchetypeConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not 0 < age_min <= age_max:
            raise SeedError(f"age range [{age_min}, {age_max}] is empty or not positive")
        if age_sd <= 0:
            raise SeedError(f"age_sd must be positive, got {age_sd}")
        bands = bands if bands is not None else {"": 1.0}
        if not bands or any(w < 0 for w in bands.values()) or sum(bands.values()) <= 0:
            raise SeedError(f"bands need positive weights, got {bands}")
        self.data = data
        self.age_min, self.age_max = age_min, age_max
        self.age_mean, self.age_sd = age_mean, age_sd
        self._bands = list(bands)
        self._band_cum = list(accumulate(bands.values()))
        self.student_share, self.student_max_age = student_share, student_max_age
        self._jobs: dict[str, Faker] = {}  # job providers by locale, made on first use
        # Faker instances are costly to make and carry their own random state: one per
        # locale, reseeded per draw under a lock so that threads cannot interleave a
        # reseed and a draw.
        self._fakers: dict[str, Faker] = {}
        self._lock = threading.Lock()

        # Three nested weighted choices (region, country, subregion) rather than one over
        # all places, so that region shares are exactly the seed file's, at any subregion
        # weights.
        self._regions: list[str] = []
        self._region_cum: list[float] = []
        self._countries: list[list[str]] = []
        self._country_cum: list[list[float]] = []
        self._places: dict[str, list[_Place]] = {}
        self._place_cum: dict[str, list[float]] = {}
        checked: dict[tuple[str, bool], str | None] = {}
        for i, region in enumerate(data.regions):
            self._regions.append(region.name)
            self._countries.append([c.name for c in region.countries])
            self._country_cum.append(list(accumulate(c.population for c in region.countries)))
            for j, country in enumerate(region.countries):
                places = []
                for k, sub in enumerate(country.subregions):
                    locale = sub.locale or country.locale
                    names = sub.names or (country.names if sub.locale is None else None)
                    if names is None:
                        key = (locale, country.romanized)
                        if key not in checked:
                            fake = self._faker(locale) if locale in AVAILABLE_LOCALES else None
                            checked[key] = _faker_problem(fake, locale, country.romanized)
                        if checked[key]:
                            where = f"regions[{i}].countries[{j}]"
                            where += f".subregions[{k}].locale" if sub.locale else ".locale"
                            raise SeedError(f"{data.origin}: {where}: {checked[key]}")
                    places.append(
                        _Place(
                            region=region.name,
                            country=country.name,
                            location=f"{sub.name}, {country.name}",
                            locale=locale,
                            names=names,
                            romanized=country.romanized,
                            family_first=country.family_first,
                        )
                    )
                self._places[country.name] = places
                self._place_cum[country.name] = list(
                    accumulate(s.weight for s in country.subregions)
                )
        self._region_cum = list(
            accumulate(sum(c.population for c in r.countries) for r in data.regions)
        )
        self._ages = list(range(age_min, age_max + 1))
        # A law from the config (mixture, bands) replaces N(age_mean, age_sd).
        self._age_given = age_weights
        if age_weights is not None:
            self._ages = sorted(age_weights)
        self._age_cum = list(accumulate(self._age_weights()))
        self.archetypes = archetypes
        self._temperament: ArchetypeDraw | None = None
        self._coping: ArchetypeDraw | None = None
        if archetypes is not None:
            block = archetypes.block
            self._temperament = ArchetypeDraw(
                shares(archetypes.temperaments), seed=seed, salt="temperament", block=block
            )
            self._coping = ArchetypeDraw(
                shares(archetypes.coping), seed=seed, salt="coping", block=block
            )

    def __repr__(self) -> str:
        countries = sum(len(c) for c in self._countries)
        law = (
            "configured law"
            if self._age_given is not None
            else f"N({self.age_mean}, {self.age_sd})"
        )
        return (
            f"StatsEngine({len(self._regions)} regions, {countries} countries, "
            f"age {law} in [{self._ages[0]}, {self._ages[-1]}])"
        )

    def _faker(self, locale: str) -> Faker:
        fake = self._fakers.get(locale)
        if fake is None:
            # Only the person provider: loading every provider costs ~50 ms a locale.
            fake = self._fakers[locale] = Faker(locale, providers=["faker.providers.person"])
        return fake

    # --- distributions ----------------------------------------------------------------

    def _age_weights(self) -> list[float]:
        if self._age_given is not None:
            return [self._age_given[a] for a in self._ages]
        dist = NormalDist(self.age_mean, self.age_sd)
        weights = [dist.cdf(a + 0.5) - dist.cdf(a - 0.5) for a in self._ages]
        if sum(weights) > 0:
            return weights
        # The whole range sits so far in a tail that every year underflows: the clipped
        # normal puts all its mass on the bound nearest the mean.
        nearest = self.age_min if self.age_mean < self.age_min else self.age_max
        return [1.0 if a == nearest else 0.0 for a in self._ages]

    def region_shares(self) -> dict[str, float]:
        """Each region's probability: its countries' population over all listed."""
        total = self._region_cum[-1]
        previous = 0.0
        shares = {}
        for name, cum in zip(self._regions, self._region_cum, strict=True):
            shares[name] = (cum - previous) / total
            previous = cum
        return shares

    def age_moments(self) -> tuple[float, float]:
        """The exact mean and standard deviation of the ages :meth:`sample` draws."""
        weights = self._age_weights()
        total = sum(weights)
        mean = sum(a * w for a, w in zip(self._ages, weights, strict=True)) / total
        var = sum((a - mean) ** 2 * w for a, w in zip(self._ages, weights, strict=True)) / total
        return mean, var**0.5

    # --- sampling ---------------------------------------------------------------------

    @staticmethod
    def _pick(rng: random.Random, cum: list[float]) -> int:
        # What random.choices does with cum_weights, returning the index: bisect_right
        # never lands on a zero-weight entry.
        return min(bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)

    def sample(self, rng: random.Random, index: int | None = None) -> PersonaSample:
        """One persona's facts, a pure function of ``rng``'s state (which it advances)
        and, for the archetype, of the run seed and ``index`` when one is given."""
        r = self._pick(rng, self._region_cum)
        c = self._pick(rng, self._country_cum[r])
        country = self._countries[r][c]
        place = self._places[country][self._pick(rng, self._place_cum[country])]
        gender: Gender = "female" if rng.random() < 0.5 else "male"
        first, last = self._name(place, gender, rng)
        age = self._ages[self._pick(rng, self._age_cum)]
        # Both draws are always made, so the band does not depend on the branch taken.
        studies = rng.random() < self.student_share and age <= self.student_max_age
        job = self._job(place.locale, rng.getrandbits(64))
        band = self._bands[self._pick(rng, self._band_cum)]
        temperament, coping = self._archetype(rng, index)
        return PersonaSample(
            region=place.region,
            country=place.country,
            subregion=place.location,
            gender=gender,
            first_name=first,
            last_name=last,
            name=f"{last} {first}" if place.family_first else f"{first} {last}",
            age=age,
            locale=place.locale,
            occupation="student" if studies else job,
            band=band,
            temperament=temperament,
            coping=coping,
        )

    def _archetype(self, rng: random.Random, index: int | None) -> tuple[str, str]:
        if self._temperament is None or self._coping is None:
            return "", ""
        if index is None:
            return self._temperament.draw_rng(rng), self._coping.draw_rng(rng)
        return self._temperament.draw(index), self._coping.draw(index)

    def band_shares(self) -> dict[str, float]:
        """Each band's probability, from the configured weights."""
        total = self._band_cum[-1]
        previous = 0.0
        shares = {}
        for name, cum in zip(self._bands, self._band_cum, strict=True):
            shares[name] = (cum - previous) / total
            previous = cum
        return shares

    def _job(self, locale: str, seed: int) -> str:
        with self._lock:
            fake = self._jobs.get(locale)
            if fake is None:
                fake = self._jobs[locale] = Faker(
                    job_locale(locale), providers=["faker.providers.job"]
                )
            fake.seed_instance(seed)
            return " ".join(fake.job().split())

    def _name(self, place: _Place, gender: Gender, rng: random.Random) -> tuple[str, str]:
        if place.names is not None:
            names: NameList = self.data.names[place.names]
            return rng.choice(names.given(gender)), rng.choice(names.family(gender))
        seed = rng.getrandbits(64)
        with self._lock:
            fake = self._faker(place.locale)
            fake.seed_instance(seed)
            if place.romanized:
                given = (
                    fake.first_romanized_name_female
                    if gender == "female"
                    else fake.first_romanized_name_male
                )
                family = fake.last_romanized_name
            elif gender == "female":
                given, family = fake.first_name_female, fake.last_name_female
            else:
                given, family = fake.first_name_male, fake.last_name_male
            return _clean(_draw(given)), _clean(_draw(family))


_NAME_PUNCTUATION = frozenset(" -'’.")


def _draw(draw: Callable[[], str], tries: int = 20) -> str:
    """A name from ``draw`` made only of letters and name punctuation.

    Some Faker lists carry mangled entries (tr_TR has "N˜zamett˜n"); redrawing from the
    same seeded instance skips them and stays deterministic.
    """
    name = draw()
    for _ in range(tries):
        if name.strip() and all(ch.isalpha() or ch in _NAME_PUNCTUATION for ch in name):
            break
        name = draw()
    return name


def job_locale(locale: str) -> str:
    """The Faker locale whose job list serves ``locale``: itself when Faker knows it
    (Faker falls back to en_US where it has no job list of its own), else one of the same
    language, else en_US."""
    if locale in AVAILABLE_LOCALES:
        return locale
    language = locale.split("_")[0]
    same = sorted(loc for loc in AVAILABLE_LOCALES if loc.split("_")[0] == language)
    return same[0] if same else "en_US"


def age_weights(config: PersonaConfig) -> dict[int, float]:
    """The relative weight of each whole age in [age_min, age_max] under the configured
    law (``persona.age_distribution``), not normalised; the sampler draws from these.

    A normal (one, or each of a mixture) gives a year its mass on [age - 0.5, age + 0.5),
    so clipping is the same law as redrawing until the age fits, without a loop that could
    spin when the range sits far in a tail; a band spreads its weight evenly on its years.
    """
    ages = range(config.age_min, config.age_max + 1)
    if config.age_distribution == "bands":
        out = dict.fromkeys(ages, 0.0)
        for band in config.age_bands:
            for age in range(band.min, band.max + 1):
                out[age] += band.weight / (band.max - band.min + 1)
        return out
    if config.age_distribution == "mixture":
        parts = [(c.weight, c.mean, c.sd) for c in config.age_mixture]
    else:
        parts = [(1.0, config.age_mean, config.age_sd)]
    total = sum(w for w, _, _ in parts)
    weights = [0.0] * len(ages)
    for weight, mean, sd in parts:
        dist = NormalDist(mean, sd)
        # A lone normal keeps its unscaled masses: the default's draws stay what they were.
        scale = weight / total if len(parts) > 1 else 1.0
        for k, a in enumerate(ages):
            weights[k] += scale * (dist.cdf(a + 0.5) - dist.cdf(a - 0.5))
    if sum(weights) > 0:
        return dict(zip(ages, weights, strict=True))
    # Every year underflows (the range sits far in a tail): all the mass goes to the bound
    # nearest the law's mean.
    mean = sum(w * m for w, m, _ in parts) / total
    nearest = config.age_min if mean < config.age_min else config.age_max
    return {a: 1.0 if a == nearest else 0.0 for a in ages}


def age_law(config: PersonaConfig) -> dict[int, float]:
    """The share of personas expected at each whole age: :func:`age_weights` normalised."""
    weights = age_weights(config)
    total = sum(weights.values())
    return {a: w / total for a, w in weights.items()}


def load_stats_engine(
    config: PersonaConfig, archetypes: ArchetypeConfig | None = None, seed: int = 0
) -> StatsEngine:
    """The engine over the packaged seed data, with the config's age law and bands, and
    the archetype tables when given (drawn per index under the run ``seed``)."""
    return StatsEngine(
        load_seed_data(),
        age_min=config.age_min,
        age_max=config.age_max,
        age_mean=config.age_mean,
        age_sd=config.age_sd,
        bands=config.bands,
        student_share=config.student_share,
        student_max_age=config.student_max_age,
        age_weights=age_weights(config),
        archetypes=archetypes,
        seed=seed,
    )


__all__ = ["StatsEngine", "age_law", "age_weights", "job_locale", "load_stats_engine"]
