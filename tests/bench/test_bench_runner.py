"""The sweep's pure pieces: the ceiling's shape from a pipeline phase, the step changes,
the seeds of the loads."""

from __future__ import annotations

import pytest

from soc_async import config as config_mod
from soc_async.bench.live import BenchView
from soc_async.bench.metrics import CounterDelta
from soc_async.bench.recording import RequestSample
from soc_async.bench.results import BenchSettings, phase_result
from soc_async.bench.runner import ceiling_shape
from soc_async.bench.sweep import Sweep, changes


def turns(n: int, prompt: int, completion: int, cached: int) -> list[RequestSample]:
    one = RequestSample(
        kind="turn", prompt=prompt, completion=completion, cached=cached,
        latency_s=1.0, queue_s=0.0, finish="stop",
    )  # fmt: skip
    return [one] * n


def test_ceiling_imitates_the_pipeline_phase() -> None:
    """Same request count (at least C), mean prompt, output rounded, and the server's
    prefix-cache share of the prompt as the shared prefix."""
    server = CounterDelta(
        seconds=1.0, prefix_cache_hits=750, prefix_cache_queries=1000, preemptions=0,
        generation_tokens=0, prompt_tokens=0,
    )  # fmt: skip
    pipe = phase_result(
        "pipeline", 4, turns(6, 2000, 151, 0), errors=0, duration_s=1.0, server=server, ttft=None
    )
    shape = ceiling_shape(pipe, 4, shared_prefix=True)
    assert shape is not None
    assert (shape.requests, shape.output_tokens) == (6, 151)
    assert shape.prompt_tokens == pytest.approx(2000)
    assert shape.shared_tokens == pytest.approx(1500)
    assert ceiling_shape(pipe, 16, shared_prefix=False).requests == 16  # type: ignore[union-attr]
    assert ceiling_shape(pipe, 4, shared_prefix=False).shared_tokens == 0  # type: ignore[union-attr]


def test_ceiling_falls_back_to_usage_and_needs_turns() -> None:
    """Without /metrics the replies' cached counts give the share; no turns, no ceiling."""
    pipe = phase_result(
        "pipeline", 2, turns(4, 1000, 50, 400), errors=0, duration_s=1.0, server=None, ttft=None
    )
    shape = ceiling_shape(pipe, 2, shared_prefix=True)
    assert shape is not None and shape.shared_tokens == pytest.approx(400)
    empty = phase_result("pipeline", 2, [], errors=3, duration_s=1.0, server=None, ttft=None)
    assert ceiling_shape(empty, 2, shared_prefix=True) is None


def test_changes_keeps_only_where_the_value_moves() -> None:
    """Repeated decisions to hold collapse; the first point and every move stay."""
    steps = [(0.0, 16), (0.1, 16), (2.0, 12), (4.0, 12), (6.0, 16)]
    assert changes(steps) == [(0.0, 16), (2.0, 12), (6.0, 16)]
    assert changes([]) == []


def test_ceiling_prefix_is_placed_on_the_cache_blocks() -> None:
    """With the server's block size known, the shared prefix ends half a block past the
    nearest boundary to the pipeline's cached share: 69% of 2,590 tokens is 1,787, whose
    nearest boundary is 14 blocks of 128 (the old prefix of 1,787 cached only 13); the
    prompt grows by the 5 tokens rounded up, so each request computes the same 803."""
    server = CounterDelta(
        seconds=1.0, prefix_cache_hits=690, prefix_cache_queries=1000, preemptions=0,
        generation_tokens=0, prompt_tokens=0,
    )  # fmt: skip
    pipe = phase_result(
        "pipeline", 8, turns(8, 2590, 200, 0), errors=0, duration_s=1.0, server=server, ttft=None
    )
    shape = ceiling_shape(pipe, 8, shared_prefix=True, block=128)
    assert shape is not None and shape.shared_tokens == 14 * 128 + 64
    assert shape.prompt_tokens - 14 * 128 == pytest.approx(2590 * 0.31)
    assert ceiling_shape(pipe, 8, shared_prefix=False, block=128).shared_tokens == 0  # type: ignore[union-attr]


def test_every_load_of_a_run_gets_a_fresh_seed() -> None:
    """Seeds differ between two draws of one tag within a run (a load repeated in one run
    must not find its own prompts cached) and between runs (nonces)."""
    config = config_mod.RunConfig()
    settings = BenchSettings(concurrency=[8])
    a = Sweep(config, settings, None, BenchView(enabled=False))  # type: ignore[arg-type]
    b = Sweep(config, settings, None, BenchView(enabled=False))  # type: ignore[arg-type]
    first, second = a.fresh_seed("ceiling:8:"), a.fresh_seed("ceiling:8:")
    assert first != second
    assert {first, second}.isdisjoint({b.fresh_seed("ceiling:8:"), b.fresh_seed("ceiling:8:")})
