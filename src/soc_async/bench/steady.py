"""A phase's steady window: the time during which the client's limit was full.

A bench phase ends with a tail: its conversations finish one by one (a synthetic load's
last wave runs part-full), and fewer requests are in flight than the limit allows. A run
of thousands of conversations has no such tail, so besides the whole phase's output
tokens/s the bench reports the rate over the phase's *steady window*: from the moment
the requests in flight first reach the full level (the limit, or every request of the
phase when there are fewer) to the moment they last fall below it, never to return.

Each request's output tokens are spread evenly over its time in flight (sent to last
byte), and a request that straddles an edge of the window counts in part. That is an
approximation (a request prefills first and decodes after), applied alike to every
phase, vLLM's own benchmark included, whose per-token times are known but not used, so
that all phases are measured by one rule. Pure functions over plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = ["Span", "Window", "steady_window"]


class Span(msgspec.Struct, array_like=True, frozen=True):
    """One request: sent, last byte (seconds on any one clock), output tokens."""

    start: float
    end: float
    tokens: int


class Window(msgspec.Struct, kw_only=True, frozen=True):
    """The steady window of a phase and what it held."""

    start: float
    end: float
    level: int  # requests in flight while full: min(limit, requests)
    tokens: float  # output tokens spread into the window
    occupancy: float  # time-weighted requests in flight / level, 0..1

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _events(spans: Sequence[Span]) -> list[tuple[float, int]]:
    # At one instant a request ending comes before one starting: a slot handed on is
    # never counted twice.
    return sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])


def steady_window(spans: Sequence[Span], limit: int) -> Window | None:
    """The steady window of requests ``spans`` run under a limit of ``limit`` in flight.

    None when there is none: no requests, no limit, or the level was never held for any
    time (every request sent at once and the first one ending at once).
    """
    if not spans or limit < 1:
        return None
    level = min(limit, len(spans))
    start: float | None = None
    end: float | None = None
    count = 0
    full = False
    area = 0.0  # integral of requests in flight over time, from ``start``
    area_at_end = 0.0
    last_t = 0.0
    for t, delta in _events(spans):
        if start is not None:
            area += count * (t - last_t)
        last_t = t
        count += delta
        if count >= level:
            if start is None:
                start = t
            full = True
        elif full:
            end, area_at_end, full = t, area, False
    if start is None or end is None or end <= start:
        return None
    tokens = 0.0
    for s in spans:
        if s.end <= s.start:
            tokens += s.tokens if start <= s.start <= end else 0
            continue
        overlap = min(s.end, end) - max(s.start, start)
        if overlap > 0:
            tokens += s.tokens * overlap / (s.end - s.start)
    occupancy = min(1.0, area_at_end / (level * (end - start)))
    return Window(start=start, end=end, level=level, tokens=tokens, occupancy=occupancy)
