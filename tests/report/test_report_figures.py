"""Every figure of the report on the hand-built run directory, against answers worked
out by hand from handmade_run.py."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec
import pytest
from handmade_run import C, P, write_run

from soc_async.config import PersonaConfig, from_dict
from soc_async.report import build_report
from soc_async.report.ages import AgesFigure
from soc_async.report.model import Report
from soc_async.stats import age_law


def normal(mean: float, sd: float, lo: int, hi: int) -> dict[int, float]:
    keys = {"age_mean": mean, "age_sd": sd, "age_min": lo, "age_max": hi}
    return age_law(PersonaConfig(**keys))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return build_report(write_run(tmp_path_factory.mktemp("handmade") / "run"))


def test_meta_names_the_run_its_config_hash_and_version(report: Report) -> None:
    """The JSON carries seed, shard, a sha256 config hash and the soc-async version."""
    m = report.meta
    assert (m.seed, m.shard, m.merged) == (5, "0/1", False)
    assert m.config_hash is not None and len(m.config_hash) == 64
    assert m.soc_async_version and m.config_source.endswith("config.toml")
    assert m.torn_lines == []


def test_counts_and_failures(report: Report) -> None:
    """Records per stage, targets, failures by stage and reason, tokens and models."""
    c = report.counts
    assert (c.personas, c.experiences, c.conversations) == (4, 3, 3)
    assert c.targets == {"personas": 4, "experiences": 3, "chats": 4}
    assert c.failures == {"personas": 1, "chats": 1}
    assert c.failure_reasons == {
        "chats": {"request:timeout": 1},
        "personas": {"retries_exhausted:card_sections": 1},
    }
    assert c.tokens["personas"] == {"prompt": 460, "completion": 260, "cached": 0}
    assert c.tokens["experiences"] == {"prompt": 60, "completion": 30, "cached": 0}
    assert c.tokens["chats"] == {"prompt": 2200, "completion": 220, "cached": 500}
    assert c.models == {
        "personas": {"m-a": 3, "m-b": 1},
        "experiences": {"m-a": 3},
        "chats": {"m-a": 2, "m-b": 1},
    }
    assert c.retries == {"state_mismatch": 1, "gap_too_long": 2}


def test_rules_pass_on_a_valid_run(report: Report) -> None:
    """Every hand-built record obeys every rule: 100%, nothing by rule, no examples."""
    r = report.rules
    assert (r.conversations.hits, r.conversations.total) == (3, 3)
    assert (r.personas.hits, r.experiences.hits) == (4, 3)
    assert r.by_rule == {} and r.examples == []


def test_demographics(report: Report) -> None:
    """Regions, countries (from the subregion), genders, ages 20/30/25/25 (mean 25, sd
    sqrt(12.5)), the target law, and pairing: 1 of 3 flagged, 1 of 3 same region."""
    d = report.demographics
    assert d.regions == {"Europe": 2, "East Asia": 1, "Africa": 1}
    assert d.countries == {"Portugal": 1, "France": 1, "China": 1, "Nigeria": 1}
    assert d.genders == {"female": 2, "male": 2}
    assert d.ages == {"20": 1, "25": 2, "30": 1}
    assert d.age.mean == pytest.approx(25.0) and d.age.sd == pytest.approx(math.sqrt(12.5))
    assert sum(d.age_target.values()) == pytest.approx(1.0)
    assert d.age_target["25"] == pytest.approx(normal(25, 5, 18, 70)[25])
    assert d.occupations is None and d.bands is None  # not recorded by this run
    assert (d.region_matched.hits, d.region_matched.total) == (1, 3)
    assert (d.same_region.hits, d.same_region.total) == (1, 3)


def test_age_law_is_the_clipped_rounded_normal() -> None:
    """The target law sums to 1 over the allowed ages and is N(mean, sd)'s mass per year,
    renormalised: symmetric about the mean when the range is."""
    law = normal(25, 5, 15, 35)
    assert sum(law.values()) == pytest.approx(1.0)
    assert law[20] == pytest.approx(law[30]) and law[25] == max(law.values())
    assert set(law) == set(range(15, 36))


def test_pacing_against_the_configured_distribution(report: Report) -> None:
    """Messages per turn by cadence (realtime 2, 2, 3; delayed 1, 1; async 1 x5, 2)
    against the default pacing; worst z for realtime is the missing one-message turns:
    0.45 / sqrt(0.45 * 0.55 / 3)."""
    rows = {r.cadence: r for r in report.pacing.rows}
    assert list(rows) == ["realtime", "delayed", "async"] and report.pacing.configured
    rt = rows["realtime"]
    assert rt.turns == 3 and rt.counts == {"1": 0, "2": 2, "3": 1}
    assert rt.shares["2"] == pytest.approx(2 / 3)
    assert rt.target == pytest.approx({"1": 0.45, "2": 0.35, "3": 0.20})
    assert rt.worst_z == pytest.approx(0.45 / math.sqrt(0.45 * 0.55 / 3))
    assert rows["delayed"].counts == {"1": 2, "2": 0, "3": 0}
    assert rows["async"].counts == {"1": 5, "2": 1, "3": 0}
    assert rows["async"].target["1"] == pytest.approx(0.85)


def test_age_coverage_by_decade(report: Report) -> None:
    """Ages 20, 25, 25, 30 against N(25, 5) on 18..70, by decade cut at the range."""
    a = report.ages
    assert a.law == "N(25, 5) on 18..70" and a.personas == 4
    bands = {b.band: b for b in a.bands}
    assert list(bands)[:3] == ["18-19", "20-29", "30-39"] and list(bands)[-1] == "70-70"
    assert (bands["20-29"].personas, bands["30-39"].personas) == (3, 1)
    law = normal(25, 5, 18, 70)
    assert bands["20-29"].target == pytest.approx(sum(law[a] for a in range(20, 30)))
    assert a.total_variation == pytest.approx(
        sum(abs({20: 0.25, 25: 0.5, 30: 0.25}.get(k, 0) - w) for k, w in law.items()) / 2
    )


def test_age_coverage_by_configured_band() -> None:
    """With a band table the rows are its bands; an age the law cannot draw is counted
    apart."""
    bands = [{"min": 18, "max": 29, "weight": 3}, {"min": 40, "max": 49, "weight": 1}]
    config = from_dict({"persona": {"age_distribution": "bands", "age_bands": bands}}).persona
    figure = AgesFigure(config)
    for age in (20, 21, 45, 33):
        figure.persona(msgspec.convert({"meta": {"age": age}}, _AgeOnly))  # type: ignore[arg-type]
    a = figure.result()
    assert [(b.band, b.personas) for b in a.bands] == [
        ("18-29", 2),
        ("40-49", 1),
        ("outside the law", 1),
    ]
    assert a.bands[0].target == pytest.approx(0.75) and a.bands[0].share == pytest.approx(0.5)
    assert a.law == "bands 18-29: 3, 40-49: 1"


class _Meta(msgspec.Struct):
    age: int


class _AgeOnly(msgspec.Struct):
    meta: _Meta


def test_experience_mix(report: Report) -> None:
    """Styles, cadences, topics per experience, budgets, events, hints, start months."""
    e = report.experiences
    assert e.styles == {"structured": 1, "freeform": 1, "semi-structured": 1}
    assert e.cadences == {"realtime": 1, "delayed": 1, "async": 1}
    assert e.topics == {"1": 1, "2": 2}
    assert e.budgets == {"1": 3, "2": 2}
    assert e.roadmap_turns.mean == pytest.approx(7 / 3)
    assert e.events == {"2": 1, "3": 1, "5": 1}
    assert (e.style_hinted.hits, e.style_hinted.total) == (1, 3)
    assert e.initial_state_derived.hits == 0
    assert e.start_months == {"2026-04": 1}
    assert e.models == {"m-a": 3}


def test_chat_shape(report: Report) -> None:
    """Turns (3, 2, 6), messages per turn by cadence, types, gaps by cadence in their
    bins, endings, 1 instant event in 11 turns, summaries, tag endings with slots spent."""
    s = report.shape
    assert s.turns == {"2": 1, "3": 1, "6": 1}
    assert s.messages_per_turn == {
        "realtime": {"2": 2, "3": 1},
        "delayed": {"1": 2},
        "async": {"1": 5, "2": 1},
    }
    assert s.message_types == {"text": 15, "image": 1}
    # realtime gaps 2, 3, 0, 5, 30, 0 minutes; delayed 240; async 0 then 1440 five times.
    edges = s.gaps["realtime"].edges
    assert edges[:8] == [0, 1, 2, 5, 10, 15, 30, 60]
    assert s.gaps["realtime"].counts[:8] == [2, 0, 2, 1, 0, 0, 1, 0]
    assert s.gaps["delayed"].counts[edges.index(240)] == 1 and sum(s.gaps["delayed"].counts) == 1
    assert s.gaps["async"].counts[0] == 1 and s.gaps["async"].counts[edges.index(1440)] == 5
    assert s.ended_by == {"max_turns": 2, "exhausted": 1}
    assert (s.instant_events.hits, s.instant_events.total) == (1, 11)
    assert (s.summaries.hits, s.summaries.total) == (1, 3)
    assert (s.summarized_when_long.hits, s.summarized_when_long.total) == (1, 1)
    assert s.summary_words.mean == 7
    assert (s.ending_when_spent.hits, s.ending_when_spent.total) == (1, 1)


def test_naturalness(report: Report) -> None:
    """MTLD of c0 (66 distinct words: MTLD = 66), the two short ones left out; p0's side
    (64 distinct words) the one persona MTLD; distinct-1 = 77/84, distinct-2 = 64/69;
    15 text messages of 84 words; 3-message turns 1 of 3 in realtime, none elsewhere."""
    n = report.naturalness
    assert (n.mtld.n, n.mtld.mean, n.mtld_short) == (1, 66.0, 2)
    assert (n.mtld_persona.n, n.mtld_persona.mean) == (1, 64.0)
    assert n.distinct_1 == pytest.approx(77 / 84) and n.distinct_2 == pytest.approx(64 / 69)
    assert not n.distinct_estimated
    assert (n.words, n.message_words.n, n.message_words.max) == (84, 15, 55)
    assert n.message_words.mean == pytest.approx(84 / 15)
    three = {k: (v.hits, v.total) for k, v in n.three_messages.items()}
    assert three == {"realtime": (1, 3), "delayed": (0, 2), "async": (0, 6)}


def test_duplicates(report: Report) -> None:
    """p3's card copies p2's (Jaccard 0.94), c2 opens with c0's words; experiences differ."""
    d = report.duplicates
    assert (d.personas.items, d.personas.near_duplicates) == (4, 1)
    assert d.personas.examples == [[P[3], P[2]]]
    assert (d.experiences.items, d.experiences.near_duplicates) == (3, 0)
    assert d.openings.examples == [[C[2], C[0]]] and d.openings.rate == pytest.approx(1 / 3)


def test_drift(report: Report) -> None:
    """Four personas at iterations 0-3: four windows of one; p0's traits are four words
    (patient, children, stubborn, money), so its window's top 20 hold all of them. Coping
    words come only from sentences about stress or coping: p2 and p3 share "Under stress
    she cleans the kitchen at midnight", so those words lead, and "Cries at films" is out."""
    dr = report.drift
    assert [(w.start, w.end, w.personas) for w in dr.windows] == [(i, i, 1) for i in range(4)]
    assert dr.windows[0].traits_words == 4 and dr.windows[0].traits_top_share == 1.0
    assert dr.top_traits[0] == "patient"  # p0, p2, p3
    assert dr.top_coping[:4] == ["cleans", "kitchen", "midnight", "stress"]  # ties: a-z
    assert "cries" not in dr.top_coping and "copes" in dr.top_coping


def test_glance_rows_state_targets(report: Report) -> None:
    """The at-a-glance table: rules 100% within, ages against the clipped law, region
    match 1/3 within (3 standard errors of 3 pairs is wide), MTLD beside SOC-2508's."""
    rows = {g.key: g for g in report.glance}
    assert rows["rules_pass"].ok is True and rows["rules_pass"].target == "100%"
    assert rows["conversations"].ok is False  # 3 of a target of 4
    assert rows["age_mean"].value == pytest.approx(25.0) and rows["age_mean"].ok is True
    assert rows["region_matched"].target == "50.0%" and rows["region_matched"].ok is True
    assert rows["instant_events"].value == pytest.approx(1 / 11)
    assert rows["ending_when_spent"].ok is True
    assert "159.8" in rows["mtld"].target and rows["mtld"].ok is None
    assert rows["near_duplicates_personas"].value == pytest.approx(0.25)


def test_json_round_trip(report: Report) -> None:
    """report.json decodes back to the same report."""
    data = msgspec.json.encode(report)
    assert msgspec.json.decode(data, type=Report) == report


def test_a_merged_directory_and_a_torn_line(tmp_path: Path) -> None:
    """A merge's output (no config.toml, merge.json naming the shard) is read with the
    shard's config; a torn last line is left out and named."""
    shard = write_run(tmp_path / "shard")
    merged = tmp_path / "merged"
    merged.mkdir()
    for name in ("run.json", "personas.jsonl", "experiences.jsonl", "failures.jsonl"):
        (merged / name).write_bytes((shard / name).read_bytes())
    lines = (shard / "conversations.jsonl").read_bytes()
    (merged / "conversations.jsonl").write_bytes(lines + b'{"kind": "conversa')
    inputs = {"0/1": str(shard.resolve())}
    (merged / "merge.json").write_bytes(msgspec.json.encode({"inputs": inputs}))
    r = build_report(merged)
    assert r.meta.merged and r.meta.config_source == str(shard.resolve() / "config.toml")
    assert r.meta.torn_lines == ["conversations.jsonl:4"]
    assert r.counts.conversations == 3 and r.rules.conversations.value == 1.0
    (merged / "merge.json").write_bytes(msgspec.json.encode({"inputs": {"0/1": "/gone"}}))
    assert build_report(merged).meta.config_source == "defaults"


@pytest.mark.parametrize(
    "labels",
    [
        ["Sub-Saharan Africa", "East Asia & Pacific", "Latin America & Caribbean",
         "Europe & Central Asia", "Middle East & North Africa", "South Asia",
         "North America"],
        [str(n) for n in range(1, 61)],
        ["freeform", "semi-structured", "structured"],
    ],
)  # fmt: skip
def test_bar_labels_never_print_over_each_other(labels: list[str]) -> None:
    """Every tick label of a bar plot (the report's region plot among them) has a box of
    its own: no two overlap once drawn."""
    from soc_async.report.plots import bars_figure

    fig = bars_figure({label: i + 1 for i, label in enumerate(labels)}, "t", "x")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the canvas the report's PNGs are drawn on
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    horizontal = ax.get_yticks().size == len(labels)
    ticks = ax.get_yticklabels() if horizontal else ax.get_xticklabels()
    boxes = [t.get_window_extent(renderer) for t in ticks if t.get_text()]
    assert len(boxes) == len(labels) or (not horizontal and labels[0].isdigit())
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
