"""A phase's steady window: the time during which the client's limit was full.

A bench phase ends with a tail: its conversations finish one by one (a synthetic load's
last wave runs part-full), and fewer requests are in flight than the limit allows. A run
of thousands of conversations has no such tail, so besides the whole phase's output
tokens/s the bench reports the rate over the phase's *steady window*: from the moment
the requests in flight first reach the full level (the limit, or every request of the
phase when there are fewer) to the moment they last fall below it, never to return.

The adaptive phase's limit moves: there the full level is the limit in force at each
moment (the controller's steps, on the requests' clock), so one rule measures fixed and
adaptive phases alike. A raise the waiting requests fill at once is no fall; the tail
is, as in a fixed phase.

Each request's output tokens are spread evenly over its time in flight (sent to last
byte), and a request that straddles an edge of the window counts in part. That is an
approximation (a request prefills first and decodes after), applied alike to every
phase, vLLM's own benchmark included, whose per-token times are known but not used, so
that all phases are measured by one rule. Pure functions over plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = ["Limit", "Span", "Window", "steady_window"]


class Span(msgspec.Struct, array_like=True, frozen=True):
    """One request: sent, last byte (seconds on any one clock), output tokens."""

    start: float
    end: float
    tokens: int


class Window(msgspec.Struct, kw_only=True, frozen=True):
    """The steady window of a phase and what it held."""

    start: float
    end: float
    level: float  # requests in flight while full, min(limit, requests); mean if it moved
    tokens: float  # output tokens spread into the window
    occupancy: float  # time-weighted requests in flight / level, 0..1

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


Limit = int | Sequence[tuple[float, int]]

# At one instant a request ending comes first, then the limit's change, then a request
# starting: a slot handed on is never counted twice, and a raise the waiting requests
# fill at once reads as full throughout.
_END, _LIMIT, _START = 0, 1, 2


def _events(
    spans: Sequence[Span], steps: Sequence[tuple[float, int]]
) -> list[tuple[float, int, int]]:
    return sorted(
        [(s.start, _START, 1) for s in spans]
        + [(s.end, _END, -1) for s in spans]
        + [(t, _LIMIT, limit) for t, limit in steps]
    )


def _bounds(
    events: Sequence[tuple[float, int, int]], cap: int, n: int
) -> tuple[float, float] | None:
    """From the first time in flight reaches the level to the last time it falls below."""
    start: float | None = None
    end: float | None = None
    count, full = 0, False
    for t, kind, value in events:
        if kind == _LIMIT:
            cap = value
        else:
            count += value
        if count >= min(cap, n):
            start = t if start is None else start
            full = True
        elif full:
            end, full = t, False
    return (start, end) if start is not None and end is not None and end > start else None


def _integrals(
    events: Sequence[tuple[float, int, int]], cap: int, n: int, a: float, b: float
) -> tuple[float, float]:
    """The integrals of requests in flight and of the full level over ``[a, b]``."""
    area = level_area = 0.0
    count, last_t = 0, a
    for t, kind, value in events:
        if t > a:
            span = min(t, b) - max(last_t, a)
            if span > 0:
                area += count * span
                level_area += min(cap, n) * span
        last_t = t
        if t >= b:
            break
        if kind == _LIMIT:
            cap = value
        else:
            count += value
    return area, level_area


def steady_window(spans: Sequence[Span], limit: Limit, *, warm_s: float = 0.0) -> Window | None:
    """The steady window of requests ``spans`` run under ``limit``: a fixed number in
    flight, or the steps ``[(time, limit), ...]`` of a moving one (on the spans' clock;
    the first step's limit holds before it). ``warm_s``: the window's first seconds left
    out (a controller's search for its level), alike for every phase compared.

    None when there is none: no requests, no limit, the level never held for any time
    (every request sent at once and the first one ending at once), or held for no more
    than ``warm_s``.
    """
    # A fixed limit is one step: the first step's limit holds from the start anyway.
    steps = [(0.0, limit)] if isinstance(limit, int) else list(limit)
    if not spans or not steps or min(cap for _, cap in steps) < 1:
        return None
    events = _events(spans, steps)
    n = len(spans)
    found = _bounds(events, steps[0][1], n)
    if found is None or found[1] <= found[0] + warm_s:
        return None
    start, end = found[0] + warm_s, found[1]
    tokens = 0.0
    for s in spans:
        if s.end <= s.start:
            tokens += s.tokens if start <= s.start <= end else 0
            continue
        overlap = min(s.end, end) - max(s.start, start)
        if overlap > 0:
            tokens += s.tokens * overlap / (s.end - s.start)
    area, level_area = _integrals(events, steps[0][1], n, start, end)
    occupancy = min(1.0, area / level_area)
    level = level_area / (end - start)
    return Window(start=start, end=end, level=level, tokens=tokens, occupancy=occupancy)
