"""Concurrency: the priority limiter, the adaptive controller, the streaming runner.

Knows neither llm/ nor stages/: it runs awaitables under limits. The CLI wires a
metrics reader (llm/) into :class:`AdaptiveController` and the stages into the runner.
"""

from soc_async.scheduler.controller import (
    AdaptiveController,
    Bounds,
    ControllerState,
    MetricsView,
    decide,
)
from soc_async.scheduler.limiter import PriorityLimiter, SlotInfo, Withdrawn
from soc_async.scheduler.runner import Pipe, PipeStats, StopSignal, feed, stream_map

__all__ = [
    "AdaptiveController",
    "Bounds",
    "ControllerState",
    "MetricsView",
    "Pipe",
    "PipeStats",
    "PriorityLimiter",
    "SlotInfo",
    "StopSignal",
    "Withdrawn",
    "decide",
    "feed",
    "stream_map",
]
