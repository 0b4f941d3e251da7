"""The style monitor's hint rule."""

from __future__ import annotations

import pytest

from soc_async.stages.style_monitor import StyleMonitor


def monitor_with(styles: list[str], window: int = 30, min_pool: int = 6) -> StyleMonitor:
    monitor = StyleMonitor(window, min_pool)
    for style in styles:
        monitor.observe(style)
    return monitor


def test_no_hint_before_the_pool_is_large_enough() -> None:
    """Below min_pool accepted experiences there is no hint, however lopsided they are."""
    assert monitor_with(["semi-structured"] * 5).hint() is None
    assert monitor_with(["semi-structured"] * 6).hint() == "freeform"


def test_hint_names_the_least_used_style_when_one_dominates() -> None:
    """Most used > 2 * least used + 1 gives a hint for the least used style."""
    styles = ["semi-structured"] * 6 + ["freeform"] * 2 + ["structured"]
    assert monitor_with(styles).hint() == "structured"  # 6 > 2*1 + 1


def test_no_hint_at_the_boundary() -> None:
    """Most used == 2 * least used + 1 is balanced enough: no hint."""
    styles = ["structured"] * 5 + ["freeform"] * 2 + ["semi-structured"] * 3
    assert monitor_with(styles).hint() is None


def test_only_the_recent_window_counts() -> None:
    """Old experiences age out of the window; the hint follows the recent ones."""
    monitor = monitor_with(["freeform"] * 20, window=9)
    assert monitor.hint() == "semi-structured"
    for style in ["freeform", "semi-structured", "structured"] * 3:
        monitor.observe(style)
    assert monitor.hint() is None


def test_ties_for_least_used_are_broken_in_a_fixed_order() -> None:
    """Two styles tied for least used: the first in records.STYLES order is hinted."""
    assert monitor_with(["structured"] * 6).hint() == "freeform"
    assert monitor_with(["freeform"] * 6).hint() == "semi-structured"


def test_unknown_style_is_refused() -> None:
    """Observing a style outside records.STYLES is a bug in the caller, so it raises."""
    with pytest.raises(ValueError, match="unknown style"):
        StyleMonitor(10, 0).observe("poetic")


def test_repr_shows_the_counts() -> None:
    """The repr shows what the monitor has seen, for logs and debugging."""
    text = repr(monitor_with(["freeform", "structured", "structured"]))
    assert "seen=3" in text and "structured=2" in text and "freeform=1" in text
