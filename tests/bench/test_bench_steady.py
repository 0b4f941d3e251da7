"""The steady window: while the limit was full, before the end-of-phase tail."""

from __future__ import annotations

import pytest

from soc_async.bench.steady import Span, steady_window


def waves(n: int, limit: int, seconds: float, tokens: int) -> list[Span]:
    """``n`` equal requests run ``limit`` at a time, each wave ``seconds`` long."""
    return [Span((i // limit) * seconds, (i // limit + 1) * seconds, tokens) for i in range(n)]


def test_synchronised_waves_end_at_the_part_full_last_wave() -> None:
    """Nine requests two at a time in 1 s waves, the last alone: the window is the four
    full waves, and their tokens over their time."""
    spans = waves(9, 2, 1.0, 100)
    window = steady_window(spans, 2)
    assert window is not None
    assert (window.start, window.end, window.level) == (0.0, 4.0, 2)
    assert window.tokens == pytest.approx(800)
    assert window.tokens_per_s == pytest.approx(200)
    assert window.occupancy == pytest.approx(1.0)
    whole = sum(s.tokens for s in spans) / 5.0
    assert whole == pytest.approx(180) and window.tokens_per_s > whole


def test_conversations_finishing_one_by_one() -> None:
    """Three chats of back-to-back requests under a limit of three: the window closes
    when the first chat ends, and the request straddling the end counts in part."""
    spans = [
        Span(0.0, 2.0, 20), Span(2.0, 4.0, 20),  # chat a ends at 4
        Span(0.0, 3.0, 30), Span(3.0, 6.0, 30),  # chat b
        Span(0.0, 1.0, 10), Span(1.0, 5.0, 40), Span(5.0, 9.0, 40),  # chat c
    ]  # fmt: skip
    window = steady_window(spans, 3)
    assert window is not None
    assert (window.start, window.end) == (0.0, 4.0)
    # a: 40; b: 30 + 1/3 of 30; c: 10 + 3/4 of 40.
    assert window.tokens == pytest.approx(40 + 30 + 10 + 10 + 30)


def test_gaps_between_turns_lower_the_occupancy() -> None:
    """A slot idle between a chat's turns is the client's loss: occupancy says how much
    of the window the slots were busy."""
    spans = [Span(0.0, 4.0, 40), Span(0.0, 1.0, 10), Span(1.5, 4.0, 25), Span(4.0, 5.0, 1)]
    window = steady_window(spans, 2)
    assert window is not None and (window.start, window.end) == (0.0, 4.0)
    assert window.occupancy == pytest.approx((4.0 + 1.0 + 2.5) / (2 * 4.0))


def test_fewer_requests_than_the_limit_use_them_all_as_the_level() -> None:
    """Two requests under a limit of eight are full at two."""
    window = steady_window([Span(0.0, 2.0, 10), Span(0.0, 3.0, 10)], 8)
    assert window is not None and window.level == 2 and window.end == 2.0


def test_no_window_without_requests_or_time() -> None:
    """No requests, no limit, or a level that never held for any time: no window."""
    assert steady_window([], 4) is None
    assert steady_window([Span(0.0, 1.0, 5)], 0) is None
    assert steady_window([Span(1.0, 1.0, 5)], 1) is None
