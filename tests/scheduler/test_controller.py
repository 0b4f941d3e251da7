"""The adaptive controller on scripted /metrics sequences."""

from __future__ import annotations

import itertools

import anyio
import pytest

from soc_async.scheduler import (
    AdaptiveController,
    Bounds,
    ControllerState,
    MetricsView,
    PriorityLimiter,
    decide,
)

BOUNDS = Bounds(min=4, max=64)


def sample(
    t: float,
    *,
    waiting: float = 0,
    kv: float = 0.3,
    preemptions: float = 0,
    tokens: float | None = None,
    running: float = 8,
) -> MetricsView:
    return MetricsView(
        running=running,
        waiting=waiting,
        kv_cache_usage=kv,
        preemptions=preemptions,
        generation_tokens=tokens if tokens is not None else 1000 * t,
        time=t,
    )


def replay(
    samples: list[MetricsView],
    capacity: int,
    *,
    bounds: Bounds = BOUNDS,
    in_flight: int | None = None,
) -> list[tuple[int, str]]:
    """Feed the samples one by one; our in-flight follows the capacity unless given."""
    state = ControllerState()
    prev = None
    out = []
    for now in samples:
        busy = capacity if in_flight is None else in_flight
        capacity, state, reason = decide(prev, now, capacity, bounds, state, in_flight=busy)
        out.append((capacity, reason))
        prev = now
    return out


def rising_rate(n: int) -> list[MetricsView]:
    """Throughput that keeps improving, so no increase is ever undone."""
    total, out = 0.0, []
    for t in range(n):
        total += 100 * (t + 1)
        out.append(sample(t, tokens=total))
    return out


def test_grows_while_server_queue_empty_and_kv_has_room() -> None:
    """With an empty server queue, KV room and our limit in use, capacity only grows."""
    caps = [c for c, _ in replay(rising_rate(6), 8)]
    assert caps[0] == 8  # the first sample has nothing to compare with
    assert all(b > a for a, b in itertools.pairwise(caps[1:]))
    assert caps[1] == 10  # x1.25


def test_shrinks_on_new_preemptions() -> None:
    """New preemptions since the last sample cut the capacity; old ones do not."""
    samples = [sample(0, preemptions=5), sample(1, preemptions=9), sample(2, preemptions=9)]
    caps = replay(samples, 32)
    assert caps[1][0] == 24 and "preemptions" in caps[1][1]
    assert caps[2][0] > caps[1][0]  # no new preemptions, queue empty: grows again


def test_shrinks_on_a_growing_server_queue() -> None:
    """A rising server queue cuts the capacity; a steady one holds it."""
    samples = [
        sample(0, waiting=0),
        sample(1, waiting=3),
        sample(2, waiting=7),
        sample(3, waiting=7),
    ]
    caps = replay(samples, 40)
    assert [c for c, _ in caps] == [40, 30, 22, 22]
    assert "queue grew" in caps[1][1] and "steady" in caps[3][1]


def test_holds_when_kv_cache_is_nearly_full() -> None:
    """KV usage at or above kv_high stops growth without cutting."""
    caps = replay([sample(0, kv=0.95), sample(1, kv=0.95)], 16)
    assert caps[1] == (16, "KV cache 95% full")


def test_does_not_grow_a_limit_that_is_not_used() -> None:
    """Growing is pointless while our own in-flight work is far below the capacity."""
    caps = replay(rising_rate(4), 32, in_flight=5)
    assert [c for c, _ in caps] == [32, 32, 32, 32]
    assert "not used" in caps[-1][1]


def test_respects_bounds_and_holds_at_them() -> None:
    """Growth stops at max and cuts stop at min; the controller then holds there."""
    up = replay(rising_rate(20), 50)
    assert max(c for c, _ in up) == 64 and up[-1] == (64, "room to grow but at max")
    down = [sample(t, preemptions=t) for t in range(10)]
    caps = replay(down, 10)
    assert min(c for c, _ in caps) == 4 and caps[-1][0] == 4
    assert caps[-1][1].endswith("at min")


def test_clamps_a_capacity_outside_the_bounds() -> None:
    """A capacity set outside [min, max] is brought back in at the next decision."""
    assert decide(None, sample(0), 500, BOUNDS, ControllerState())[0] == 64
    assert decide(None, sample(0), 1, BOUNDS, ControllerState())[0] == 4


def test_backs_off_when_throughput_fell_after_an_increase() -> None:
    """An increase followed by lower tokens/s is undone, and the capacity that did worse
    is not tried again for ceiling_hold decisions."""
    bounds = Bounds(min=4, max=64, ceiling_hold=3)
    samples = [
        sample(0, tokens=0),
        sample(1, tokens=1000),  # 1000 tok/s: up 16 -> 20
        sample(2, tokens=1800),  # 800 tok/s after the increase: back to 16
        sample(3, tokens=2800),  # up again, but below 20
        sample(4, tokens=3800),
        sample(5, tokens=4800),
        sample(6, tokens=5800),
    ]
    caps = replay(samples, 16, bounds=bounds)
    assert [c for c, _ in caps[:3]] == [16, 20, 16]
    assert "fell" in caps[2][1]
    assert caps[3][0] == 19 and caps[4] == (19, "room to grow but below 20, which did worse")
    assert caps[6][0] > 20  # the ceiling is forgotten after ceiling_hold decisions


def test_server_restart_resets_the_comparison() -> None:
    """Counters that go backwards (a restarted server) hold instead of reacting."""
    caps = replay([sample(0, preemptions=50, tokens=9e6), sample(1, preemptions=0, tokens=10)], 16)
    assert caps[1][0] == 16 and "restarted" in caps[1][1]


def test_bounds_are_validated() -> None:
    """Bounds with min > max are refused."""
    with pytest.raises(ValueError, match="min"):
        Bounds(min=10, max=5)


async def test_controller_applies_decisions_and_keeps_history() -> None:
    """step() reads metrics, sets the limiter's capacity and records (time, capacity, why)."""
    limiter = PriorityLimiter(8)
    script = iter([sample(0, preemptions=0), sample(1, preemptions=4)])

    async def read() -> MetricsView:
        return next(script)

    controller = AdaptiveController(limiter, read, BOUNDS, interval_s=1.0)
    await controller.step()
    await controller.step()
    assert limiter.capacity == 6
    assert [(t, c) for t, c, _ in controller.history] == [(0, 8), (1, 6)]


async def test_run_survives_metrics_failures_until_cancelled() -> None:
    """A failing metrics read is skipped, the loop carries on, and cancellation ends it."""
    limiter = PriorityLimiter(8)
    calls = 0
    enough = anyio.Event()

    async def read() -> MetricsView:
        nonlocal calls
        calls += 1
        if calls == 5:
            enough.set()
        if calls % 2 == 0:
            raise ConnectionError("server down")
        return sample(calls)

    controller = AdaptiveController(limiter, read, BOUNDS, interval_s=0.001)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(controller.run)
            await enough.wait()
            tg.cancel_scope.cancel()
    assert calls >= 5
    # After each failure the next sample starts afresh: every recorded decision holds.
    assert all(reason == "first sample" for _, _, reason in controller.history)


def test_limiter_figures_may_come_with_the_sample() -> None:
    """In-flight and queued counts carried by the MetricsView are used when decide is
    not given them, so a reader can fill them in at sampling time."""
    prev, now = sample(0), sample(1)
    now.in_flight, now.queued = 2, 0
    assert decide(prev, now, 32, BOUNDS, ControllerState())[0] == 32
    now.queued = 5  # callers waiting for a slot: the limit is in use
    assert decide(prev, now, 32, BOUNDS, ControllerState())[0] == 40
