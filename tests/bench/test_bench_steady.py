"""The steady window: while the limit was full, before the end-of-phase tail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def chats(n: int, turns: int, seconds: float, tokens: int, stagger: float = 0.0) -> list[Span]:
    """``n`` chats of ``turns`` back-to-back requests each, chat ``i`` starting at
    ``i * stagger``."""
    return [
        Span(i * stagger + k * seconds, i * stagger + (k + 1) * seconds, tokens)
        for i in range(n)
        for k in range(turns)
    ]


def test_a_raise_the_waiting_requests_fill_at_once_is_no_fall() -> None:
    """Two requests at a time in 1 s waves, the limit raised to 4 at t=2 (the next wave
    starts four): the window runs from the first wave to the tail, over both levels."""
    spans = waves(4, 2, 1.0, 10) + [Span(2.0, 3.0, 10) for _ in range(4)]
    spans += [Span(3.0, 4.0, 10) for _ in range(4)] + [Span(4.0, 5.0, 10)]
    window = steady_window(spans, [(0.0, 2), (2.0, 4)])
    assert window is not None
    assert (window.start, window.end) == (0.0, 4.0)
    assert window.tokens == pytest.approx(120)
    assert window.level == pytest.approx((2 * 2 + 4 * 2) / 4)
    assert window.occupancy == pytest.approx(1.0)


def test_a_raise_left_unfilled_ends_the_window() -> None:
    """Three chats under a limit raised to 8 at t=1: from then on the slots are never
    full, so the window ends at the raise, as a fixed 8 would never have begun."""
    spans = chats(3, 4, 1.0, 10)
    window = steady_window(spans, [(0.0, 3), (1.0, 8)])
    assert window is not None and (window.start, window.end) == (0.0, 1.0)
    assert window.tokens == pytest.approx(30)
    assert steady_window(spans, 8) is None


def test_a_cut_below_the_requests_in_flight_stays_full() -> None:
    """A limit cut from 4 to 2 while four requests run: in flight is above the level
    until they drain, and the window goes on to the tail."""
    spans = [Span(0.0, 2.0, 20) for _ in range(4)] + chats(2, 2, 1.0, 10, 0.0)
    spans = spans[:4] + [Span(s.start + 2.0, s.end + 2.0, s.tokens) for s in spans[4:]]
    spans += [Span(4.0, 5.0, 10)]
    window = steady_window(spans, [(0.0, 4), (1.0, 2)])
    assert window is not None and (window.start, window.end) == (0.0, 4.0)
    assert window.level == pytest.approx((4 * 1 + 2 * 3) / 4)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 20), st.integers(0, 100)),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 8),
)
def test_a_limit_that_never_moves_is_the_fixed_limit(
    raw: list[tuple[int, int, int]], limit: int
) -> None:
    """One step of ``limit`` from the first request gives the window the fixed
    ``limit`` gives, whatever the requests."""
    spans = [Span(a / 10, (a + d) / 10, t) for a, d, t in raw]
    first = min(s.start for s in spans)
    fixed, moving = steady_window(spans, limit), steady_window(spans, [(first, limit)])
    assert (fixed is None) == (moving is None)
    if fixed is not None and moving is not None:
        assert (moving.start, moving.end) == (fixed.start, fixed.end)
        assert moving.tokens == pytest.approx(fixed.tokens)
        assert moving.level == pytest.approx(fixed.level)
        assert moving.occupancy == pytest.approx(fixed.occupancy)


def test_warm_up_left_out_of_the_window() -> None:
    """The first ``warm_s`` seconds of the window are left out (a controller's search),
    the rest measured alike; a window no longer than the warm-up is none."""
    spans = waves(9, 2, 1.0, 100)
    window = steady_window(spans, 2, warm_s=1.5)
    assert window is not None and (window.start, window.end) == (1.5, 4.0)
    assert window.tokens == pytest.approx(500) and window.tokens_per_s == pytest.approx(200)
    assert window.occupancy == pytest.approx(1.0) and window.level == pytest.approx(2)
    assert steady_window(spans, 2, warm_s=4.0) is None


def test_a_search_at_the_start_is_left_out_with_the_warm_up() -> None:
    """A limit that overshoots (four at once, each request three times as slow), cut to
    two at t=1 while they drain: over the whole window the overshoot costs; after a
    warm-up of 3 s it is gone."""
    spans = [Span(0.0, 3.0, 100) for _ in range(4)]
    spans += [Span(s.start + 3.0, s.end + 3.0, s.tokens) for s in waves(8, 2, 1.0, 100)]
    steps = [(0.0, 4), (1.0, 2)]
    whole = steady_window(spans, steps)
    settled = steady_window(spans, steps, warm_s=3.0)
    assert whole is not None and settled is not None
    assert (whole.start, whole.end, settled.start) == (0.0, 7.0, 3.0)
    assert whole.tokens_per_s == pytest.approx(1200 / 7)
    assert settled.tokens_per_s == pytest.approx(200)
    assert whole.level == pytest.approx((4 * 1 + 2 * 6) / 7) and settled.level == pytest.approx(2)
