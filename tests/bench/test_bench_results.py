"""Phase figures from samples, the summary across phases, and the CSV rows."""

from __future__ import annotations

import msgspec
import pytest
from rich.console import Console

from soc_async.bench.metrics import CounterDelta, MetricHistogram
from soc_async.bench.recording import RequestSample
from soc_async.bench.report import CSV_COLUMNS, csv_rows, recommendation_text, render_table
from soc_async.bench.results import (
    BenchResult,
    BenchSettings,
    PhaseResult,
    phase_result,
    summarize,
)


def sample(kind: str = "turn", prompt: int = 100, completion: int = 20, cached: int = 0,
           latency: float = 1.0, queue: float = 0.0) -> RequestSample:  # fmt: skip
    return RequestSample(
        kind=kind, prompt=prompt, completion=completion, cached=cached,
        latency_s=latency, queue_s=queue, finish="stop",
    )  # fmt: skip


def phase(kind: str, c: int | None, rate: float) -> PhaseResult:
    return phase_result(
        kind,  # type: ignore[arg-type]
        c,
        [sample(completion=int(rate))],
        errors=0,
        duration_s=1.0,
        server=None,
        ttft=None,
    )


def test_phase_result_keeps_queue_apart_from_latency() -> None:
    """Queue and latency percentiles come from their own fields; means use turns only;
    tokens/s counts every request's output over the phase's wall time."""
    samples = [
        sample(prompt=100, completion=10, cached=50, latency=1.0, queue=0.0),
        sample(prompt=300, completion=30, cached=150, latency=3.0, queue=2.0),
        sample(kind="summary", prompt=1000, completion=60, latency=5.0, queue=4.0),
    ]
    server = CounterDelta(
        seconds=10.0, prefix_cache_hits=700, prefix_cache_queries=1000, preemptions=2,
        generation_tokens=100, prompt_tokens=1400,
    )  # fmt: skip
    ttft = MetricHistogram(buckets=[(0.5, 2.0), (1.0, 4.0), (float("inf"), 4.0)], count=4.0)
    r = phase_result("pipeline", 4, samples, errors=1, duration_s=10.0, server=server, ttft=ttft)
    assert r.requests == 3 and r.request_errors == 1
    assert r.output_tokens == 100 and r.tokens_per_s == pytest.approx(10.0)
    assert r.mean_prompt_tokens == pytest.approx(200.0)
    assert r.mean_completion_tokens == pytest.approx(20.0)
    assert r.latency_s.p50 == pytest.approx(3.0)
    assert r.queue_s.p50 == pytest.approx(2.0)
    assert r.prefix_hit_rate == pytest.approx(0.7)
    assert r.cached_share == pytest.approx(200 / 1400)
    assert r.preemptions == 2
    assert r.ttft_s.p50 == pytest.approx(0.5)


def test_phase_result_without_server_figures() -> None:
    """No /metrics: hit rate, preemptions and TTFT are unknown, not zero."""
    r = phase_result("ceiling", 1, [sample()], errors=0, duration_s=2.0, server=None, ttft=None)
    assert r.prefix_hit_rate is None and r.preemptions is None and r.ttft_s.p50 is None


def test_summarize_ratios_best_and_recommendation() -> None:
    """Pipeline over ceiling per value; the best fixed value; adaptive against it; the
    smallest value within the tolerance of the best."""
    phases = [
        phase("pipeline", 1, 40), phase("ceiling", 1, 50),
        phase("pipeline", 4, 190), phase("ceiling", 4, 200),
        phase("pipeline", 16, 200), phase("ceiling", 16, 400),
        phase("adaptive", None, 180),
    ]  # fmt: skip
    s = summarize(phases)
    assert [p.concurrency for p in s.points] == [1, 4, 16]
    assert [p.ratio for p in s.points] == pytest.approx([0.8, 0.95, 0.5])
    assert s.best_concurrency == 16 and s.best_tokens_per_s == 200
    assert s.adaptive_vs_best == pytest.approx(0.9)
    assert s.recommended == 4


def test_summarize_missing_ceiling_and_adaptive() -> None:
    """A value without a ceiling has no ratio; no adaptive run, no comparison."""
    s = summarize([phase("pipeline", 2, 10)])
    assert s.points[0].ratio is None and s.points[0].ceiling_tokens_per_s is None
    assert s.adaptive_vs_best is None and s.recommended == 2


def test_csv_rows_one_per_phase_with_ratios() -> None:
    """Each phase is a row with every column; ratios only where they mean something."""
    phases = [phase("pipeline", 1, 45), phase("ceiling", 1, 50), phase("adaptive", None, 45)]
    result = BenchResult(
        settings=BenchSettings(concurrency=[1]),
        config={},
        environment={},
        phases=phases,
        summary=summarize(phases),
    )
    rows = csv_rows(result)
    assert [r["phase"] for r in rows] == ["pipeline", "ceiling", "adaptive"]
    assert all(list(r) == list(CSV_COLUMNS) for r in rows)
    assert rows[0]["vs_ceiling"] == pytest.approx(0.9)
    assert rows[1]["vs_ceiling"] == "" and rows[0]["vs_best_fixed"] == ""
    assert rows[2]["vs_best_fixed"] == pytest.approx(1.0)
    assert rows[2]["concurrency"] == "" and rows[0]["ttft_p50_s"] == ""
    assert "recommended concurrency: 1" in recommendation_text(result)


def test_phase_result_steady_window_from_send_and_end_times() -> None:
    """Samples carry when each request ended; the steady window is taken under the
    phase's fixed limit, and not for the adaptive run."""

    def timed(end: float, latency: float, completion: int) -> RequestSample:
        return msgspec.structs.replace(sample(completion=completion, latency=latency), end_s=end)

    samples = [timed(2.0, 2.0, 20), timed(2.0, 2.0, 20), timed(4.0, 2.0, 20), timed(5.0, 3.0, 30)]
    r = phase_result("ceiling", 2, samples, errors=0, duration_s=5.0, server=None, ttft=None)
    assert r.steady_s == pytest.approx(4.0)  # two in flight from 0 to 4 s
    assert r.steady_tokens_per_s == pytest.approx((20 + 20 + 20 + 30 * 2 / 3) / 4.0)
    assert r.occupancy == pytest.approx(1.0)
    assert r.requests_by_kind == {"turn": 4}
    adaptive = phase_result("adaptive", None, samples, errors=0, duration_s=5.0, server=None,
                            ttft=None)  # fmt: skip
    assert adaptive.steady_tokens_per_s is None


def steady(p: PhaseResult, rate: float, variant: str = "") -> PhaseResult:
    return msgspec.structs.replace(p, steady_tokens_per_s=rate, variant=variant)


def test_summarize_against_the_reference_and_over_steady_windows() -> None:
    """Pipeline and ceiling over vLLM's benchmark at the same value, whole and steady;
    the breakdown's variant phases never stand in for the sweep's own."""
    phases = [
        steady(phase("pipeline", 8, 30), 33),
        steady(phase("ceiling", 8, 38), 40),
        steady(phase("reference", 8, 40), 41),
        steady(phase("pipeline", 8, 45), 50, "no-grammar"),
        steady(phase("ceiling", 8, 10), 10, "spread"),
    ]
    (point,) = summarize(phases).points
    assert point.pipeline_tokens_per_s == 30 and point.ceiling_tokens_per_s == 38
    assert point.reference_tokens_per_s == 40
    assert point.vs_reference == pytest.approx(0.75)
    assert point.ceiling_vs_reference == pytest.approx(0.95)
    assert point.steady_ratio == pytest.approx(33 / 40)
    assert point.steady_vs_reference == pytest.approx(33 / 41)
    assert point.steady_ceiling_vs_reference == pytest.approx(40 / 41)


def test_csv_and_table_carry_the_reference() -> None:
    """bench.csv's vs_reference for pipeline and ceiling rows (steady too); the table
    gets ref, p/ref and c/ref columns, and the notes go under it."""
    phases = [
        steady(phase("pipeline", 8, 30), 33),
        steady(phase("ceiling", 8, 38), 40),
        steady(phase("reference", 8, 40), 41),
    ]
    result = BenchResult(
        settings=BenchSettings(concurrency=[8], reference=True),
        config={},
        environment={},
        phases=phases,
        summary=summarize(phases),
        notes=["synthetic prompt lengths are fitted, not exact (/tokenize: HTTP 404)"],
    )
    rows = csv_rows(result)
    assert rows[0]["vs_reference"] == pytest.approx(0.75)
    assert rows[1]["vs_reference"] == pytest.approx(0.95)
    assert rows[2]["vs_reference"] == "" and rows[2]["phase"] == "reference"
    assert rows[0]["steady_vs_ceiling"] == pytest.approx(33 / 40)
    assert rows[0]["steady_vs_reference"] == pytest.approx(33 / 41)
    console = Console(width=200, record=True)
    console.print(render_table(result))
    text = console.export_text()
    assert "p/ref" in text and "c/ref" in text and "0.75" in text and "0.95" in text
    lines = recommendation_text(result)
    assert "steady windows (no tail) at C=8: pipeline/ceiling 0.82" in lines
    assert "note: synthetic prompt lengths are fitted" in lines


def test_the_adaptive_phase_has_a_steady_window_under_its_moving_limit() -> None:
    """The adaptive phase's steady window follows its limit's steps; the summary sets it
    against the fixed phase with the most steady tokens/s, which need not be the one
    with the most tokens/s over the whole phase."""

    def timed(start: float, end: float, completion: int) -> RequestSample:
        return msgspec.structs.replace(
            sample(completion=completion, latency=end - start), end_s=end
        )

    # Two at a time, raised to three at t=1 and filled at once; one alone at the end.
    adaptive = [timed(0, 1, 10), timed(0, 1, 10)] + [timed(1, 2, 10) for _ in range(3)]
    adaptive += [timed(2, 3, 10)]
    a = phase_result(
        "adaptive", None, adaptive, errors=0, duration_s=3.0, server=None, ttft=None,
        limits=[(0.0, 2), (1.0, 3)],
    )  # fmt: skip
    assert (a.steady_s, a.steady_tokens_per_s) == (pytest.approx(2.0), pytest.approx(25.0))
    fixed = [timed(0, 1, 10), timed(0, 1, 10), timed(1, 2, 10), timed(1, 2, 10), timed(2, 9, 50)]
    f = phase_result("pipeline", 2, fixed, errors=0, duration_s=9.0, server=None, ttft=None)
    assert f.steady_tokens_per_s == pytest.approx(20.0)
    # One request alone: more over its whole phase (18 tok/s against 10), less steady.
    one = phase_result(
        "pipeline", 1, [timed(0, 1, 18)], errors=0, duration_s=1.0, server=None, ttft=None
    )
    s = summarize([f, one, a])
    assert s.best_concurrency == 1 and s.adaptive_vs_best == pytest.approx((60 / 3) / 18)
    assert s.best_steady_concurrency == 2
    assert s.adaptive_steady_tokens_per_s == pytest.approx(25.0)
    assert s.adaptive_steady_vs_best == pytest.approx(1.25)


def test_no_adaptive_steady_figure_without_a_window() -> None:
    """An adaptive phase without its limit's steps has no steady window, and the
    summary no steady comparison."""
    s = summarize([phase("pipeline", 1, 40), phase("adaptive", None, 30)])
    assert s.adaptive_vs_best == pytest.approx(0.75)
    assert s.adaptive_steady_tokens_per_s is None and s.adaptive_steady_vs_best is None
