"""report.html: one self-contained page (Jinja2 template, plots as data URIs, inline
CSS, no script, no network) with the "at a glance" table on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from soc_async.report import plots
from soc_async.report.model import Report

__all__ = ["render_html"]

_TEMPLATES = Path(__file__).parent / "templates"


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | int | None, digits: int = 1) -> str:
    if x is None:
        return "—"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}"


def _top(counts: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` entries of a distribution already ordered by count."""
    return dict(list(counts.items())[:n])


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    env.filters["top"] = _top
    return env


def _plots(r: Report) -> dict[str, str]:
    d, e, s, n = r.demographics, r.experiences, r.shape, r.naturalness
    out = {
        "age": plots.age_plot(d.ages, d.age_target),
        "regions": plots.bars(d.regions, "Region", "region"),
        "genders": plots.bars(d.genders, "Gender", "gender"),
        "styles": plots.bars(e.styles, "Conversation style", "style", "experiences"),
        "cadences": plots.bars(e.cadences, "Message cadence", "cadence", "experiences"),
        "topics": plots.bars(e.topics, "Topics per experience", "topics", "experiences"),
        "budgets": plots.bars(e.budgets, "Turn budget per topic", "turns", "topics"),
        "events": plots.bars(e.events, "Instant events per experience", "events", "experiences"),
        "turns": plots.bars(s.turns, "Turns per conversation", "turns", "conversations"),
        "per_turn": plots.grouped_bars(
            s.messages_per_turn, "Messages per turn, by cadence", "messages", "turns"
        ),
        "types": plots.bars(s.message_types, "Message types", "type", "messages"),
        "gaps": plots.histogram_plot(
            s.gaps, "Minutes between consecutive messages, by cadence", "minutes"
        ),
        "ended": plots.bars(s.ended_by, "How conversations ended", "ended_by", "conversations"),
        "mtld": plots.histogram_plot(
            {"conversations": n.mtld_hist},
            "MTLD per conversation",
            "MTLD",
            reference=n.mtld_reference,
        ),
        "words": plots.histogram_plot(
            {"text messages": n.message_words_hist}, "Words per text message", "words"
        ),
        "drift": plots.drift_plot(r.drift),
    }
    out["archetypes"] = _archetype_plot(r)
    if r.judge is not None and r.judge.distribution:
        out["judge"] = plots.grouped_bars(
            r.judge.distribution, "Judge scores, by criterion", "score", "conversations"
        )
    return out


def _archetype_plot(r: Report) -> str:
    """The coping table's shares beside the run's drawn, written and judged shares."""
    a = r.archetypes
    tables = {t.name: t for t in a.tables} if a is not None else {}
    t = tables.get("coping")
    if t is None or not sum(t.drawn.values()):
        return ""

    def shares(counts: dict[str, int]) -> dict[str, float]:
        total = sum(counts.values())
        return {k: counts.get(k, 0) / total for k in t.weights} if total else {}

    groups = {
        "table": dict(t.weights),
        "drawn": shares(t.drawn),
        "written": shares(t.written),
        "judged": shares(t.judged),
    }
    return plots.grouped_bars(groups, "Coping styles: table, drawn, written", "style", "share")


def render_html(report: Report) -> str:
    """The page for ``report``."""
    template = _environment().get_template("report.html.j2")
    context: dict[str, Any] = {"r": report, "plots": _plots(report)}
    return template.render(**context)
