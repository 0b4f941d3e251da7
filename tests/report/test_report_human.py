"""Figure 10, people: agreement and intervals on hand-built annotation sets whose right
answers are written here, the judge against people on a scripted judge, ``report
--compare`` with blind A/B answers, and the human columns of ``export``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import pytest
from handmade_run import C, write_run
from test_report_judge import SCORES, Scripted, judge

from soc_async import cli
from soc_async.annotate.records import ANNOTATIONS, Preference, Rating
from soc_async.report import build_report, render_html
from soc_async.report.human import (
    ab_lines,
    alpha,
    build_human,
    human_section,
    mean_interval,
    spearman,
    wilson,
)
from soc_async.store.appendlog import AppendLog

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the worked example:
# four coders, twelve units, missing values; ordinal alpha = 0.815.
_ = None
KRIPPENDORFF = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    "C": [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
}


def rating(rater: str, item: str, at: str = "t", **scores: int) -> Rating:
    return Rating(rater=rater, item=item, rubric="soc-default-1", scores=scores, at=at)


def test_alpha_is_krippendorffs_worked_example() -> None:
    table = {
        coder: {f"u{k}": v for k, v in enumerate(row) if v is not None}
        for coder, row in KRIPPENDORFF.items()
    }
    assert alpha(table) == pytest.approx(0.815, abs=5e-4)
    # Unit u11 has one value only (not pairable) and changes nothing.
    assert alpha({c: {u: v for u, v in t.items() if u != "u11"} for c, t in table.items()}) == (
        pytest.approx(alpha(table))
    )
    assert alpha({"A": {"u": 3}, "B": {"u": 3}}) is None  # one unit: undefined
    assert alpha({"A": {"u": 3, "v": 3}, "B": {"u": 3, "v": 3}}) is None  # one value


def test_the_section_measures_the_worked_example_through_ratings() -> None:
    records = [
        rating(coder, f"c{k}", naturalness=v)
        for coder, row in KRIPPENDORFF.items()
        for k, v in enumerate(row)
        if v is not None
    ]
    # A rater who changed their mind: only their last answer counts.
    records.insert(0, rating("A", "c0", naturalness=5))
    section = build_human(records)
    assert section is not None
    (c,) = section.criteria
    assert c.key == "naturalness" and c.label == "Naturalness"
    assert c.alpha == pytest.approx(0.815, abs=5e-4)
    assert (section.raters, section.ratings, section.items) == (4, 41, 12)
    assert c.alpha_items == section.shared_items == 11
    # Means per unit, then over units: u0 1, u1 2.25, u2 3, u3 3, u4 2, u5 2.5, u6 4,
    # u7 1.25, u8 2, u9 5, u10 1, u11 3 -> 30 / 12 = 2.5.
    assert c.mean.value == pytest.approx(2.5) and c.mean.n == 12
    assert c.distribution == {"1": 9, "2": 13, "3": 11, "4": 5, "5": 3}  # 41 answers


def test_mean_interval_and_wilson_by_hand() -> None:
    # 2, 3, 4: mean 3, sd 1, t(0.975, 2) = 4.303 -> 3 ± 4.303 / sqrt(3) = 3 ± 2.4843.
    i = mean_interval([2, 3, 4])
    assert (i.value, i.n) == (3, 3)
    assert i.low == pytest.approx(0.5157, abs=1e-4) and i.high == pytest.approx(5.4843, abs=1e-4)
    # 50 values: t(0.975, 49) = 2.0096 (the expansion beyond the table).
    values = [1, 5] * 25
    sd = math.sqrt(sum((v - 3) ** 2 for v in values) / 49)
    assert mean_interval(values).high == pytest.approx(3 + 2.0096 * sd / math.sqrt(50), abs=1e-3)
    assert mean_interval([4]).low is None and mean_interval([]).value is None
    # Wilson, 8 of 10, z = 1.95996: centre (0.8 + z²/20) / (1 + z²/10) = 0.71674, half
    # z * sqrt(0.016 + z²/400) / (1 + z²/10) = 0.22658 -> 0.4902 to 0.9433.
    w = wilson(8, 10)
    assert w.value == 0.8
    assert w.low == pytest.approx(0.4902, abs=1e-4) and w.high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5).low == 0.0 and wilson(5, 5).high == 1.0


def test_spearman_by_hand_with_ties() -> None:
    # Ranks 1, 2.5, 2.5, 4, 5 and 2, 1, 3.5, 3.5, 5: deviations give 7.25 / 9.5 = 29/38.
    x, y = [1, 2, 2, 3, 5], [2, 1, 3, 3, 4]
    assert spearman(x, y) == pytest.approx(29 / 38)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None
    scipy_stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


async def test_the_judge_against_people_on_a_scripted_judge(fake_server, tmp_path: Path) -> None:
    """The scripted judge scores the three conversations (test_report_judge's SCORES);
    two raters scored them too. Right answers by hand:

    - naturalness: judge 2, 5, 3; people's means 1.5, 4.5, 2.5: same order, rho 1;
    - opener in character: judge 4, 5, 1 and both raters 4, 5, 1: rho 1 and alpha 1;
    - topic adherence: judge 5, 5, 2; people 1, 2, 5: rho -1.5 / sqrt(3) = -0.866.
    """
    run = write_run(tmp_path / "run")
    server = await fake_server(reply=Scripted())
    await judge(server, run, tmp_path / "judge.jsonl", n=3)
    people = {
        "ana": {
            "naturalness": [1, 4, 3],
            "persona_opener": [4, 5, 1],
            "topic_adherence": [1, 2, 5],
        },
        "ben": {
            "naturalness": [2, 5, 2],
            "persona_opener": [4, 5, 1],
            "topic_adherence": [1, 2, 5],
        },
    }
    log = AppendLog(run / ANNOTATIONS)
    for rater, scores in people.items():
        for k, cid in enumerate(C[:3]):
            log.append(rating(rater, cid, **{key: v[k] for key, v in scores.items()}))
    log.close()
    section = human_section(run, judge_file=tmp_path / "judge.jsonl")
    assert section is not None
    by = {c.key: c for c in section.criteria}
    assert [SCORES[c]["naturalness"] for c in C[:3]] == [2, 5, 3]  # what the judge said
    nat, opener, topic = (
        by["naturalness"].judge,
        by["persona_opener"].judge,
        by["topic_adherence"].judge,
    )
    assert nat is not None and opener is not None and topic is not None
    assert (nat.criterion, nat.items, nat.spearman) == ("naturalness", 3, pytest.approx(1.0))
    assert opener.criterion == "persona_consistency"
    assert opener.spearman == pytest.approx(1.0) and opener.alpha == pytest.approx(1.0)
    assert topic.spearman == pytest.approx(-1.5 / math.sqrt(3))
    assert topic.alpha is not None and topic.alpha < 0  # worse than chance: do not trust it
    assert by["persona_opener"].alpha == pytest.approx(1.0)


def preferences(b_dir: Path, winners: list[str]) -> list[Preference]:
    out = []
    for k, w in enumerate(winners):
        left = "A" if k % 2 == 0 else "B"
        choice = "tie" if w == "tie" else ("left" if w == left else "right")
        out.append(
            Preference(
                rater="ana",
                item=f"pair-{k:04d}",
                rubric="soc-default-1",
                a=f"a{k}",
                b=f"b{k}",
                left=left,
                compare=str(b_dir),
                compare_key="synthetic",
                choices={"overall": choice},
                winners={"overall": w},
                at="t",
            )
        )
    return out


def test_report_compare_prints_the_blind_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 pairs: B preferred 6 times, A once, one tie: B's share 6/7 = 86% (Wilson
    0.487 to 0.974)."""
    run, other = write_run(tmp_path / "run"), write_run(tmp_path / "other")
    log = AppendLog(run / ANNOTATIONS)
    for p in preferences(other, ["B", "B", "A", "B", "tie", "B", "B", "B"]):
        log.append(p)
    log.close()
    with pytest.raises(SystemExit) as ended:
        cli.main(["report", str(run), "--compare", str(other)])
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert "people, blind A/B (8 pairs, 8 answers by 1 raters)" in out
    assert "Overall  B 86% (95% 49%–97%); A 1, B 6, tie 1" in out
    data = json.loads((run / "report.json").read_text())
    (ab,) = data["human"]["ab"]
    assert (ab["left_a"], ab["criteria"][0]["b"]) == (4, 6)
    assert ab["criteria"][0]["b_rate"]["low"] == pytest.approx(0.487, abs=1e-3)
    # Against another run, or with no answers at all, nothing is said.
    assert ab_lines(build_human([]), str(other), None) == []
    html = render_html(build_report(run))
    assert "No answers yet" in html


def test_the_report_page_shows_people(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    log = AppendLog(run / ANNOTATIONS)
    for rater, v in (("ana", 4), ("ben", 2)):
        for cid in C[:3]:
            log.append(rating(rater, cid, naturalness=v, overall=v))
    log.close()
    report = build_report(run)
    report.human = human_section(run)
    page = render_html(report)
    assert '<section id="human">' in page and "6 ratings of 3 conversations by 2 raters" in page
    assert '<tr data-key="naturalness"><td>Naturalness</td><td class="n">3.00</td>' in page
    encoded = msgspec.json.decode(msgspec.json.encode(report))
    assert encoded["human"]["criteria"][0]["alpha"] < 0  # 4 against 2 every time


def test_export_carries_ratings_as_columns_of_the_rated_conversations(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    plain = tmp_path / "plain"
    with pytest.raises(SystemExit):
        cli.main(["export", str(run), "--format", "soc-2602", "--out", str(plain)])
    assert "human_ratings" not in (plain / "data" / "train.jsonl").read_text()

    log = AppendLog(run / ANNOTATIONS)
    log.append(rating("ana", C[0], "t1", naturalness=2, overall=3))
    log.append(rating("ben", C[0], "t2", naturalness=4, overall=3))
    log.close()
    out = tmp_path / "rated"
    with pytest.raises(SystemExit):
        cli.main(["export", str(run), "--format", "soc-2602", "--out", str(out), "--parquet"])
    lines = (out / "data" / "train.jsonl").read_text().splitlines()
    rows = {r["chat_id"]: r for r in map(json.loads, lines)}
    rated = rows[C[0]]
    assert [r["rater"] for r in rated["human_ratings"]] == ["ana", "ben"]
    assert rated["human_ratings"][0]["scores"] == [
        {"criterion": "naturalness", "score": 2},
        {"criterion": "overall", "score": 3},
    ]
    assert rated["human_means"] == [
        {"criterion": "naturalness", "mean": 3.0, "raters": 2},
        {"criterion": "overall", "mean": 3.0, "raters": 2},
    ]
    assert all(rows[c]["human_ratings"] is None for c in rows if c != C[0])
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(out / "data" / "train.parquet")
    assert "human_ratings" in table.schema.names and "human_means" in table.schema.names
    assert "- name: human_ratings" in (out / "README.md").read_text()
    datasets = pytest.importorskip("datasets")
    # As users load it, through the card; the cache kept under the test's own directory.
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    by_id = {r["chat_id"]: r for r in loaded}
    assert by_id[C[0]]["human_means"][0] == {"criterion": "naturalness", "mean": 3.0, "raters": 2}
    assert by_id[C[1]]["human_ratings"] is None
