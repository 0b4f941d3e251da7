"""Rates over a recent window and the ETA they give."""

from __future__ import annotations

import pytest

from soc_async.monitor.rates import RateWindow, eta_s


def test_rate_spans_the_window_not_the_whole_run() -> None:
    """A count that grew fast long ago and slowly lately: the rate is the recent one."""
    w = RateWindow(window_s=60)
    w.add(0, {"n": 0})
    w.add(10, {"n": 1000})  # a burst early on
    for t in range(20, 200, 10):
        w.add(t, {"n": 1000 + (t - 10)})  # then 1 a second
    assert w.rate("n") == pytest.approx(1.0)


def test_no_rate_before_a_span_and_none_for_unknown_keys() -> None:
    """One sample, or two under a second apart, give no rate; nor does a missing key."""
    w = RateWindow()
    assert w.rate("n") is None
    w.add(0, {"n": 0})
    w.add(0.5, {"n": 5})
    assert w.rate("n") is None
    w.add(2, {"n": 10})
    assert w.rate("n") == pytest.approx(5.0)
    assert w.rate("missing") is None


def test_sparse_samples_fall_back_to_the_last_before_the_window() -> None:
    """Samples further apart than the window still give a rate (over the longer span)."""
    w = RateWindow(window_s=60)
    w.add(0, {"n": 0})
    w.add(300, {"n": 600})
    assert w.rate("n") == pytest.approx(2.0)


def test_a_count_that_fell_gives_zero_not_a_negative_rate() -> None:
    """Counts are cumulative; one that went down (a reset) is not a negative rate."""
    w = RateWindow()
    w.add(0, {"n": 10})
    w.add(10, {"n": 0})
    assert w.rate("n") == 0.0


@pytest.mark.parametrize(
    ("remaining", "rate", "expected"),
    [(100, 2.0, 50.0), (0, None, 0.0), (-3, 1.0, 0.0), (5, None, None), (5, 0.0, None)],
)
def test_eta(remaining: int, rate: float | None, expected: float | None) -> None:
    """ETA: remaining / rate; 0 when nothing remains; None without a positive rate."""
    assert eta_s(remaining, rate) == expected
