"""The "at a glance" rows: each headline figure beside the target the method states
(rules 100%, ages N(25, 5), half the pairs from one region, 5% instant events, the
ending tag only once the topics are spent), or beside a reference where there is one.

A share is within its target when it is no further off than three standard errors of a
binomial share (at least 5 points); a mean or standard deviation likewise, at least half
a year. Pure function of a report.
"""

from __future__ import annotations

import math

from soc_async.report.model import GlanceRow, Report, Share

__all__ = ["glance"]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _share_row(key: str, label: str, share: Share, target: float) -> GlanceRow:
    value = share.value
    ok = None
    if value is not None:
        se = math.sqrt(target * (1 - target) / share.total)
        ok = abs(value - target) <= max(0.05, 3 * se)
    shown = f"{_pct(value)} ({share.hits:,} of {share.total:,})"
    return GlanceRow(key=key, label=label, value=value, shown=shown, target=_pct(target), ok=ok)


def _all_row(key: str, label: str, share: Share) -> GlanceRow:
    value = share.value
    ok = None if value is None else share.hits == share.total
    shown = f"{_pct(value)} ({share.hits:,} of {share.total:,})"
    return GlanceRow(key=key, label=label, value=value, shown=shown, target="100%", ok=ok)


def glance(report: Report) -> list[GlanceRow]:
    """The rows, in the order the HTML shows them."""
    c, d, s, n = report.counts, report.demographics, report.shape, report.naturalness
    rows: list[GlanceRow] = []
    target = c.targets.get("chats")
    rows.append(
        GlanceRow(
            key="conversations",
            label="Conversations written",
            value=float(c.conversations),
            shown=f"{c.conversations:,}",
            target="" if target is None else f"{target:,} (config)",
            ok=None if target is None else c.conversations >= target,
        )
    )
    failed = sum(c.failures.values())
    finished = c.personas + c.experiences + c.conversations
    rows.append(
        GlanceRow(
            key="failure_share",
            label="Items that failed",
            value=failed / (failed + finished) if failed + finished else None,
            shown=f"{_pct(failed / (failed + finished) if failed + finished else None)} "
            f"({failed:,})",
            target="",
            ok=None,
        )
    )
    rows.append(
        _all_row("rules_pass", "Conversations passing every rule", report.rules.conversations)
    )
    age = d.age
    if age.n:
        se_mean = d.age_target_sd_actual / math.sqrt(age.n)
        rows.append(
            GlanceRow(
                key="age_mean",
                label="Persona age, mean",
                value=age.mean,
                shown=f"{age.mean:.1f}",
                target=f"{d.age_target_mean:g} (law on the allowed ages: "
                f"{d.age_target_mean_actual:.1f})",
                ok=abs(age.mean - d.age_target_mean_actual) <= max(0.5, 3 * se_mean),
            )
        )
        se_sd = d.age_target_sd_actual / math.sqrt(2 * age.n)
        rows.append(
            GlanceRow(
                key="age_sd",
                label="Persona age, standard deviation",
                value=age.sd,
                shown=f"{age.sd:.1f}",
                target=f"{d.age_target_sd:g} (law on the allowed ages: "
                f"{d.age_target_sd_actual:.1f})",
                ok=abs(age.sd - d.age_target_sd_actual) <= max(0.5, 3 * se_sd),
            )
        )
    rows.append(
        _share_row(
            "region_matched", "Pairs region-matched", d.region_matched, d.region_match_target
        )
    )
    rows.append(
        _share_row(
            "instant_events",
            "Turns with an instant event",
            s.instant_events,
            s.instant_event_target,
        )
    )
    rows.append(
        _all_row("ending_when_spent", "Tag endings with every topic spent", s.ending_when_spent)
    )
    if n.mtld.n:
        rows.append(
            GlanceRow(
                key="mtld",
                label="MTLD per conversation, mean",
                value=n.mtld.mean,
                shown=f"{n.mtld.mean:.1f} (n={n.mtld.n:,})",
                target=f"{n.mtld_reference:g} (SOC-2508, for reference)",
                ok=None,
            )
        )
    for kind, label in (("personas", "persona cards"), ("openings", "conversation openings")):
        dup = getattr(report.duplicates, kind)
        rows.append(
            GlanceRow(
                key=f"near_duplicates_{kind}",
                label=f"Near-duplicate {label}",
                value=dup.rate,
                shown=f"{_pct(dup.rate)} ({dup.near_duplicates:,} of {dup.items:,})",
                target="",
                ok=None,
            )
        )
    if report.judge is not None and report.judge.judged:
        j = report.judge
        mean_total = sum(j.means.values())
        rows.append(
            GlanceRow(
                key="judge_mean",
                label="Judge, mean total score",
                value=mean_total,
                shown=f"{mean_total:.2f} of {5 * len(j.criteria)} (n={j.judged})",
                target="",
                ok=None,
            )
        )
    return rows
