"""The report's plots: matplotlib figures rendered to PNG and embedded as base64 data
URIs, so the HTML is one file that needs no network. matplotlib's object API is used
(never pyplot), so nothing depends on a display or on global state. Each function takes figures from
the report model and returns a ``data:image/png;base64,...`` string ("" when there is
nothing to draw)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from soc_async.report.model import Drift, Histogram

__all__ = ["age_plot", "bars", "drift_plot", "grouped_bars", "histogram_plot"]

_SIZE = (6.4, 2.8)
_COLORS = ("#3b6ea8", "#d9822b", "#4f9a55", "#a84b6e", "#7a6bb3", "#8c8c8c")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure() -> tuple[Figure, Axes]:
    # Figure directly, not pyplot: no global state, no display backend to choose.
    fig = Figure(figsize=_SIZE)
    return fig, fig.subplots()


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def bars(counts: Mapping[str, int | float], title: str, xlabel: str, ylabel: str = "count") -> str:
    """Bars of a categorical or discrete distribution, in the order given."""
    if not counts or not any(counts.values()):
        return ""
    return _png(bars_figure(counts, title, xlabel, ylabel))


# Tick labels of 8-point type take about this many inches per character; past the width
# a label gets, neighbours print over each other.
_INCH_PER_CHAR = 0.075


def bars_figure(
    counts: Mapping[str, int | float], title: str, xlabel: str, ylabel: str = "count"
) -> Figure:
    """The figure of :func:`bars`: vertical bars while the labels fit side by side, else
    horizontal bars with one row per label (region names, say, never overlap)."""
    labels = list(counts)
    values = list(counts.values())
    room = _SIZE[0] * 0.8 / max(1, len(labels))  # inches of axis per label
    longest = max(len(label) for label in labels) * _INCH_PER_CHAR
    if longest <= room or all(label.isdigit() for label in labels):
        # Numbers (turns, budgets) stay an axis: every step-th label where all would crowd.
        step = max(1, math.ceil(longest * 1.2 / room))
        fig, ax = _figure()
        ax.bar(range(len(labels)), values, color=_COLORS[0])
        ax.set_xticks(range(0, len(labels), step), labels[::step])
        _style(ax, title, xlabel, ylabel)
        return fig
    fig = Figure(figsize=(_SIZE[0], max(_SIZE[1], 0.9 + 0.28 * len(labels))))
    ax = fig.subplots()
    ax.barh(range(len(labels)), values, color=_COLORS[0])
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()  # the first label on top, as the table below reads
    _style(ax, title, ylabel, xlabel)
    return fig


def grouped_bars(
    groups: Mapping[str, Mapping[str, int | float]], title: str, xlabel: str, ylabel: str
) -> str:
    """One bar per (category, group): e.g. messages per turn, one colour per cadence."""
    groups = {g: c for g, c in groups.items() if c and any(c.values())}
    if not groups:
        return ""
    categories: list[str] = []
    for counts in groups.values():
        categories.extend(k for k in counts if k not in categories)
    fig, ax = _figure()
    width = 0.8 / len(groups)
    for i, (group, counts) in enumerate(groups.items()):
        xs = [j + i * width for j in range(len(categories))]
        ax.bar(xs, [counts.get(k, 0) for k in categories], width, label=group, color=_COLORS[i % 6])
    # Long labels (the archetype rows) overlap level long before there are many of them.
    many = len(categories) > 8 or sum(len(str(c)) for c in categories) > 60
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(categories))],
        categories,
        rotation=40 if many else 0,
        ha="right" if many else "center",
    )
    ax.legend(fontsize=8, frameon=False)
    _style(ax, title, xlabel, ylabel)
    return _png(fig)


def histogram_plot(
    hists: Mapping[str, Histogram],
    title: str,
    xlabel: str,
    *,
    normalise: bool = True,
    reference: float | None = None,
) -> str:
    """Histograms over fixed bins, drawn as bars over bin labels (bins may be uneven)."""
    hists = {k: h for k, h in hists.items() if sum(h.counts)}
    if not hists:
        return ""
    first = next(iter(hists.values()))
    labels = [
        f"{_num(lo)}–{_num(hi)}" if i < len(first.counts) - 1 else f"{_num(lo)}+"
        for i, (lo, hi) in enumerate(zip(first.edges, first.edges[1:], strict=False))
    ]
    series = {
        name: {
            label: (n / sum(h.counts) if normalise else n)
            for label, n in zip(labels, h.counts, strict=True)
        }
        for name, h in hists.items()
    }
    if reference is None:
        return grouped_bars(series, title, xlabel, "share" if normalise else "count")
    fig, ax = _figure()
    values = list(next(iter(series.values())).values())
    ax.bar(range(len(labels)), values, color=_COLORS[0])
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    # The reference's position on the bar axis, interpolated within its bin.
    edges = first.edges
    pos = len(labels) - 1.0
    for i in range(len(edges) - 1):
        if edges[i] <= reference < edges[i + 1]:
            pos = i - 0.5 + (reference - edges[i]) / (edges[i + 1] - edges[i])
            break
    ax.axvline(pos, color=_COLORS[1], linestyle="--", label=f"reference {reference:g}")
    ax.legend(fontsize=8, frameon=False)
    _style(ax, title, xlabel, "share" if normalise else "count")
    return _png(fig)


def _num(x: float) -> str:
    return f"{x:g}"


def age_plot(ages: Mapping[str, int], target: Mapping[str, float]) -> str:
    """Personas per age as bars, the target law's expected counts as a line."""
    total = sum(ages.values())
    if not total:
        return ""
    fig, ax = _figure()
    xs = [int(a) for a in ages]
    ax.bar(xs, list(ages.values()), color=_COLORS[0], label="personas")
    shown = {int(a): w * total for a, w in target.items() if w * total >= 0.01 or int(a) in xs}
    ax.plot(list(shown), list(shown.values()), color=_COLORS[1], label="target law")
    ax.legend(fontsize=8, frameon=False)
    _style(ax, "Age", "age (years)", "personas")
    return _png(fig)


def drift_plot(drift: Drift) -> str:
    """The share of each window's words that are its own top 20, traits and coping."""
    windows = drift.windows
    if not windows:
        return ""
    fig, ax = _figure()
    xs = [w.start for w in windows]
    for label, values, color in (
        ("Core Traits", [w.traits_top_share for w in windows], _COLORS[0]),
        ("coping (Emotional Profile)", [w.coping_top_share for w in windows], _COLORS[1]),
    ):
        pts = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, color=color)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, frameon=False)
    _style(ax, f"Top-{drift.top} concentration by window", "first iteration of window", "share")
    return _png(fig)
