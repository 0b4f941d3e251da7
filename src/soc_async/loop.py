"""The event loop a command runs on: uvloop when installed, with the garbage collector
tuned for thousands of live conversations.

Every live conversation keeps a chain of coroutines, tasks and small containers alive
between its turns (about 90 objects the cyclic collector tracks), so 10,000 of them put
about a million objects in its reach. With CPython's default thresholds (700, 10, 10) a
young collection runs every few requests, promotes the objects of every request still
waiting for its slot, and a full collection then walks all of them again: at 10,000
live conversations that was 15-30% of the client's CPU (docs/performance.md). Raising
the first threshold makes young collections rare enough that most of a request's
objects are freed by reference counting before one runs; cycles are still collected,
only later. The thresholds are restored when the loop ends.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

# (young, middle, old): a young collection every 50,000 net allocations of tracked
# objects instead of 700; the middle and old generations as CPython's own ratios.
GC_THRESHOLDS = (50_000, 20, 10)


@contextmanager
def tuned_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> Iterator[None]:
    """The collector's thresholds set to ``thresholds`` inside the block, then restored."""
    before = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run(main: Coroutine[Any, Any, T]) -> T:
    """``main`` to completion on a new event loop (uvloop when installed) under
    :func:`tuned_collector`."""
    with tuned_collector():
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
            return asyncio.run(main)
        return uvloop.run(main)
