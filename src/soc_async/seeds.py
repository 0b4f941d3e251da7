"""The seed data of the top-level ``seeds/`` folder: regions, names lists, hand-written cards.

The folder is found through :func:`soc_async.resources.data_dir`, so an installed
soc-async (which carries it inside the wheel) finds it without the source tree. Loaders
validate what they read and raise ``SeedError`` naming the file and the key, so a bad
edit to ``regions.toml`` stops a run before anything is written.

    seeds/regions.toml        world regions, countries (population weights), subregions
    seeds/names/<key>.json    names lists for countries Faker has no usable locale for
    seeds/personas/*.md       hand-written `<character>` cards that seed the persona ring
    seeds/README.md           sources, and the year of the population figures
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import Meta

from soc_async.errors import SeedError, validation_key
from soc_async.resources import data_dir

Name = Annotated[str, Meta(min_length=1)]
Weight = Annotated[float, Meta(gt=0)]
Gender = Literal["female", "male"]
GENDERS: tuple[str, ...] = ("female", "male")

_T = TypeVar("_T")


class _Seed(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Seed files refuse keys they do not know: a typo is an error, not a silent default."""


class Subregion(_Seed):
    """A real place inside a country: a city or a province."""

    name: Name  # as it reads before the country: "Wuhan, Hubei"
    weight: Weight  # relative size within the country (roughly millions of people)
    locale: str | None = None  # overrides the country's, where names differ by place
    names: str | None = None  # overrides the country's names list


class Country(_Seed):
    name: Name
    population: Weight  # millions, the year in RegionsFile.population_year: its weight
    locale: Name  # Faker locale for names (unless ``names``), and the tag recorded
    subregions: Annotated[list[Subregion], Meta(min_length=1)]
    names: str | None = None  # key of names/<key>.json, used instead of Faker
    romanized: bool = False  # Faker's romanized names (ja_JP, zh_TW) over native script
    family_first: bool = False  # display name "Family Given", as written in English


class Region(_Seed):
    name: Name
    countries: Annotated[list[Country], Meta(min_length=1)]


class RegionsFile(_Seed):
    source: Name  # where the population figures come from
    population_year: int
    regions: Annotated[list[Region], Meta(min_length=1)]


class NameList(_Seed):
    """Given names by gender and family names, for one names/<key>.json file."""

    female: Annotated[list[Name], Meta(min_length=1)]
    male: Annotated[list[Name], Meta(min_length=1)]
    last: list[Name] = []  # family names for both genders, or:
    last_female: list[Name] = []  # gendered family names (Ivanova / Ivanov)
    last_male: list[Name] = []
    note: str = ""  # where the names come from

    def given(self, gender: str) -> list[str]:
        return self.female if gender == "female" else self.male

    def family(self, gender: str) -> list[str]:
        gendered = self.last_female if gender == "female" else self.last_male
        return gendered or self.last


class SeedData(msgspec.Struct, kw_only=True):
    """Validated regions and every names list they refer to."""

    origin: str  # the regions file, for error messages about its keys
    source: str
    population_year: int
    regions: list[Region]
    names: dict[str, NameList]


def _root() -> Path:
    return data_dir("seeds")


def _decode(raw: bytes, kind: type[_T], origin: str, fmt: Literal["toml", "json"]) -> _T:
    decode = msgspec.toml.decode if fmt == "toml" else msgspec.json.decode
    try:
        return decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        key, what = validation_key(exc)
        raise SeedError(f"{origin}: {key}: {what}") from exc
    except msgspec.DecodeError as exc:
        raise SeedError(f"{origin}: not valid {fmt.upper()} ({exc})") from exc


def _read(path: Path, origin: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SeedError(f"{origin}: cannot read seed file ({exc.strerror or exc})") from exc


def _check_unique(values: list[str], origin: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise SeedError(f"{origin}: {key}[{i}].name: {value!r} appears twice")
        seen.add(value)


def load_names(key: str, folder: Path | None = None) -> NameList:
    """The names list ``names/<key>.json``, validated."""
    base = folder if folder is not None else _root() / "names"
    origin = f"{'seeds/names' if folder is None else folder}/{key}.json"
    if not re.fullmatch(r"[a-z0-9_]+", key):
        raise SeedError(f"{origin}: names key must be lowercase letters, digits or _")
    data = _decode(_read(base / f"{key}.json", origin), NameList, origin, "json")
    if not data.last and not (data.last_female and data.last_male):
        raise SeedError(f"{origin}: last: give 'last', or both 'last_female' and 'last_male'")
    return data


def load_seed_data(path: str | os.PathLike[str] | None = None) -> SeedData:
    """The regions file (the packaged one when ``path`` is None) and its names lists.

    Names lists are looked up in ``names/`` beside the regions file. Raises ``SeedError``
    naming the file and the key of the first problem found.
    """
    if path is None:
        regions_path: Path = _root() / "regions.toml"
        names_dir: Path = _root() / "names"
        origin = "seeds/regions.toml"
    else:
        regions_path = Path(path)
        names_dir = regions_path.parent / "names"
        origin = str(regions_path)
    data = _decode(_read(regions_path, origin), RegionsFile, origin, "toml")
    _check_unique([r.name for r in data.regions], origin, "regions")
    names: dict[str, NameList] = {}
    countries: list[str] = []
    for i, region in enumerate(data.regions):
        for j, country in enumerate(region.countries):
            countries.append(country.name)
            here = f"regions[{i}].countries[{j}]"
            _check_unique([s.name for s in country.subregions], origin, f"{here}.subregions")
            keys = [(f"{here}.names", country.names)] + [
                (f"{here}.subregions[{k}].names", s.names) for k, s in enumerate(country.subregions)
            ]
            for key_path, key in keys:
                if key is None or key in names:
                    continue
                try:
                    names[key] = load_names(key, None if path is None else names_dir)
                except SeedError as exc:
                    raise SeedError(f"{origin}: {key_path}: {exc}") from exc
    seen: set[str] = set()
    for name in countries:
        if name in seen:
            raise SeedError(f"{origin}: regions: country {name!r} is listed twice")
        seen.add(name)
    return SeedData(
        origin=origin,
        source=data.source,
        population_year=data.population_year,
        regions=data.regions,
        names=names,
    )


def cards(folder: str, suffix: str = ".md") -> list[str]:
    """The hand-written texts in ``seeds/<folder>/*<suffix>``, sorted by file name.

    Raises ``SeedError`` when the folder cannot be read or holds none.
    """
    base = _root() / folder
    try:
        files = sorted((f for f in base.iterdir() if f.name.endswith(suffix)), key=lambda f: f.name)
        texts = [f.read_text(encoding="utf-8").strip() for f in files]
    except OSError as exc:
        raise SeedError(f"seeds/{folder}: cannot read seed cards ({exc})") from exc
    if not texts:
        raise SeedError(f"seeds/{folder}: no seed cards (*{suffix})")
    return texts


def persona_cards() -> list[str]:
    """The hand-written `<character>` cards that seed the persona few-shot ring."""
    return cards("personas")


__all__ = [
    "GENDERS",
    "Country",
    "Gender",
    "NameList",
    "Region",
    "RegionsFile",
    "SeedData",
    "Subregion",
    "cards",
    "load_names",
    "load_seed_data",
    "persona_cards",
]
