"""``--compare``: two reports side by side, keeping the differences that matter.

Works on the decoded JSON of two reports (either may be an older version's: a figure
missing from one is skipped), so a report is compared with a report.json written long
ago. Each compared figure has a tolerance; a difference within it is noise and is not
shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec

__all__ = ["Difference", "compare", "render"]

Getter = Callable[[dict[str, Any]], float | None]


class Difference(msgspec.Struct, kw_only=True):
    key: str
    label: str
    a: float | None
    b: float | None
    percent: bool  # shown as a percentage


def _path(*keys: str) -> Getter:
    def get(report: dict[str, Any]) -> float | None:
        node: Any = report
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None

    return get


def _share_of(section: str, field: str, label_key: str, total_key: str) -> Getter:
    def get(report: dict[str, Any]) -> float | None:
        part = report.get(section, {})
        counts, total = part.get(field) or {}, part.get(total_key) or 0
        return counts.get(label_key, 0) / total if total else None

    return get


def _glance(report: dict[str, Any], key: str) -> float | None:
    for row in report.get("glance", []):
        if row.get("key") == key:
            value = row.get("value")
            return float(value) if isinstance(value, int | float) else None
    return None


# (key, label, getter, tolerance, percent)
_FIGURES: list[tuple[str, str, Getter, float, bool]] = [
    ("personas", "personas written", _path("counts", "personas"), 0, False),
    ("experiences", "experiences written", _path("counts", "experiences"), 0, False),
    ("conversations", "conversations written", _path("counts", "conversations"), 0, False),
    (
        "rules_pass",
        "conversations passing every rule",
        _path("rules", "conversations", "value"),
        0,
        True,
    ),
    ("age_mean", "persona age, mean", _path("demographics", "age", "mean"), 0.5, False),
    ("age_sd", "persona age, sd", _path("demographics", "age", "sd"), 0.5, False),
    (
        "region_matched",
        "pairs region-matched",
        _path("demographics", "region_matched", "value"),
        0.03,
        True,
    ),
    (
        "instant_events",
        "turns with an instant event",
        _path("shape", "instant_events", "value"),
        0.01,
        True,
    ),
    (
        "ending_when_spent",
        "tag endings with topics spent",
        _path("shape", "ending_when_spent", "value"),
        0,
        True,
    ),
    (
        "turns_mean",
        "turns per conversation, mean",
        _path("shape", "turn_moments", "mean"),
        0.5,
        False,
    ),
    ("mtld", "MTLD per conversation, mean", _path("naturalness", "mtld", "mean"), 5.0, False),
    (
        "mtld_persona",
        "MTLD per persona, mean",
        _path("naturalness", "mtld_persona", "mean"),
        5.0,
        False,
    ),
    ("distinct_1", "distinct-1", _path("naturalness", "distinct_1"), 0.01, False),
    ("distinct_2", "distinct-2", _path("naturalness", "distinct_2"), 0.01, False),
    (
        "message_words",
        "words per text message, mean",
        _path("naturalness", "message_words", "mean"),
        1.0,
        False,
    ),
    (
        "dup_personas",
        "near-duplicate persona cards",
        _path("duplicates", "personas", "rate"),
        0.01,
        True,
    ),
    (
        "dup_experiences",
        "near-duplicate experiences",
        _path("duplicates", "experiences", "rate"),
        0.01,
        True,
    ),
    (
        "dup_openings",
        "near-duplicate openings",
        _path("duplicates", "openings", "rate"),
        0.02,
        True,
    ),
    ("judge_mean", "judge, mean total score", lambda r: _glance(r, "judge_mean"), 0.25, False),
]


def _mix(
    section: str, field: str, total: str, labels: tuple[str, ...], what: str
) -> Iterator[tuple[str, str, Getter, float, bool]]:
    for label in labels:
        yield (
            f"{field}:{label}",
            f"{what} {label}",
            _share_of(section, field, label, total),
            0.03,
            True,
        )


def _archetype(table: str, field: str) -> Getter:
    """A match share of one archetype table (report.json keeps the tables as a list)."""

    def get(report: dict[str, Any]) -> float | None:
        for t in (report.get("archetypes") or {}).get("tables") or []:
            if t.get("name") == table:
                value = (t.get(field) or {}).get("value")
                return float(value) if isinstance(value, int | float) else None
        return None

    return get


def _figures() -> list[tuple[str, str, Getter, float, bool]]:
    out = list(_FIGURES)
    for table in ("temperament", "coping"):
        for field, what in (("written_match", "written"), ("judged_match", "judged")):
            out.append(
                (
                    f"archetypes:{table}:{field}",
                    f"{table} {what} as drawn",
                    _archetype(table, field),
                    0.03,
                    True,
                )
            )
    out += _mix(
        "experiences",
        "styles",
        "experiences",
        ("freeform", "semi-structured", "structured"),
        "style",
    )
    out += _mix(
        "experiences", "cadences", "experiences", ("realtime", "delayed", "async"), "cadence"
    )
    out += _mix("shape", "ended_by", "conversations", ("exhausted", "max_turns"), "ended by")
    for cadence in ("realtime", "delayed", "async"):
        out.append(
            (
                f"three_messages:{cadence}",
                f"3-message turns, {cadence}",
                _path("naturalness", "three_messages", cadence, "value"),
                0.03,
                True,
            )
        )
    return out


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """The figures whose values differ beyond their tolerance (a figure present in only
    one report counts as a difference)."""
    found = []
    for key, label, get, tolerance, percent in _figures():
        va, vb = get(a), get(b)
        if va is None and vb is None:
            continue
        if va is not None and vb is not None and abs(va - vb) <= tolerance:
            continue
        found.append(Difference(key=key, label=label, a=va, b=vb, percent=percent))
    return found


def _show(x: float | None, percent: bool) -> str:
    if x is None:
        return "—"
    if percent:
        return f"{100 * x:.1f}%"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"


def render(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    """The comparison as text for the terminal."""
    ma, mb = a.get("meta", {}), b.get("meta", {})
    lines = [f"A: {names[0]}", f"B: {names[1]}"]
    ha, hb = ma.get("config_hash"), mb.get("config_hash")
    if ha == hb:
        lines.append(f"config: the same settings ({(ha or 'none')[:16]})")
    else:
        lines.append(
            f"config: different settings (A {(ha or 'none')[:16]}, B {(hb or 'none')[:16]})"
        )
    va, vb = ma.get("soc_async_version"), mb.get("soc_async_version")
    if va != vb:
        lines.append(f"soc-async: A {va}, B {vb}")
    diffs = compare(a, b)
    if not diffs:
        lines.append(f"no figure differs beyond its tolerance ({len(_figures())} compared)")
        return "\n".join(lines)
    width = max(len(d.label) for d in diffs)
    lines.append(f"{'figure':<{width}}  {'A':>12}  {'B':>12}  {'B - A':>10}")
    for d in diffs:
        delta = "" if d.a is None or d.b is None else _show(d.b - d.a, d.percent)
        if delta and not delta.startswith("-"):
            delta = "+" + delta
        shown_a, shown_b = _show(d.a, d.percent), _show(d.b, d.percent)
        lines.append(f"{d.label:<{width}}  {shown_a:>12}  {shown_b:>12}  {delta:>10}")
    return "\n".join(lines)
