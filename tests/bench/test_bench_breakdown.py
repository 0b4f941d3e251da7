"""The loss breakdown: a ladder from vLLM's benchmark down to the pipeline's figure."""

from __future__ import annotations

import math

import pytest

from soc_async.bench.breakdown import loss_steps
from soc_async.bench.metrics import Percentiles
from soc_async.bench.results import PhaseResult


def result(
    phase: str,
    rate: float,
    steady: float | None,
    variant: str = "",
    *,
    summaries: int = 0,
    occupancy: float | None = None,
) -> PhaseResult:
    return PhaseResult(
        phase=phase,  # type: ignore[arg-type]
        concurrency=8,
        duration_s=100.0,
        requests=24,
        request_errors=0,
        output_tokens=int(rate * 100),
        tokens_per_s=rate,
        mean_prompt_tokens=2590.0,
        mean_completion_tokens=200.0,
        latency_s=Percentiles(),
        queue_s=Percentiles(p50=0.0),
        ttft_s=Percentiles(),
        prefix_hit_rate=0.69,
        cached_share=None,
        preemptions=0.0,
        steady_tokens_per_s=steady,
        occupancy=occupancy,
        variant=variant,  # type: ignore[arg-type]
        requests_by_kind={"turn": 24 - summaries, "summary": summaries} if summaries else {},
    )


def test_the_ladder_multiplies_out_to_pipeline_over_reference() -> None:
    """reference -> ceiling -> spread load -> bare pipeline -> grammar -> summaries ->
    tail: each factor is after / before, and their product is the pipeline's whole-phase
    tokens/s over the reference's steady figure. Grammar and summaries are read as the
    pipeline's share of a load of its own lengths, against the variant's share of its own
    (the variant without a grammar writes longer turns, which run faster by themselves)."""
    phases = [
        result("pipeline", 27.0, 30.0, summaries=2, occupancy=0.97),
        result("ceiling", 38.0, 39.0),
        result("reference", 40.0, 40.0),
        result("ceiling", 37.0, 37.0, "spread"),
        result("pipeline", 60.0, 60.0, "no-grammar"),
        result("ceiling", 64.0, 64.0, "no-grammar"),
        result("pipeline", 30.0, 32.0, "no-summaries"),
        result("ceiling", 36.0, 36.0, "no-summaries"),
        result("pipeline", 29.0, 31.0, "no-priority"),
        result("pipeline", 24.0, 25.0, "lockstep"),
        result("pipeline", 27.0, 29.0, "monitored"),
        result("pipeline", 27.0, 30.0, "journaled"),
    ]
    rows = loss_steps(phases)
    ladder = [r for r in rows if r.in_ladder]
    steps = [r.step.split(":")[0] for r in ladder]
    assert steps == [
        "vLLM's own benchmark", "method", "prompt-length spread",
        "the priority field and the priority scheduler", "per-request sampling seeds",
        "stop strings", "conversations", "turn grammar", "summary calls",
        "end-of-phase tail",
    ]  # fmt: skip
    factors = {r.step.split(":")[0]: r.factor for r in ladder}
    assert factors["method"] == pytest.approx(39 / 40)
    assert factors["prompt-length spread"] == pytest.approx(37 / 39)
    assert factors["the priority field and the priority scheduler"] == pytest.approx(30 / 31)
    assert factors["per-request sampling seeds"] == pytest.approx(1.0)
    assert factors["stop strings"] == pytest.approx(1.0)
    own = 30 / 37
    assert factors["turn grammar"] == pytest.approx(own / (60 / 64))
    assert factors["summary calls"] == pytest.approx(own / (32 / 36))
    assert factors["conversations"] == pytest.approx(
        own / factors["turn grammar"] / factors["summary calls"] / (30 / 31)
    )
    assert factors["end-of-phase tail"] == pytest.approx(27 / 30)
    product = math.prod(r.factor for r in ladder if r.factor is not None)
    assert product == pytest.approx(27.0 / 40.0)
    assert ladder[-1].tokens_per_s == 27.0
    assert "slots idle 3%" in ladder[6].measured_by
    # The switches the pipeline figure does not hold: each against the pipeline, outside
    # the product.
    beside = {r.step.split(":")[1].strip(): r.factor for r in rows if not r.in_ladder}
    assert beside == {
        "all conversations started at once (the bench before)": pytest.approx(25 / 30),
        "/metrics readings and the live panel (a run's)": pytest.approx(29 / 30),
        "the journal's writes and fsyncs (a run's)": pytest.approx(1.0),
    }


def test_without_reference_summaries_or_grammar() -> None:
    """No reference: the ladder starts at the ceiling. No summary calls made: that step
    is 1. Grammar off in the run: that step is 1 and says why."""
    phases = [
        result("pipeline", 27.0, 30.0),
        result("ceiling", 38.0, 40.0),
        result("ceiling", 36.0, 36.0, "spread"),
    ]
    rows = loss_steps(phases, grammar=False)
    assert rows[0].step == "the bench's uniform load" and rows[0].tokens_per_s == 40.0
    by_step = {r.step.split(":")[0]: r for r in rows}
    assert "none sent" in by_step["the priority field and the priority scheduler"].measured_by
    assert "none sent" in by_step["per-request sampling seeds"].measured_by
    assert not any(not r.in_ladder for r in rows)  # no switch phases, no rows beside
    assert by_step["turn grammar"].factor == pytest.approx(1.0)
    assert "--no-grammar" in by_step["turn grammar"].measured_by
    assert by_step["summary calls"].factor == pytest.approx(1.0)
    assert "none made" in by_step["summary calls"].measured_by
    assert math.prod(r.factor for r in rows if r.factor is not None) == pytest.approx(27 / 40)


def test_missing_variant_leaves_its_step_unknown() -> None:
    """A grammar step without its no-grammar phase is unknown, not a made-up 1."""
    phases = [result("pipeline", 27.0, 30.0), result("ceiling", 38.0, 40.0)]
    by_step = {r.step.split(":")[0]: r for r in loss_steps(phases)}
    assert by_step["turn grammar"].factor is None
    assert by_step["conversations"].tokens_per_s is None
    assert by_step["end-of-phase tail"].factor == pytest.approx(0.9)


def test_no_steady_window_no_ladder() -> None:
    """A pipeline without a steady window gives no rows."""
    assert loss_steps([result("pipeline", 27.0, None), result("ceiling", 38.0, 40.0)]) == []
