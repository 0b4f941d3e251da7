"""What a bench produces: one :class:`PhaseResult` per phase and the :class:`Summary`.

Plain data, and :func:`phase_result` / :func:`summarize`, pure functions from the raw
samples and /metrics readings to the reported figures, so the report and the tests see
exactly the same numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from soc_async.bench.metrics import (
    CounterDelta,
    MetricHistogram,
    Percentiles,
    histogram_percentiles,
    hit_rate,
    percentiles,
    ratio,
    recommend,
    tokens_per_s,
)
from soc_async.bench.recording import RequestSample
from soc_async.bench.steady import Limit, Span, steady_window

__all__ = [
    "BenchResult",
    "BenchSettings",
    "LossStep",
    "PhaseResult",
    "Summary",
    "SweepPoint",
    "by_concurrency",
    "phase_result",
    "summarize",
]

PhaseName = Literal["pipeline", "ceiling", "adaptive", "reference"]
# A phase run with one thing switched off, for the loss breakdown (bench/breakdown.py);
# "" for the sweep's own phases.
Variant = Literal[
    "",
    "no-grammar",
    "no-summaries",
    "spread",
    "lockstep",
    "no-priority",
    "no-seeds",
    "monitored",
    "journaled",
]


class BenchSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What the bench was asked to do (the run's model and sampling are in its RunConfig)."""

    concurrency: list[int]  # the fixed limits swept, ascending ([]: size from the server)
    conversations: int = 8  # per concurrency value; at least that value are used
    max_turns: int = 6
    grammar: bool = True
    adaptive: bool = True
    shared_prefix: bool = True  # the ceiling's prompts share the pipeline's cached share
    tolerance: float = 0.05  # a recommendation is within this of the best tokens/s
    sweep_source: str = ""  # where the sweep's values came from (bench/sizing.py)
    reference: bool = False  # also run vLLM's own serving benchmark at each value
    breakdown: bool = False  # also run the phases that size each loss against the reference
    # Left out of the start of each settled window: the adaptive controller's first
    # decisions (bench/sweep.py's SETTLE_DECISIONS), in real seconds; set by the run.
    settle_s: float = 0.0

    def conversations_for(self, concurrency: int) -> int:
        """Conversations for one phase: at least ``concurrency`` of them, or the limit
        could never fill, since each conversation has one turn in flight at a time."""
        return max(self.conversations, concurrency)


class PhaseResult(msgspec.Struct, kw_only=True):
    """One phase's figures. Client-side queueing and server latency are kept apart."""

    phase: PhaseName
    concurrency: int | None  # the fixed limit; None for the adaptive run
    duration_s: float
    requests: int  # answered requests
    request_errors: int  # requests that failed for good
    output_tokens: int
    tokens_per_s: float  # output tokens over the phase's wall time
    mean_prompt_tokens: float | None  # of the turn requests
    mean_completion_tokens: float | None
    latency_s: Percentiles  # request sent to last byte
    queue_s: Percentiles  # waiting for a slot under the client's limit
    ttft_s: Percentiles  # the server's time to first token (its histogram); None: n/a
    prefix_hit_rate: float | None  # prefix-cache hits / queries over the phase (/metrics)
    cached_share: float | None  # cached / prompt tokens as the replies' usage reports
    preemptions: float | None
    conversations: int = 0  # pipeline and adaptive phases
    conversations_failed: int = 0
    failure_reasons: dict[str, int] = {}
    mean_capacity: float | None = None  # adaptive: the limit, time-weighted
    capacity_history: list[tuple[float, int]] = []  # adaptive: (seconds in, limit)
    # The steady window (bench/steady.py): while the limit was full, before the tail.
    steady_tokens_per_s: float | None = None
    steady_s: float | None = None  # the window's length
    occupancy: float | None = None  # requests in flight / the full level, in the window
    # The steady window less its first ``warm_s`` seconds, the adaptive controller's
    # search for its level (pipeline and adaptive phases, left out alike).
    settled_tokens_per_s: float | None = None
    settled_s: float | None = None
    variant: Variant = ""
    requests_by_kind: dict[str, int] = {}  # answered requests per call kind
    method: dict[str, Any] = {}  # how the phase was run where it matters (reference, load)


def phase_result(
    phase: PhaseName,
    concurrency: int | None,
    samples: Sequence[RequestSample],
    *,
    errors: int,
    duration_s: float,
    server: CounterDelta | None,
    ttft: MetricHistogram | None,
    limits: Sequence[tuple[float, int]] = (),
    warm_s: float | None = None,
    **extra: Any,
) -> PhaseResult:
    """The figures of one phase from its per-request samples and /metrics deltas.

    The steady window is taken under the fixed limit ``concurrency``, or for the
    adaptive run (``concurrency`` None) under its moving limit, ``limits``: the
    controller's steps, (time.monotonic(), limit), the samples' clock. With ``warm_s``,
    the settled window too: the steady window less its first ``warm_s`` seconds.
    """
    turns = [s for s in samples if s.kind == "turn"]
    limit: Limit | None = concurrency or (list(limits) if limits else None)
    spans = [Span(s.end_s - s.latency_s, s.end_s, s.completion) for s in samples]
    window = steady_window(spans, limit) if limit else None
    settled = steady_window(spans, limit, warm_s=warm_s) if limit and warm_s is not None else None
    output = sum(s.completion for s in samples)
    prompt = sum(s.prompt for s in samples)
    return PhaseResult(
        phase=phase,
        concurrency=concurrency,
        duration_s=duration_s,
        requests=len(samples),
        request_errors=errors,
        output_tokens=output,
        tokens_per_s=tokens_per_s(output, duration_s),
        mean_prompt_tokens=sum(s.prompt for s in turns) / len(turns) if turns else None,
        mean_completion_tokens=sum(s.completion for s in turns) / len(turns) if turns else None,
        latency_s=percentiles([s.latency_s for s in samples]),
        queue_s=percentiles([s.queue_s for s in samples]),
        ttft_s=histogram_percentiles(ttft),
        prefix_hit_rate=(
            hit_rate(server.prefix_cache_hits, server.prefix_cache_queries) if server else None
        ),
        cached_share=hit_rate(sum(s.cached for s in samples), prompt),
        preemptions=server.preemptions if server else None,
        steady_tokens_per_s=window.tokens_per_s if window else None,
        steady_s=window.seconds if window else None,
        occupancy=window.occupancy if window else None,
        settled_tokens_per_s=settled.tokens_per_s if settled else None,
        settled_s=settled.seconds if settled else None,
        requests_by_kind=dict(Counter(s.kind for s in samples)),
        **extra,
    )


class SweepPoint(msgspec.Struct, kw_only=True, frozen=True):
    concurrency: int
    pipeline_tokens_per_s: float
    ceiling_tokens_per_s: float | None
    ratio: float | None  # pipeline / ceiling
    reference_tokens_per_s: float | None = None  # vLLM's own benchmark, same shape
    vs_reference: float | None = None  # pipeline / reference
    ceiling_vs_reference: float | None = None
    # The same three ratios over the phases' steady windows (no tail).
    steady_ratio: float | None = None
    steady_vs_reference: float | None = None
    steady_ceiling_vs_reference: float | None = None


class Summary(msgspec.Struct, kw_only=True, frozen=True):
    points: list[SweepPoint]
    best_concurrency: int | None  # the fixed value with the most pipeline tokens/s
    best_tokens_per_s: float | None
    adaptive_tokens_per_s: float | None
    adaptive_vs_best: float | None  # adaptive / best fixed
    recommended: int | None  # smallest value within ``tolerance`` of the best
    # The same over the steady windows (no tail): the adaptive phase's (under its moving
    # limit) against the fixed phase with the most steady tokens/s. A phase of a few
    # hundred turns is mostly ramp and tail, which a run of thousands of chats is not.
    best_steady_concurrency: int | None = None
    adaptive_steady_tokens_per_s: float | None = None
    adaptive_steady_vs_best: float | None = None
    # ... and over the settled windows (the steady ones less the controller's search,
    # the same seconds left out of every phase): what a long run's adaptive limit holds.
    best_settled_concurrency: int | None = None
    adaptive_settled_tokens_per_s: float | None = None
    adaptive_settled_vs_best: float | None = None


def by_concurrency(
    phases: Sequence[PhaseResult], phase: PhaseName, variant: Variant = ""
) -> dict[int, PhaseResult]:
    """The fixed-limit phases of one kind (and variant), keyed by their limit."""
    return {
        p.concurrency: p
        for p in phases
        if p.phase == phase and p.variant == variant and p.concurrency
    }


def _steady(phase: PhaseResult | None) -> float | None:
    return phase.steady_tokens_per_s if phase is not None else None


def summarize(phases: Sequence[PhaseResult], tolerance: float = 0.05) -> Summary:
    """The sweep read across phases: ratios, the best fixed value, the adaptive run, the pick."""
    pipeline = by_concurrency(phases, "pipeline")
    ceiling = by_concurrency(phases, "ceiling")
    reference = by_concurrency(phases, "reference")
    points = []
    for c in sorted(pipeline):
        pipe, ceil, ref = pipeline[c], ceiling.get(c), reference.get(c)
        ceil_rate = ceil.tokens_per_s if ceil else None
        ref_rate = ref.tokens_per_s if ref else None
        rate = pipe.tokens_per_s
        points.append(
            SweepPoint(
                concurrency=c,
                pipeline_tokens_per_s=rate,
                ceiling_tokens_per_s=ceil_rate,
                ratio=ratio(rate, ceil_rate),
                reference_tokens_per_s=ref_rate,
                vs_reference=ratio(rate, ref_rate),
                ceiling_vs_reference=ratio(ceil_rate, ref_rate),
                steady_ratio=ratio(_steady(pipe), _steady(ceil)),
                steady_vs_reference=ratio(_steady(pipe), _steady(ref)),
                steady_ceiling_vs_reference=ratio(_steady(ceil), _steady(ref)),
            )
        )
    rates = {p.concurrency: p.pipeline_tokens_per_s for p in points}
    best = max(rates, key=lambda c: rates[c]) if rates else None
    best_rate = rates[best] if best is not None else None
    adaptive = next((p for p in phases if p.phase == "adaptive"), None)
    adaptive_rate = adaptive.tokens_per_s if adaptive else None
    best_steady, adaptive_steady, steady_vs = _against_best(pipeline, adaptive, "steady")
    best_settled, adaptive_settled, settled_vs = _against_best(pipeline, adaptive, "settled")
    return Summary(
        points=points,
        best_concurrency=best,
        best_tokens_per_s=best_rate,
        adaptive_tokens_per_s=adaptive_rate,
        adaptive_vs_best=ratio(adaptive_rate, best_rate),
        recommended=recommend(rates, tolerance),
        best_steady_concurrency=best_steady,
        adaptive_steady_tokens_per_s=adaptive_steady,
        adaptive_steady_vs_best=steady_vs,
        best_settled_concurrency=best_settled,
        adaptive_settled_tokens_per_s=adaptive_settled,
        adaptive_settled_vs_best=settled_vs,
    )


def _against_best(
    pipeline: dict[int, PhaseResult], adaptive: PhaseResult | None, window: str
) -> tuple[int | None, float | None, float | None]:
    """Over one kind of window ("steady" or "settled"): the fixed value with the most
    tokens/s in it, the adaptive phase's tokens/s in it, and adaptive / that best."""
    field = f"{window}_tokens_per_s"
    rates = {c: r for c, p in pipeline.items() if (r := getattr(p, field)) is not None}
    best = max(rates, key=lambda c: rates[c]) if rates else None
    mine = getattr(adaptive, field) if adaptive is not None else None
    return best, mine, ratio(mine, rates[best]) if best is not None else None


class LossStep(msgspec.Struct, kw_only=True, frozen=True):
    """One step of the loss breakdown at one concurrency (bench/breakdown.py): what the
    step switches on, the tokens/s after it, and after / before."""

    concurrency: int
    step: str
    tokens_per_s: float | None
    factor: float | None  # tokens/s after the step over before it; None for the start
    measured_by: str  # which phases were compared, in words
    # False: a switch the pipeline figure does not hold (a run's cost beside it, or the
    # bench's old way); its factor is the variant's tokens/s over the pipeline's, and it
    # stays out of the product that makes pipeline / reference.
    in_ladder: bool = True


class BenchResult(msgspec.Struct, kw_only=True):
    """Everything bench.json holds."""

    settings: BenchSettings
    config: dict[str, Any]  # the effective RunConfig, without the API key
    environment: dict[str, Any]
    phases: list[PhaseResult]
    summary: Summary
    breakdown: list[LossStep] = []  # with --breakdown
    notes: list[str] = []  # one line each: a phase skipped and why, a method's fallback
