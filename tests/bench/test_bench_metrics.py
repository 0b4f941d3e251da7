"""The bench's arithmetic: percentiles, counter and histogram deltas, ratios, the pick."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soc_async.bench.metrics import (
    TTFT_METRIC,
    MetricHistogram,
    counter_delta,
    histogram_delta,
    histogram_percentiles,
    histogram_quantile,
    hit_rate,
    merge_histograms,
    parse_histogram,
    percentile,
    percentiles,
    ratio,
    recommend,
    time_weighted_mean,
    tokens_per_s,
)
from soc_async.llm.metrics import MetricsSnapshot


def test_percentile_interpolates_between_ranks() -> None:
    """Linear interpolation between closest ranks, as numpy's default computes it."""
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile(values, 0.5) == pytest.approx(2.5)
    assert percentile(values, 0.9) == pytest.approx(3.7)
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_refuses_empty_sample_and_bad_quantile() -> None:
    """No data and a quantile outside [0, 1] are errors, not a silent zero."""
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


@settings(deadline=None)  # the machine is shared: a slow example is not a failure
@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50))
def test_percentiles_are_ordered_and_within_range(values: list[float]) -> None:
    """p50 <= p90 <= p99, all between the sample's min and max."""
    p = percentiles(values)
    assert p.p50 is not None and p.p90 is not None and p.p99 is not None
    assert min(values) <= p.p50 <= p.p90 <= p.p99 <= max(values)


def test_percentiles_of_nothing_are_unknown() -> None:
    """An empty sample reports None (n/a), never 0."""
    p = percentiles([])
    assert (p.p50, p.p90, p.p99) == (None, None, None)


def test_ratio_and_rates_guard_zero() -> None:
    """A zero or unknown denominator gives None; a phase of no time gives 0 tokens/s."""
    assert ratio(95.0, 100.0) == pytest.approx(0.95)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert tokens_per_s(500, 2.0) == 250.0
    assert tokens_per_s(500, 0.0) == 0.0
    assert hit_rate(70, 100) == pytest.approx(0.7)
    assert hit_rate(0, 0) is None
    assert hit_rate(None, 10) is None


def test_counter_delta_subtracts_and_detects_restart() -> None:
    """Counters grow by after - before; a counter that shrank means unknown (None)."""
    before = MetricsSnapshot(
        time=10.0, prefix_cache_hits=100, prefix_cache_queries=400, preemptions=2,
        generation_tokens=1000, prompt_tokens=5000, running=7,
    )  # fmt: skip
    after = MetricsSnapshot(
        time=25.0, prefix_cache_hits=850, prefix_cache_queries=1400, preemptions=5,
        generation_tokens=3000, prompt_tokens=6000, running=0,
    )  # fmt: skip
    d = counter_delta(before, after)
    assert d is not None
    assert d.seconds == 15.0
    assert (d.prefix_cache_hits, d.prefix_cache_queries) == (750, 1000)
    assert d.preemptions == 3
    assert (d.generation_tokens, d.prompt_tokens) == (2000, 1000)
    restarted = MetricsSnapshot(time=30.0, generation_tokens=10)
    assert counter_delta(after, restarted) is None


PAGE = """\
# HELP vllm:time_to_first_token_seconds MetricHistogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="m"}} {a1}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",model_name="m"}} {a2}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="1.0",model_name="m"}} {a3}
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="m"}} {a4}
vllm:time_to_first_token_seconds_count{{engine="0",model_name="m"}} {a4}
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="m"}} {s}
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.1",model_name="m"}} 1.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="0.5",model_name="m"}} 1.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="1.0",model_name="m"}} 1.0
vllm:time_to_first_token_seconds_bucket{{engine="1",le="+Inf",model_name="m"}} 1.0
vllm:time_to_first_token_seconds_count{{engine="1",model_name="m"}} 1.0
vllm:time_to_first_token_seconds_sum{{engine="1",model_name="m"}} 0.05
# HELP vllm:num_requests_running Running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} 3.0
"""


def test_parse_histogram_sums_label_sets() -> None:
    """Buckets of every engine add up per bound; +Inf comes last; count and sum add up."""
    h = parse_histogram(PAGE.format(a1=2, a2=5, a3=9, a4=10, s=4.0), TTFT_METRIC)
    assert h is not None
    assert h.buckets == [(0.1, 3.0), (0.5, 6.0), (1.0, 10.0), (math.inf, 11.0)]
    assert h.count == 11.0
    assert h.sum == pytest.approx(4.05)


def test_parse_histogram_absent_is_none() -> None:
    """A page without the histogram (the fake server, an old vLLM) gives None."""
    assert parse_histogram("# TYPE x gauge\nx 1.0\n", TTFT_METRIC) is None
    assert parse_histogram("", TTFT_METRIC) is None


def test_histogram_delta_and_quantiles() -> None:
    """Deltas are per bucket; quantiles interpolate inside the bucket the rank falls in."""
    before = parse_histogram(PAGE.format(a1=2, a2=5, a3=9, a4=10, s=4.0), TTFT_METRIC)
    after = parse_histogram(PAGE.format(a1=2, a2=15, a3=19, a4=20, s=9.0), TTFT_METRIC)
    d = histogram_delta(before, after)
    assert d is not None
    # 10 new observations: 0 under 0.1 s, 10 in (0.1, 0.5].
    assert d.buckets == [(0.1, 0.0), (0.5, 10.0), (1.0, 10.0), (math.inf, 10.0)]
    assert d.count == 10.0 and d.sum == pytest.approx(5.0)
    assert histogram_quantile(d, 0.5) == pytest.approx(0.3)
    assert histogram_quantile(d, 0.9) == pytest.approx(0.46)
    assert histogram_quantile(d, 1.0) == pytest.approx(0.5)


def test_histogram_quantile_edges() -> None:
    """The first bucket starts at 0; the +Inf bucket gives the largest finite bound."""
    h = MetricHistogram(buckets=[(1.0, 4.0), (2.0, 4.0), (math.inf, 8.0)], count=8.0, sum=20.0)
    assert histogram_quantile(h, 0.25) == pytest.approx(0.5)
    assert histogram_quantile(h, 0.99) == 2.0
    empty = MetricHistogram(buckets=[(1.0, 0.0), (math.inf, 0.0)])
    assert histogram_quantile(empty, 0.5) is None
    assert histogram_quantile(None, 0.5) is None
    p = histogram_percentiles(None)
    assert (p.p50, p.p90, p.p99) == (None, None, None)


def test_histogram_delta_unknown_cases() -> None:
    """No after-reading, changed bounds or a shrinking count make the delta unknown."""
    a = MetricHistogram(buckets=[(1.0, 2.0), (math.inf, 3.0)], count=3.0)
    b = MetricHistogram(buckets=[(1.0, 1.0), (math.inf, 1.0)], count=1.0)
    other = MetricHistogram(buckets=[(0.5, 2.0), (math.inf, 3.0)], count=3.0)
    assert histogram_delta(a, None) is None
    assert histogram_delta(a, other) is None
    assert histogram_delta(a, b) is None
    assert histogram_delta(None, a) == a


def test_merge_histograms_all_or_nothing() -> None:
    """Servers' histograms add up; one unknown or mismatched makes the whole unknown."""
    a = MetricHistogram(buckets=[(1.0, 2.0), (math.inf, 3.0)], count=3.0, sum=1.0)
    b = MetricHistogram(buckets=[(1.0, 1.0), (math.inf, 4.0)], count=4.0, sum=2.0)
    m = merge_histograms([a, b])
    assert m == MetricHistogram(buckets=[(1.0, 3.0), (math.inf, 7.0)], count=7.0, sum=3.0)
    assert merge_histograms([a, None]) is None
    assert merge_histograms([]) is None


def test_recommend_picks_smallest_within_tolerance() -> None:
    """Past the knee, the cheapest value within 5% of the best throughput is chosen."""
    points = {1: 40.0, 4: 150.0, 16: 335.0, 64: 345.0, 128: 350.0}
    assert recommend(points) == 16  # 335 >= 0.95 * 350 = 332.5
    assert recommend(points, tolerance=0.0) == 128
    assert recommend({8: 10.0}) == 8
    assert recommend({}) is None
    assert recommend({1: 0.0, 2: 0.0}) is None


def test_time_weighted_mean_of_a_step_function() -> None:
    """Each value holds until the next change; the mean weighs it by how long it held."""
    steps = [(0.0, 4.0), (10.0, 8.0), (15.0, 16.0)]
    assert time_weighted_mean(steps, 20.0) == pytest.approx((40 + 40 + 80) / 20)
    assert time_weighted_mean([], 5.0) is None
    assert time_weighted_mean([(3.0, 7.0)], 3.0) == 7.0
