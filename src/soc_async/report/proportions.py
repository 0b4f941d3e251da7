"""Shares against the weights they were drawn with: the arithmetic the report's tables of
pacing, ages and archetypes share (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["distance", "total_variation", "z_score"]


def z_score(count: int, n: int, weight: float) -> float:
    """How far ``count`` of ``n`` lies from ``weight``, in standard errors of ``n``
    independent draws; 0.0 with no draws; where the error is nil (a weight of 0 or 1) any
    difference is infinite, none is 0.0."""
    if n == 0:
        return 0.0
    diff = count / n - weight
    se = math.sqrt(weight * (1 - weight) / n)
    if se == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / se


def distance(p: Mapping[object, float], q: Mapping[object, float]) -> float:
    """Total variation distance between two distributions given as shares: half the L1
    distance, over the keys of either."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def total_variation(a: Mapping[str, int], b: Mapping[str, int]) -> float | None:
    """:func:`distance` between two distributions given as counts; None if either is
    empty."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return None
    return distance({k: v / na for k, v in a.items()}, {k: v / nb for k, v in b.items()})
