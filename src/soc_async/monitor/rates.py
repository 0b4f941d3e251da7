"""Rates over a recent window of cumulative counts, and the ETA they give (pure)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from soc_async.monitor.snapshot import RATE_WINDOW_S

__all__ = ["RateWindow", "eta_s"]

# Below this span two samples give no rate worth showing (the first second of a run).
_MIN_SPAN_S = 1.0


class RateWindow:
    """Timed samples of cumulative counts; :meth:`rate` is the growth per second over the
    last ``window_s`` seconds (the oldest sample inside the window to the newest)."""

    def __init__(self, window_s: float = RATE_WINDOW_S, *, max_samples: int = 1024) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=max_samples)

    def add(self, t: float, counts: Mapping[str, float]) -> None:
        """Record the counts at time ``t`` (seconds on one clock, not decreasing)."""
        self._samples.append((t, dict(counts)))
        # Keep one sample at or before the window's start, so a full window is measured.
        while len(self._samples) > 2 and self._samples[1][0] <= t - self.window_s:
            self._samples.popleft()

    def rate(self, key: str) -> float | None:
        """Growth of ``key`` per second from the oldest sample inside the window (or,
        when none is, the last one before it) to the newest; None without a span."""
        if len(self._samples) < 2:
            return None
        t1, last = self._samples[-1]
        if key not in last:
            return None
        start: tuple[float, dict[str, float]] | None = None
        for t0, first in list(self._samples)[:-1]:
            if key in first:
                start = (t0, first)
                if t0 >= t1 - self.window_s:
                    break
        if start is None or t1 - start[0] < _MIN_SPAN_S:
            return None
        t0, first = start
        return max(0.0, (last[key] - first[key]) / (t1 - t0))


def eta_s(remaining: int, rate: float | None) -> float | None:
    """Seconds until ``remaining`` items are settled at ``rate`` items/s; 0 when none
    remain; None when there is no rate to go by."""
    if remaining <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return remaining / rate
