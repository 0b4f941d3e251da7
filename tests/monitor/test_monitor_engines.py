"""Per-engine figures from successive /metrics readings."""

from __future__ import annotations

import pytest

from soc_async.llm.metrics import MetricsSnapshot
from soc_async.monitor.engines import EngineWatch

URL = "http://127.0.0.1:8000"


def reading(
    t: float, gen: float, hits: float, queries: float, preempt: float = 0
) -> MetricsSnapshot:
    return MetricsSnapshot(
        time=t,
        running=8,
        waiting=2,
        kv_cache_usage=0.5,
        preemptions=preempt,
        prefix_cache_hits=hits,
        prefix_cache_queries=queries,
        generation_tokens=gen,
    )


def test_rates_and_counts_start_at_the_first_reading_of_the_run() -> None:
    """tokens/s is the growth between the last two readings; preemptions and the
    prefix-cache hit rate count from the first reading (the server's earlier life and
    other clients before the run are left out)."""
    watch = EngineWatch([URL + "/"])
    assert watch.reading(URL).running is None
    watch.update(URL, reading(0, gen=10_000, hits=500, queries=1000, preempt=7))
    first = watch.reading(URL)
    assert first.tokens_per_s is None and first.prefix_hit_rate is None
    assert first.preemptions == 0 and first.running == 8
    watch.update(URL, reading(2, gen=10_400, hits=1400, queries=2000, preempt=9))
    watch.update(URL, reading(4, gen=11_000, hits=2300, queries=3000, preempt=9))
    r = watch.reading(URL)
    assert r.tokens_per_s == pytest.approx(300)
    assert r.prefix_hit_rate == pytest.approx(1800 / 2000)
    assert r.preemptions == 2


def test_a_restarted_server_starts_its_baseline_over_and_errors_are_kept() -> None:
    """Counters that went backwards mean a restart: figures count from the new start;
    a failed read keeps the last figures and says why."""
    watch = EngineWatch([URL])
    watch.update(URL, reading(0, gen=5000, hits=100, queries=100, preempt=4))
    watch.update(URL, reading(2, gen=6000, hits=200, queries=200, preempt=5))
    watch.update(URL, reading(4, gen=100, hits=0, queries=50, preempt=0))  # restarted
    r = watch.reading(URL)
    assert r.preemptions == 0 and r.tokens_per_s is None and r.prefix_hit_rate is None
    watch.update(URL, ConnectionError("refused"))
    r = watch.reading(URL)
    assert r.metrics_error == "refused" and r.running == 8
