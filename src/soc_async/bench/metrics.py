"""The bench's arithmetic: percentiles, /metrics deltas, histogram quantiles, the pick.

Pure functions over plain numbers and parsed /metrics text, so every figure the bench
reports is tested without a server (vLLM's own serving benchmark keeps its metrics in one
pure function for the same reason). Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:  # annotations only: the CLI imports this module to build its parser
    from soc_async.llm.metrics import MetricsSnapshot

__all__ = [
    "TTFT_METRIC",
    "CounterDelta",
    "MetricHistogram",
    "Percentiles",
    "counter_delta",
    "histogram_delta",
    "histogram_percentiles",
    "histogram_quantile",
    "hit_rate",
    "merge_histograms",
    "parse_histogram",
    "percentile",
    "percentiles",
    "ratio",
    "recommend",
    "time_weighted_mean",
    "tokens_per_s",
]

TTFT_METRIC = "vllm:time_to_first_token_seconds"

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


class Percentiles(msgspec.Struct, kw_only=True, frozen=True):
    """p50/p90/p99 of a sample, in its unit (seconds here); None where there is no data."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` with linear interpolation between ranks.

    The same definition as numpy's default, so figures compare with other tools'.
    Raises ValueError on an empty sample or ``q`` outside [0, 1].
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {q}")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    value = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    # Rounding can put the sum an ulp past its neighbours; a percentile never leaves them.
    return min(max(value, ordered[lo]), ordered[hi])


def percentiles(values: Sequence[float]) -> Percentiles:
    """p50, p90 and p99 of ``values``; all None for an empty sample."""
    if not values:
        return Percentiles()
    p50, p90, p99 = (percentile(values, q) for q in QUANTILES)
    return Percentiles(p50=p50, p90=p90, p99=p99)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def tokens_per_s(tokens: float, seconds: float) -> float:
    """A rate over a phase; 0 for a phase that took no time (nothing to divide)."""
    return tokens / seconds if seconds > 0 else 0.0


def hit_rate(hits: float | None, queries: float | None) -> float | None:
    """Share of prompt tokens served from the prefix cache; None when nothing was looked up."""
    if hits is None or not queries:
        return None
    return hits / queries


class CounterDelta(msgspec.Struct, kw_only=True, frozen=True):
    """What a server's cumulative counters grew by over one phase."""

    seconds: float
    prefix_cache_hits: float
    prefix_cache_queries: float
    preemptions: float
    generation_tokens: float
    prompt_tokens: float


def counter_delta(before: MetricsSnapshot, after: MetricsSnapshot) -> CounterDelta | None:
    """``after - before`` for the counters; None when one went backwards.

    A counter that shrank means the server restarted between the readings: the
    difference would be meaningless, so the phase's server figures are unknown.
    """
    fields = (
        "prefix_cache_hits",
        "prefix_cache_queries",
        "preemptions",
        "generation_tokens",
        "prompt_tokens",
    )
    grown = {f: getattr(after, f) - getattr(before, f) for f in fields}
    if any(v < 0 for v in grown.values()):
        return None
    return CounterDelta(seconds=after.time - before.time, **grown)


class MetricHistogram(msgspec.Struct, kw_only=True, frozen=True):
    """A Prometheus histogram: cumulative counts per upper bound, ascending, +Inf last."""

    buckets: list[tuple[float, float]]  # (le, observations <= le)
    count: float = 0.0
    sum: float = 0.0


def parse_histogram(text: str, name: str) -> MetricHistogram | None:
    """The histogram ``name`` in a Prometheus text page, summed over label sets.

    Several engines or models each export their own series; their buckets add up. None
    when the page has no such histogram (an older server, or not vLLM). Raises
    ValueError on text the Prometheus parser refuses.
    """
    buckets: dict[float, float] = {}
    count = total = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        if family.name != name or family.type != "histogram":
            continue
        found = True
        for sample in family.samples:
            if sample.name == name + "_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + float(sample.value)
            elif sample.name == name + "_count":
                count += float(sample.value)
            elif sample.name == name + "_sum":
                total += float(sample.value)
    if not found or not buckets:
        return None
    return MetricHistogram(buckets=sorted(buckets.items()), count=count, sum=total)


def merge_histograms(hists: Sequence[MetricHistogram | None]) -> MetricHistogram | None:
    """Several servers' histograms as one; None when any is unknown or their bounds differ."""
    if not hists or any(h is None for h in hists):
        return None
    known = [h for h in hists if h is not None]
    bounds = [le for le, _ in known[0].buckets]
    if any([le for le, _ in h.buckets] != bounds for h in known):
        return None
    buckets = [(le, sum(h.buckets[i][1] for h in known)) for i, le in enumerate(bounds)]
    return MetricHistogram(
        buckets=buckets, count=sum(h.count for h in known), sum=sum(h.sum for h in known)
    )


def histogram_delta(
    before: MetricHistogram | None, after: MetricHistogram | None
) -> MetricHistogram | None:
    """The observations made between two readings of one histogram.

    ``before`` None (the histogram appeared meanwhile) counts from zero. None when
    ``after`` is unknown, the bucket bounds changed, or a count went backwards (the
    server restarted).
    """
    if after is None:
        return None
    if before is None:
        return after
    if [le for le, _ in before.buckets] != [le for le, _ in after.buckets]:
        return None
    buckets = [(le, a - b) for (le, a), (_, b) in zip(after.buckets, before.buckets, strict=True)]
    if any(c < 0 for _, c in buckets) or after.count < before.count:
        return None
    return MetricHistogram(
        buckets=buckets, count=after.count - before.count, sum=after.sum - before.sum
    )


def histogram_quantile(hist: MetricHistogram | None, q: float) -> float | None:
    """The ``q`` quantile of a histogram as Prometheus's ``histogram_quantile`` gives it.

    Linear interpolation inside the bucket the rank falls in, the first bucket starting
    at 0; a rank in the +Inf bucket gives the largest finite bound (the histogram knows
    no more). None for an empty or unknown histogram.
    """
    if hist is None or not hist.buckets:
        return None
    total = hist.buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in hist.buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def histogram_percentiles(hist: MetricHistogram | None) -> Percentiles:
    """p50, p90 and p99 of a histogram; all None when it is unknown or empty."""
    p50, p90, p99 = (histogram_quantile(hist, q) for q in QUANTILES)
    return Percentiles(p50=p50, p90=p90, p99=p99)


def recommend(points: Mapping[int, float], tolerance: float = 0.05) -> int | None:
    """The smallest concurrency whose tokens/s is within ``tolerance`` of the best.

    Past the knee of the curve more requests in flight buy little throughput and cost
    latency, KV cache and memory, so the cheapest value that is nearly as good is the
    one to run. None when there are no points or none produced tokens.
    """
    if not points:
        return None
    best = max(points.values())
    if best <= 0:
        return None
    return min(c for c, rate in points.items() if rate >= (1.0 - tolerance) * best)


def time_weighted_mean(samples: Sequence[tuple[float, float]], end: float) -> float | None:
    """The mean of a step function given as (time, value) changes, up to ``end``.

    Used for the adaptive run's capacity: each value holds from its time to the next
    sample's. None when there are no samples or no time passed.
    """
    if not samples:
        return None
    start = samples[0][0]
    span = end - start
    if span <= 0:
        return float(samples[-1][1])
    area = 0.0
    for (t, value), (t_next, _) in zip(samples, [*samples[1:], (end, 0.0)], strict=True):
        area += value * max(0.0, min(t_next, end) - t)
    return area / span
