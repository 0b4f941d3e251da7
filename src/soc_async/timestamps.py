"""Wall-clock stamps as every file and screen of soc-async writes them: ISO 8601 in UTC to
the second ("2026-12-07T05:10:00+00:00"), so a run directory written on one node and read
on another in another zone says the same thing. Machine figures (metrics.jsonl's ``time``)
stay epoch seconds; this is for what people and records read."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["utc_now", "utc_stamp"]


def utc_now() -> str:
    """Now, as :func:`utc_stamp` writes it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def utc_stamp(epoch_s: float | None = None) -> str:
    """Epoch seconds (default: now) as ISO 8601 in UTC to the second."""
    return datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC).isoformat(
        timespec="seconds"
    )
