"""Figure 10, people: what raters said in ``soc-async annotate``, measured.

Pure functions over annotation records (annotate/records.py) and judge verdicts:

- **means**: per criterion, each conversation's mean over its raters, then the mean over
  conversations with a 95% t interval (conversations are the units: a conversation rated
  by three people counts once, so the shared sample does not weigh more);
- **agreement**: Krippendorff's alpha, ordinal (the ``krippendorff`` package), over the
  conversations rated by two raters or more (the plan's overlap);
- **blind A/B**: per criterion, how often run B's conversation was preferred among the
  pairs that were not a tie, with a 95% Wilson interval, and the ties;
- **the judge against people**: per criterion the rubric maps to a judge criterion,
  Spearman's rank correlation between the judge's score and the raters' mean, and alpha
  over the judge and the raters together, on the conversations both scored.

:func:`human_section` reads the files (annotations.jsonl, the judge's judge.jsonl).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist

from soc_async.annotate.records import ANNOTATIONS, Annotation, Preference, Rating, latest
from soc_async.annotate.rubric import Rubric, default_rubric, run_rubric
from soc_async.report.judge import Judgement
from soc_async.report.model import (
    ABCriterion,
    ABSection,
    HumanCriterion,
    HumanSection,
    Interval,
    JudgeAgreement,
)
from soc_async.store.appendlog import read_log

__all__ = [
    "ab_lines",
    "alpha",
    "build_human",
    "human_section",
    "mean_interval",
    "spearman",
    "t_quantile",
    "wilson",
]

Z95 = NormalDist().inv_cdf(0.975)
# t(0.975, df) for df 1..30; beyond, the Cornish-Fisher expansion is within 1e-4.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
    2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
    2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean and its 95% t interval (no interval for fewer than two values)."""
    n = len(values)
    if n == 0:
        return Interval(value=None, low=None, high=None, n=0)
    mean = sum(values) / n
    if n < 2:
        return Interval(value=mean, low=None, high=None, n=n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(value=mean, low=mean - half, high=mean + half, n=n)


def wilson(k: int, n: int) -> Interval:
    """The share k/n and its 95% Wilson score interval (sound at 0, n and small n)."""
    if n == 0:
        return Interval(value=None, low=None, high=None, n=0)
    p = k / n
    z2 = Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(value=p, low=low, high=high, n=n)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks; None when
    fewer than three pairs or either side is constant."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def alpha(table: Mapping[str, Mapping[str, float]]) -> float | None:
    """Krippendorff's alpha, ordinal, of ``table`` (coder -> unit -> value), over the
    units two coders or more gave a value; None when there are fewer than two such
    units or a single value among them (alpha is undefined there)."""
    import krippendorff
    import numpy as np

    counts = Counter(u for values in table.values() for u in values)
    units = sorted(u for u, n in counts.items() if n >= 2)
    if len(units) < 2:
        return None
    coders = sorted(table)
    data = np.full((len(coders), len(units)), np.nan)
    for r, coder in enumerate(coders):
        for c, unit in enumerate(units):
            if unit in table[coder]:
                data[r, c] = table[coder][unit]
    if len({v for v in data.flatten() if not np.isnan(v)}) < 2:
        return None
    value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))
    return None if math.isnan(value) else value


def _criteria(ratings: Sequence[Rating], rubric: Rubric) -> list[str]:
    """The criteria in the rubric's order, then any the records hold that it lacks."""
    keys = [c.key for c in rubric.criteria]
    seen = {k for r in ratings for k in r.scores}
    return [k for k in keys if k in seen] + sorted(seen - set(keys))


def build_human(
    annotations: Iterable[Annotation],
    *,
    judge: Mapping[str, Judgement] | None = None,
    rubric: Rubric | None = None,
) -> HumanSection | None:
    """The people figure; None when nobody has answered anything yet."""
    last = list(latest(annotations).values())
    if not last:
        return None
    rubric = rubric or default_rubric()
    ratings = [a for a in last if isinstance(a, Rating)]
    preferences = [a for a in last if isinstance(a, Preference)]
    by_item: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_item[r.item].append(r)
    criteria = []
    for key in _criteria(ratings, rubric):
        c = rubric.criterion(key)
        per_item = {
            item: [r.scores[key] for r in rs if key in r.scores] for item, rs in by_item.items()
        }
        per_item = {item: v for item, v in per_item.items() if v}
        table: dict[str, dict[str, float]] = defaultdict(dict)
        for r in ratings:
            if key in r.scores:
                table[r.rater][r.item] = r.scores[key]
        distribution = Counter(str(r.scores[key]) for r in ratings if key in r.scores)
        shared = sum(len(v) >= 2 for v in per_item.values())
        criteria.append(
            HumanCriterion(
                key=key,
                label=c.label if c else key,
                mean=mean_interval([sum(v) / len(v) for v in per_item.values()]),
                distribution=dict(sorted(distribution.items(), key=lambda kv: int(kv[0]))),
                alpha=alpha(table),
                alpha_items=shared,
                judge=_judge_agreement(c.judge if c else None, per_item, table, judge or {}),
            )
        )
    flags = Counter(f for r in ratings for f in r.flags)
    return HumanSection(
        rubrics=sorted({a.rubric for a in last}),
        raters=len({a.rater for a in last}),
        ratings=len(ratings),
        items=len(by_item),
        shared_items=sum(len(rs) >= 2 for rs in by_item.values()),
        criteria=criteria,
        flags={f: flags.get(f, 0) for f in rubric.flags} | dict(flags),
        comments=sum(bool(r.comment) for r in ratings),
        ab=_ab_sections(preferences, rubric),
    )


def _judge_agreement(
    judge_key: str | None,
    per_item: Mapping[str, list[int]],
    table: Mapping[str, Mapping[str, float]],
    judge: Mapping[str, Judgement],
) -> JudgeAgreement | None:
    if not judge_key:
        return None
    both = sorted(i for i in per_item if i in judge and judge_key in judge[i].scores)
    if not both:
        return JudgeAgreement(criterion=judge_key, items=0, spearman=None, alpha=None)
    judge_scores = [float(judge[i].scores[judge_key]) for i in both]
    people = [sum(per_item[i]) / len(per_item[i]) for i in both]
    coders: dict[str, dict[str, float]] = {
        # The judge as one more coder beside the people, on the items both scored.
        "\x00judge": dict(zip(both, judge_scores, strict=True)),
        **{r: {i: v for i, v in values.items() if i in set(both)} for r, values in table.items()},
    }
    return JudgeAgreement(
        criterion=judge_key,
        items=len(both),
        spearman=spearman(judge_scores, people),
        alpha=alpha(coders),
    )


def _ab_sections(preferences: Sequence[Preference], rubric: Rubric) -> list[ABSection]:
    groups: dict[tuple[str, str], list[Preference]] = defaultdict(list)
    for p in preferences:
        groups[(p.compare, p.compare_key)].append(p)
    out = []
    for (compare, key), prefs in sorted(groups.items()):
        keys = [c.key for c in rubric.criteria if any(c.key in p.winners for p in prefs)]
        keys += sorted({k for p in prefs for k in p.winners} - set(keys))
        rows = []
        for k in keys:
            won = Counter(p.winners[k] for p in prefs if k in p.winners)
            c = rubric.criterion(k)
            rows.append(
                ABCriterion(
                    key=k,
                    label=c.label if c else k,
                    a=won["A"],
                    b=won["B"],
                    tie=won["tie"],
                    b_rate=wilson(won["B"], won["A"] + won["B"]),
                )
            )
        out.append(
            ABSection(
                compare=compare,
                compare_key=key,
                pairs=len({p.item for p in prefs}),
                answers=len(prefs),
                raters=len({p.rater for p in prefs}),
                left_a=sum(p.left == "A" for p in prefs),
                criteria=rows,
            )
        )
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def ab_lines(section: HumanSection | None, compare: str, compare_key: str | None) -> list[str]:
    """``report --compare``'s lines from blind A/B answers against ``compare`` (matched
    by its directory, else by its run key); none when there are no such answers."""
    if section is None:
        return []
    target = Path(compare).resolve()
    chosen = [s for s in section.ab if Path(s.compare).resolve() == target]
    if not chosen and compare_key:
        chosen = [s for s in section.ab if s.compare_key == compare_key]
    lines = []
    for s in chosen:
        lines.append(
            f"people, blind A/B ({s.pairs} pairs, {s.answers} answers by {s.raters} raters): "
            "B preferred, among pairs not tied"
        )
        width = max((len(c.label) for c in s.criteria), default=0)
        for c in s.criteria:
            r = c.b_rate
            interval = "" if r.low is None else f" (95% {_pct(r.low)}–{_pct(r.high)})"
            lines.append(
                f"  {c.label:<{width}}  B {_pct(r.value)}{interval}; A {c.a}, B {c.b}, tie {c.tie}"
            )
    return lines


def human_section(run_dir: str | Path, *, judge_file: Path | None = None) -> HumanSection | None:
    """The people figure of ``run_dir`` (its annotations.jsonl), with the judge's
    verdicts in ``judge_file`` when it exists; None without annotations."""
    path = Path(run_dir) / ANNOTATIONS
    if not path.is_file():
        return None
    judged: dict[str, Judgement] = {}
    if judge_file is not None:
        judged = {j.chat_id: j for j in read_log(judge_file, Judgement)}
    rubric = run_rubric(Path(run_dir))
    return build_human(read_log(path, Annotation), judge=judged, rubric=rubric)
