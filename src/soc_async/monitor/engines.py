"""Each server's /metrics readings turned into the per-engine figures of a snapshot.

vLLM's counters are cumulative since the server started, and a server may be shared
with other clients or restarted, so :class:`EngineWatch` keeps per URL the first reading
of this run (preemptions and the prefix-cache hit rate count from it), the previous one
(tokens/s is the growth between the last two) and the latest (running, waiting, KV
usage). Counters that went backwards mean the server restarted: its baseline starts
over. Pure bookkeeping: the gateway does the HTTP and hands readings in.
"""

from __future__ import annotations

import msgspec

from soc_async.llm.metrics import MetricsSnapshot

__all__ = ["EngineReading", "EngineWatch"]


class EngineReading(msgspec.Struct, kw_only=True):
    """The /metrics part of one engine's figures (see EngineFigures for each field)."""

    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    preemptions: float | None = None
    prefix_hit_rate: float | None = None
    tokens_per_s: float | None = None
    metrics_error: str = ""


class _Track:
    __slots__ = ("base", "error", "latest", "prev")

    def __init__(self) -> None:
        self.base: MetricsSnapshot | None = None
        self.prev: MetricsSnapshot | None = None
        self.latest: MetricsSnapshot | None = None
        self.error = ""


def _went_back(old: MetricsSnapshot, new: MetricsSnapshot) -> bool:
    return (
        new.generation_tokens < old.generation_tokens
        or new.preemptions < old.preemptions
        or new.prefix_cache_queries < old.prefix_cache_queries
    )


class EngineWatch:
    """Readings of several servers' /metrics, by base URL."""

    def __init__(self, urls: list[str]) -> None:
        self._tracks = {u.rstrip("/"): _Track() for u in urls}

    @property
    def urls(self) -> list[str]:
        return list(self._tracks)

    def update(self, url: str, reading: MetricsSnapshot | Exception) -> None:
        """Take one reading (a snapshot whose ``time`` is on one clock) or the error that
        kept it from being read."""
        track = self._tracks.setdefault(url.rstrip("/"), _Track())
        if isinstance(reading, Exception):
            track.error = str(reading) or reading.__class__.__name__
            return
        track.error = ""
        if track.latest is not None and _went_back(track.latest, reading):
            track.base = track.prev = None  # the server restarted
        if track.base is None:
            track.base = reading
        track.prev = track.latest if track.base is not reading else None
        track.latest = reading

    def reading(self, url: str) -> EngineReading:
        """What the readings of ``url`` say; all None before the first good one."""
        track = self._tracks.get(url.rstrip("/"))
        if track is None:
            return EngineReading()
        new, base, prev = track.latest, track.base, track.prev
        if new is None or base is None:
            return EngineReading(metrics_error=track.error)
        queries = new.prefix_cache_queries - base.prefix_cache_queries
        hits = new.prefix_cache_hits - base.prefix_cache_hits
        tokens_per_s = None
        if prev is not None and new.time > prev.time:
            tokens_per_s = (new.generation_tokens - prev.generation_tokens) / (new.time - prev.time)
        return EngineReading(
            running=new.running,
            waiting=new.waiting,
            kv_cache_usage=new.kv_cache_usage,
            preemptions=new.preemptions - base.preemptions,
            prefix_hit_rate=hits / queries if queries > 0 else None,
            tokens_per_s=round(tokens_per_s, 1) if tokens_per_s is not None else None,
            metrics_error=track.error,
        )
