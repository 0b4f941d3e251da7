"""StatsEngine and the seed loader: distributions, determinism, validation of seed files."""

from __future__ import annotations

import json
import math
import random
import statistics
import textwrap
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from soc_async.config import PersonaConfig
from soc_async.errors import SeedError
from soc_async.seeds import load_seed_data
from soc_async.stats import PersonaSample, StatsEngine, load_stats_engine

N = 10_000


@pytest.fixture(scope="module")
def engine() -> StatsEngine:
    return load_stats_engine(PersonaConfig())


@pytest.fixture(scope="module")
def samples(engine: StatsEngine) -> list[PersonaSample]:
    rng = random.Random(20240601)
    return [engine.sample(rng) for _ in range(N)]


def test_packaged_seeds_cover_the_world() -> None:
    """The shipped regions file has >= 40 countries spread over all eleven world regions."""
    data = load_seed_data()
    regions = {r.name for r in data.regions}
    assert regions == {
        "North America",
        "Latin America & Caribbean",
        "Western Europe",
        "Eastern Europe",
        "Middle East & North Africa",
        "Sub-Saharan Africa",
        "South Asia",
        "East Asia",
        "Southeast Asia",
        "Oceania",
        "Central Asia",
    }
    assert sum(len(r.countries) for r in data.regions) >= 40
    assert data.population_year == 2023
    assert "World Population Prospects" in data.source


def test_region_shares_match_population_weights(
    engine: StatsEngine, samples: list[PersonaSample]
) -> None:
    """Over 10,000 samples every region's share is within 4.5 standard errors of its weight."""
    counts = Counter(s.region for s in samples)
    shares = engine.region_shares()
    assert math.isclose(sum(shares.values()), 1.0)
    for region, p in shares.items():
        se = math.sqrt(p * (1 - p) / N)
        assert abs(counts[region] / N - p) <= 4.5 * se + 0.002, region


def test_age_mean_and_sd_match_the_clipped_normal(
    engine: StatsEngine, samples: list[PersonaSample]
) -> None:
    """Sample ages stay in range, and their mean and sd match the law's within tolerance."""
    ages = [s.age for s in samples]
    assert min(ages) >= 18 and max(ages) <= 70
    mean, sd = engine.age_moments()
    # N(25, 5) cut at 18 and rounded: the mean moves up a little, the spread narrows.
    assert 25.0 < mean < 26.5 and 4.0 < sd < 5.0
    assert abs(statistics.fmean(ages) - mean) < 0.15
    assert abs(statistics.pstdev(ages) - sd) < 0.15


def test_age_law_is_the_plain_normal_when_the_range_is_wide() -> None:
    """With a range far wider than the normal, ages have the configured mean and sd."""
    wide = StatsEngine(load_seed_data(), age_min=1, age_max=120, age_mean=40.0, age_sd=8.0)
    mean, sd = wide.age_moments()
    assert abs(mean - 40.0) < 1e-3
    assert abs(sd - math.sqrt(64 + 1 / 12)) < 1e-3  # rounding to years adds 1/12
    rng = random.Random(5)
    ages = [wide.sample(rng).age for _ in range(3000)]
    assert abs(statistics.fmean(ages) - 40.0) < 0.5


def test_age_range_in_a_far_tail_does_not_hang() -> None:
    """A range far from the mean puts every age on its nearest bound instead of looping."""
    far = StatsEngine(load_seed_data(), age_min=90, age_max=95, age_mean=25.0, age_sd=1.0)
    rng = random.Random(1)
    assert {far.sample(rng).age for _ in range(50)} == {90}


def test_sampling_is_deterministic_per_seed(engine: StatsEngine) -> None:
    """The same seed gives the same persona, from a fresh engine and after other draws."""
    first = engine.sample(random.Random("7:persona:3"))
    busy = random.Random(99)
    for _ in range(25):
        engine.sample(busy)
    assert engine.sample(random.Random("7:persona:3")) == first
    fresh = load_stats_engine(PersonaConfig())
    assert fresh.sample(random.Random("7:persona:3")) == first
    assert engine.sample(random.Random("7:persona:4")) != first


def test_sample_fields_are_consistent(engine: StatsEngine, samples: list[PersonaSample]) -> None:
    """Location ends with the country; the display name is built from given and family name."""
    by_country = {c.name: c for r in load_seed_data().regions for c in r.countries}
    for s in samples[:2000]:
        assert s.gender in ("female", "male")
        assert s.subregion.endswith(", " + s.country)
        country = by_country[s.country]
        expected = (
            f"{s.last_name} {s.first_name}"
            if country.family_first
            else f"{s.first_name} {s.last_name}"
        )
        assert s.name == expected
        assert s.first_name.strip() and s.last_name.strip()
        assert s.name == s.name.strip() and "  " not in s.name


def test_names_are_latin_script_and_not_shouted(samples: list[PersonaSample]) -> None:
    """Names use Latin letters (diacritics allowed), never Faker's upper-case romanizations."""
    for s in samples:
        for ch in s.name:
            assert ch in " -'.’" or ch.isalpha(), (s.name, s.country)
            if ch.isalpha():
                assert "LATIN" in unicodedata.name(ch), (s.name, s.country)
        assert not (s.name.isupper() and len(s.name) > 3), s.name


def test_gendered_family_names_follow_the_gender(samples: list[PersonaSample]) -> None:
    """Russian women get the feminine family-name form, men the masculine one."""
    russians = [s for s in samples if s.country == "Russia"]
    assert russians
    for s in russians:
        assert s.last_name.endswith("a") == (s.gender == "female"), s


def test_subregion_locale_override(samples: list[PersonaSample]) -> None:
    """Places that set their own locale record it (Lagos is Yoruba, Kano is Hausa)."""
    locales = {s.subregion: s.locale for s in samples if s.country == "Nigeria"}
    assert locales.get("Lagos, Lagos State, Nigeria") == "yo_NG"
    assert locales.get("Kano, Kano State, Nigeria") == "ha_NG"


# --- loader validation -----------------------------------------------------------------

_GOOD = """\
source = "test"
population_year = 2023

[[regions]]
name = "Somewhere"

[[regions.countries]]
name = "Testland"
population = 10.0
locale = "xx_XX"
names = "testnames"
subregions = [{ name = "Capital", weight = 1.0 }]
"""

_NAMES = {"female": ["Ana"], "male": ["Ben"], "last": ["Cole"]}


def _write(tmp_path: Path, regions: str, names: dict | None = None) -> Path:
    (tmp_path / "names").mkdir(exist_ok=True)
    if names is not None:
        (tmp_path / "names" / "testnames.json").write_text(json.dumps(names))
    path = tmp_path / "regions.toml"
    path.write_text(textwrap.dedent(regions))
    return path


def test_loader_accepts_a_minimal_file(tmp_path: Path) -> None:
    """A small valid file with a names list loads and samples from that list."""
    data = load_seed_data(_write(tmp_path, _GOOD, _NAMES))
    engine = StatsEngine(data)
    s = engine.sample(random.Random(1))
    assert s.subregion == "Capital, Testland"
    assert s.name in ("Ana Cole", "Ben Cole")
    assert s.locale == "xx_XX"


@pytest.mark.parametrize(
    ("edit", "names", "key"),
    [
        (lambda t: t.replace("population = 10.0", "population = -1"), _NAMES, "population"),
        (lambda t: t.replace("population = 10.0", 'population = "many"'), _NAMES, "population"),
        (lambda t: t.replace('locale = "xx_XX"\n', ""), _NAMES, "locale"),
        (lambda t: t.replace("subregions = [{ name", "subregion = [{ name"), _NAMES, "subregion"),
        (lambda t: t.replace('[{ name = "Capital", weight = 1.0 }]', "[]"), _NAMES, "subregions"),
        (lambda t: t.replace('"testnames"', '"nosuchlist"'), _NAMES, "names"),
        (lambda t: t, {"female": ["Ana"], "male": ["Ben"]}, "last"),
        (lambda t: t, {"female": [], "male": ["Ben"], "last": ["Cole"]}, "female"),
        (lambda t: t + t[t.index("[[regions.countries]]") :], _NAMES, "Testland"),
        (lambda t: t.replace("[[regions]]", "[[regions"), _NAMES, "TOML"),
    ],
)
def test_loader_names_file_and_key_of_a_problem(tmp_path: Path, edit, names, key: str) -> None:
    """Malformed seed data raises SeedError naming the regions file and the bad key."""
    path = _write(tmp_path, edit(_GOOD), names)
    with pytest.raises(SeedError) as info:
        load_seed_data(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message


def test_engine_refuses_a_locale_faker_cannot_name(tmp_path: Path) -> None:
    """A country without a names list needs a Faker locale with names split by gender."""
    for locale, why in (("xx_XX", "not a Faker locale"), ("en_PK", "not split by gender")):
        text = _GOOD.replace('names = "testnames"\n', "").replace("xx_XX", locale)
        data = load_seed_data(_write(tmp_path, text))
        with pytest.raises(SeedError) as info:
            StatsEngine(data)
        assert "regions[0].countries[0].locale" in str(info.value)
        assert why in str(info.value)


# --- occupation and band ----------------------------------------------------------------


def test_band_shares_match_the_configured_weights(
    engine: StatsEngine, samples: list[PersonaSample]
) -> None:
    """Bands follow persona.bands: each share within 2 points of its weight over 10,000."""
    shares = engine.band_shares()
    assert shares == pytest.approx(
        {k: v / sum(PersonaConfig().bands.values()) for k, v in PersonaConfig().bands.items()}
    )
    counts = Counter(s.band for s in samples)
    for band, share in shares.items():
        assert abs(counts[band] / N - share) < 0.02, band


def test_occupation_is_a_local_job_or_study(samples: list[PersonaSample]) -> None:
    """Every persona has an occupation; students are young (student_max_age) and about
    student_share of them; jobs come from the locale's own list where Faker has one."""
    from faker import Faker

    config = PersonaConfig()
    assert all(s.occupation.strip() for s in samples)
    young = [s for s in samples if s.age <= config.student_max_age]
    students = [s for s in samples if s.occupation == "student"]
    assert all(s.age <= config.student_max_age for s in students)
    assert abs(len(students) / len(young) - config.student_share) < 0.03
    jobs = {
        locale: {
            " ".join(j.split())
            for j in Faker(locale, providers=["faker.providers.job"]).providers[0].jobs
        }
        for locale in ("de_DE", "pt_BR", "en_US")
    }
    german = [s for s in samples if s.locale == "de_DE" and s.occupation != "student"]
    brazilian = [s for s in samples if s.locale == "pt_BR" and s.occupation != "student"]
    assert german and brazilian
    assert all(s.occupation in jobs["de_DE"] for s in german)
    assert all(s.occupation in jobs["pt_BR"] for s in brazilian)
    assert len({s.occupation for s in samples}) > 500


def test_job_locale_falls_back_by_language_then_to_english() -> None:
    """A locale Faker lacks uses one of its language, else en_US."""
    from soc_async.stats import job_locale

    assert job_locale("de_DE") == "de_DE"
    assert job_locale("fr_CD").startswith("fr_")
    assert job_locale("kk_KZ") == "en_US"


def test_bands_are_configurable() -> None:
    """A config with one band gives every persona that band."""
    engine = load_stats_engine(PersonaConfig(bands={"getting by": 1.0}))
    rng = random.Random(3)
    assert {engine.sample(rng).band for _ in range(50)} == {"getting by"}
