"""What a bench produces: one :class:`PhaseResult` per phase and the :class:`Summary`.

Plain data, and :func:`phase_result` / :func:`summarize`, pure functions from the raw
samples and /metrics readings to the reported figures, so the report and the tests see
exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from soc_async.bench.metrics import (
    CounterDelta,
    Histogram,
    Percentiles,
    histogram_percentiles,
    hit_rate,
    percentiles,
    ratio,
    recommend,
    tokens_per_s,
)
from soc_async.bench.recording import RequestSample

__all__ = [
    "BenchResult",
    "BenchSettings",
    "PhaseResult",
    "Summary",
    "SweepPoint",
    "phase_result",
    "summarize",
]

Phase = Literal["pipeline", "ceiling", "adaptive"]


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

    def conversations_for(self, concurrency: int) -> int:
        """Conversations for one phase: at least ``concurrency`` of them, or the limit
        could never fill, since each conversation has one turn in flight at a time."""
        return max(self.conversations, concurrency)


class PhaseResult(msgspec.Struct, kw_only=True):
    """One phase's figures. Client-side queueing and server latency are kept apart."""

    phase: Phase
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


def phase_result(
    phase: Phase,
    concurrency: int | None,
    samples: Sequence[RequestSample],
    *,
    errors: int,
    duration_s: float,
    server: CounterDelta | None,
    ttft: Histogram | None,
    **extra: Any,
) -> PhaseResult:
    """The figures of one phase from its per-request samples and /metrics deltas."""
    turns = [s for s in samples if s.kind == "turn"]
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
        **extra,
    )


class SweepPoint(msgspec.Struct, kw_only=True, frozen=True):
    concurrency: int
    pipeline_tokens_per_s: float
    ceiling_tokens_per_s: float | None
    ratio: float | None  # pipeline / ceiling


class Summary(msgspec.Struct, kw_only=True, frozen=True):
    points: list[SweepPoint]
    best_concurrency: int | None  # the fixed value with the most pipeline tokens/s
    best_tokens_per_s: float | None
    adaptive_tokens_per_s: float | None
    adaptive_vs_best: float | None  # adaptive / best fixed
    recommended: int | None  # smallest value within ``tolerance`` of the best


def summarize(phases: Sequence[PhaseResult], tolerance: float = 0.05) -> Summary:
    """The sweep read across phases: ratios, the best fixed value, the adaptive run, the pick."""
    pipeline = {p.concurrency: p for p in phases if p.phase == "pipeline" and p.concurrency}
    ceiling = {p.concurrency: p for p in phases if p.phase == "ceiling" and p.concurrency}
    points = []
    for c in sorted(pipeline):
        ceil = ceiling.get(c)
        ceil_rate = ceil.tokens_per_s if ceil else None
        rate = pipeline[c].tokens_per_s
        points.append(
            SweepPoint(
                concurrency=c,
                pipeline_tokens_per_s=rate,
                ceiling_tokens_per_s=ceil_rate,
                ratio=ratio(rate, ceil_rate),
            )
        )
    rates = {p.concurrency: p.pipeline_tokens_per_s for p in points}
    best = max(rates, key=lambda c: rates[c]) if rates else None
    best_rate = rates[best] if best is not None else None
    adaptive = next((p for p in phases if p.phase == "adaptive"), None)
    adaptive_rate = adaptive.tokens_per_s if adaptive else None
    return Summary(
        points=points,
        best_concurrency=best,
        best_tokens_per_s=best_rate,
        adaptive_tokens_per_s=adaptive_rate,
        adaptive_vs_best=ratio(adaptive_rate, best_rate),
        recommended=recommend(rates, tolerance),
    )


class BenchResult(msgspec.Struct, kw_only=True):
    """Everything bench.json holds."""

    settings: BenchSettings
    config: dict[str, Any]  # the effective RunConfig, without the API key
    environment: dict[str, Any]
    phases: list[PhaseResult]
    summary: Summary
