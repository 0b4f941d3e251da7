"""The event loop of a command: it runs the coroutine, with the collector's thresholds
raised inside and the old ones back afterwards, even when the coroutine fails."""

from __future__ import annotations

import gc

import pytest

from soc_async import loop


async def _thresholds() -> tuple[int, int, int]:
    return gc.get_threshold()


async def _fail() -> None:
    raise ValueError("boom")


def test_run_returns_the_result_under_tuned_thresholds() -> None:
    """Inside the loop the collector runs with GC_THRESHOLDS; outside, as before."""
    before = gc.get_threshold()
    assert loop.run(_thresholds()) == loop.GC_THRESHOLDS
    assert gc.get_threshold() == before


def test_thresholds_restored_after_an_error() -> None:
    """An exception out of the coroutine propagates and leaves the thresholds as they were."""
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="boom"):
        loop.run(_fail())
    assert gc.get_threshold() == before
