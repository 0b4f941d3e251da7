"""The bench's outputs: bench.csv, bench.json, bench.png and the table on the terminal."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import msgspec
from rich import box
from rich.table import Table

from soc_async.bench.metrics import Percentiles, ratio
from soc_async.bench.results import BenchResult, PhaseResult, by_concurrency

__all__ = [
    "CSV_COLUMNS",
    "csv_rows",
    "plot_png",
    "recommendation_text",
    "render_breakdown",
    "render_table",
    "write_csv",
    "write_json",
    "write_reports",
]

CSV_COLUMNS: tuple[str, ...] = (
    "phase",
    "concurrency",  # the fixed limit; empty for the adaptive run
    "conversations",
    "conversations_failed",
    "requests",
    "request_errors",
    "duration_s",
    "output_tokens",
    "tokens_per_s",
    "vs_ceiling",  # pipeline: its tokens/s over the ceiling's at the same concurrency
    "vs_best_fixed",  # adaptive: its tokens/s over the best fixed pipeline's
    "mean_prompt_tokens",
    "mean_completion_tokens",
    "prefix_hit_rate",
    "cached_share",
    "preemptions",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "queue_p50_s",
    "queue_p90_s",
    "queue_p99_s",
    "mean_capacity",
    "variant",  # "": the sweep's own phase; else what the breakdown switched off
    "vs_reference",  # pipeline or ceiling: its tokens/s over vLLM's benchmark's at the same C
    "steady_tokens_per_s",  # output tokens/s in the steady window (limit full, no tail)
    "steady_s",
    "occupancy",  # requests in flight / the full level, time-weighted in the steady window
    "steady_vs_ceiling",  # as vs_ceiling, over the steady windows
    "steady_vs_reference",  # as vs_reference, over the steady windows
    "steady_vs_best_fixed",  # as vs_best_fixed, over the steady windows
    "settled_tokens_per_s",  # the steady window less the controller's search (its start)
    "settled_s",
    "settled_vs_best_fixed",  # as vs_best_fixed, over the settled windows
)
_RATIOS = (
    "vs_ceiling",
    "vs_best_fixed",
    "steady_vs_best_fixed",
    "settled_vs_best_fixed",
    "vs_reference",
    "steady_vs_ceiling",
    "steady_vs_reference",
)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 6)
    return value


def csv_rows(result: BenchResult) -> list[dict[str, Any]]:
    """One row per phase, keyed by :data:`CSV_COLUMNS`; unknown figures are ""."""
    ceiling = by_concurrency(result.phases, "ceiling")
    reference = by_concurrency(result.phases, "reference")
    rows = []
    for p in result.phases:
        row: dict[str, Any] = {k: getattr(p, k, None) for k in CSV_COLUMNS if k not in _RATIOS}
        for name in ("ttft", "latency", "queue"):
            pct: Percentiles = getattr(p, f"{name}_s")
            for q in ("p50", "p90", "p99"):
                row[f"{name}_{q}_s"] = getattr(pct, q)
        ceil = ceiling.get(p.concurrency) if p.phase == "pipeline" else None  # type: ignore[arg-type]
        ref = reference.get(p.concurrency) if p.phase in ("pipeline", "ceiling") else None  # type: ignore[arg-type]
        row["vs_ceiling"] = ratio(p.tokens_per_s, ceil.tokens_per_s) if ceil else None
        row["vs_best_fixed"] = result.summary.adaptive_vs_best if p.phase == "adaptive" else None
        adaptive = p.phase == "adaptive"
        row["steady_vs_best_fixed"] = result.summary.adaptive_steady_vs_best if adaptive else None
        row["settled_vs_best_fixed"] = result.summary.adaptive_settled_vs_best if adaptive else None
        row["vs_reference"] = ratio(p.tokens_per_s, ref.tokens_per_s) if ref else None
        steady = p.steady_tokens_per_s
        row["steady_vs_ceiling"] = ratio(steady, ceil.steady_tokens_per_s) if ceil else None
        row["steady_vs_reference"] = ratio(steady, ref.steady_tokens_per_s) if ref else None
        rows.append({k: _cell(row[k]) for k in CSV_COLUMNS})
    return rows


def write_csv(result: BenchResult, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(csv_rows(result))


def write_json(result: BenchResult, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")


def plot_png(result: BenchResult, path: Path) -> bool:
    """Tokens/s against concurrency (and the adaptive limit over time); False without
    matplotlib (the ``bench`` extra)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    s = result.summary
    adaptive = next((p for p in result.phases if p.phase == "adaptive"), None)
    history = adaptive.capacity_history if adaptive else []
    fig = Figure(figsize=(10, 4) if history else (6, 4), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 2, 1) if history else fig.add_subplot()
    xs = [pt.concurrency for pt in s.points]
    ceil = [(pt.concurrency, pt.ceiling_tokens_per_s) for pt in s.points if pt.ceiling_tokens_per_s]
    if ceil:
        ax.plot(*zip(*ceil, strict=True), marker="o", label="ceiling (synthetic load)")
    ax.plot(xs, [pt.pipeline_tokens_per_s for pt in s.points], marker="s", label="pipeline (chats)")
    if adaptive is not None:
        ax.axhline(adaptive.tokens_per_s, linestyle="--", color="tab:green", label="adaptive")
        if adaptive.mean_capacity:
            ax.plot([adaptive.mean_capacity], [adaptive.tokens_per_s], "D", color="tab:green")
    if s.recommended is not None:
        ax.axvline(s.recommended, linestyle=":", color="grey", label=f"recommended {s.recommended}")
    if len(xs) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("requests in flight (fixed limit)")
    ax.set_ylabel("output tokens/s")
    ax.set_ylim(bottom=0)
    model = result.environment.get("server_model") or "?"
    ax.set_title(f"{model}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if history:
        ax2 = fig.add_subplot(1, 2, 2)
        times = [t for t, _ in history] + [adaptive.duration_s]  # type: ignore[union-attr]
        caps = [c for _, c in history] + [history[-1][1]]
        ax2.step(times, caps, where="post", color="tab:green")
        ax2.set_xlabel("seconds into the adaptive run")
        ax2.set_ylabel("limit set by the controller")
        ax2.set_ylim(bottom=0)
        ax2.grid(True, alpha=0.3)
    fig.savefig(path)
    return True


def write_reports(result: BenchResult, out: Path) -> list[Path]:
    """bench.csv, bench.json and (with matplotlib) bench.png in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.csv", out / "bench.json"]
    write_csv(result, written[0])
    write_json(result, written[1])
    if plot_png(result, out / "bench.png"):
        written.append(out / "bench.png")
    return written


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _secs(*values: float | None) -> str:
    """Seconds as "0.48/2.1/130", as many digits as the size needs; "n/a" if none known."""

    def one(v: float | None) -> str:
        if v is None:
            return "n/a"
        if v < 0.005:
            return "0"
        return f"{v:.2f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}"

    if all(v is None for v in values):
        return "n/a"
    return "/".join(one(v) for v in values)


def render_table(result: BenchResult) -> Table:
    """The sweep as a rich table: one row per concurrency value, then the adaptive run.

    Latency p90 and the ceiling's own percentiles are in bench.csv; the table keeps to
    what fits a terminal.
    """
    table = Table(
        title="output tokens/s (pipe: chats, ceil: synthetic load); times in s",
        caption="hit: prefix-cache hits; queue: waiting for a slot in the client",
        caption_justify="left",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    refs = any(pt.reference_tokens_per_s is not None for pt in result.summary.points)
    for col in (
        "C",
        "pipe",
        "ceil",
        *(("ref",) if refs else ()),
        "ratio",
        *(("p/ref", "c/ref") if refs else ()),
        "hit",
        "TTFT\np50/p99",
        "latency\np50/p99",
        "queue\np50/p99",
        "pre-\nempt",
        "fail",
    ):
        table.add_column(col, justify="right", overflow="fold")  # narrow terminal: fold, not cut
    pipeline = by_concurrency(result.phases, "pipeline")
    for pt in result.summary.points:
        pipe = pipeline[pt.concurrency]
        ref = (
            [_num(pt.reference_tokens_per_s)],
            [_num(pt.vs_reference, "{:.2f}"), _num(pt.ceiling_vs_reference, "{:.2f}")],
        )
        cells = _row(
            str(pt.concurrency), pipe, pt.ceiling_tokens_per_s, pt.ratio, ref if refs else None
        )
        table.add_row(*cells)
    adaptive = next((p for p in result.phases if p.phase == "adaptive"), None)
    if adaptive is not None:
        na = (["n/a"], ["n/a", "n/a"])
        table.add_row(*_row("adapt", adaptive, None, None, na if refs else None))
    return table


def _row(
    label: str,
    p: PhaseResult,
    ceiling: float | None,
    ratio_: float | None,
    ref: tuple[list[str], list[str]] | None,
) -> list[str]:
    return [
        label,
        _num(p.tokens_per_s),
        _num(ceiling),
        *(ref[0] if ref else []),
        _num(ratio_, "{:.2f}"),
        *(ref[1] if ref else []),
        _pct(p.prefix_hit_rate),
        _secs(p.ttft_s.p50, p.ttft_s.p99),
        _secs(p.latency_s.p50, p.latency_s.p99),
        _secs(p.queue_s.p50, p.queue_s.p99),
        _num(p.preemptions, "{:.0f}"),
        f"{p.conversations_failed}/{p.conversations}" if p.conversations else str(p.request_errors),
    ]


def recommendation_text(result: BenchResult) -> str:
    """The lines printed under the table: the recommended concurrency and the adaptive run."""
    s = result.summary
    tol = result.settings.tolerance
    lines = []
    source = result.settings.sweep_source
    if source:
        values = ",".join(str(c) for c in result.settings.concurrency)
        lines.append(f"sweep {values}: {source}")
    scale = (result.environment.get("server_facts") or {}).get("time_scale")
    if scale:
        lines.append(
            f"a simulated server running {scale:g}x faster than real time: divide tokens/s "
            f"by {scale:g} and multiply latency and queue times by it for the simulated "
            "GPU's own figures (TTFT comes from the server, already in simulated seconds)"
        )
    if s.recommended is None:
        lines.append("no recommendation: no pipeline phase produced tokens")
    else:
        lines.append(
            f"recommended concurrency: {s.recommended} (the knee: the smallest within "
            f"{tol:.0%} of the best, {s.best_tokens_per_s:.1f} tok/s at {s.best_concurrency}); "
            f"run with --concurrency {s.recommended}"
        )
    for pt in s.points:
        steady = [
            f"{name} {value:.2f}"
            for name, value in (
                ("pipeline/ceiling", pt.steady_ratio),
                ("pipeline/reference", pt.steady_vs_reference),
                ("ceiling/reference", pt.steady_ceiling_vs_reference),
            )
            if value is not None
        ]
        if steady:
            lines.append(f"steady windows (no tail) at C={pt.concurrency}: " + ", ".join(steady))
    if s.adaptive_vs_best is not None:
        adaptive = next(p for p in result.phases if p.phase == "adaptive")
        mean = f", mean limit {adaptive.mean_capacity:.1f}" if adaptive.mean_capacity else ""
        lines.append(
            f"adaptive controller: {s.adaptive_tokens_per_s:.1f} tok/s, "
            f"{s.adaptive_vs_best:.2f}x the best fixed value{mean}"
        )
    if s.adaptive_steady_vs_best is not None:
        lines.append(
            f"adaptive controller over the steady windows (limit full, no tail): "
            f"{s.adaptive_steady_tokens_per_s:.1f} tok/s, {s.adaptive_steady_vs_best:.2f}x "
            f"the best fixed value's (C={s.best_steady_concurrency})"
        )
    if s.adaptive_settled_vs_best is not None:
        lines.append(
            f"adaptive controller over the settled windows (the steady ones less their "
            f"first {result.settings.settle_s:g} s, its search): "
            f"{s.adaptive_settled_tokens_per_s:.1f} tok/s, {s.adaptive_settled_vs_best:.2f}x "
            f"the best fixed value's (C={s.best_settled_concurrency})"
        )
    lines += [f"note: {line}" for line in result.notes]
    return "\n".join(lines)


def render_breakdown(result: BenchResult) -> Table:
    """The loss breakdown (bench/breakdown.py): one row per step, per concurrency."""
    table = Table(
        title="where the pipeline loses against vLLM's benchmark (steady windows; tok/s)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col, justify in (("C", "right"), ("step", "left"), ("tok/s", "right"),
                         ("x", "right"), ("measured by", "left")):  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in result.breakdown:
        table.add_row(
            str(row.concurrency),
            row.step,
            _num(row.tokens_per_s),
            _num(row.factor, "{:.2f}"),
            row.measured_by,
        )
    return table
