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
from soc_async.scheduler.controller import run_all

BOUNDS = Bounds(min=4, max=1024)


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


def plant(
    capacity: int,
    steps: int,
    *,
    per_request: float = 0.01,
    max_num_seqs: int = 10_000,
    bounds: Bounds = BOUNDS,
    preempt_over: int | None = None,
) -> list[tuple[int, str]]:
    """A scripted engine: it runs what it is sent (up to max_num_seqs, the rest waits),
    each request holding ``per_request`` of the KV cache; past ``preempt_over`` it
    preempts one request per interval."""
    state = ControllerState()
    prev = None
    out = []
    preempted = 0
    for t in range(steps):
        running = min(capacity, max_num_seqs)
        if preempt_over is not None and running > preempt_over:
            preempted += 1
        now = MetricsView(
            running=running,
            waiting=capacity - running,
            kv_cache_usage=min(1.0, running * per_request),
            preemptions=preempted,
            generation_tokens=1000.0 * t,
            time=float(t),
            in_flight=capacity,
            queued=10,
        )
        capacity, state, reason = decide(prev, now, capacity, bounds, state)
        out.append((capacity, reason))
        prev = now
    return out


def test_grows_toward_the_kv_fit_at_most_by_up_factor() -> None:
    """With room in the KV cache the capacity grows by at most x1.5 a decision, toward
    the number of requests that fit at kv_target, and holds there."""
    caps = [c for c, _ in plant(8, 12, per_request=0.01)]  # 75 requests fit at 75%
    assert caps[:6] == [8, 12, 18, 27, 41, 62]
    assert all(75 <= c <= 78 for c in caps[6:])  # smoothing: within a few of 75
    assert caps[-1] == caps[-2] == caps[-3]
    assert all(b <= a * 1.5 + 1 for a, b in itertools.pairwise(caps))


def test_holds_at_the_kv_target() -> None:
    """At or above kv_target (and under kv_high) the capacity neither grows nor falls."""
    caps = replay([sample(0, kv=0.8), sample(1, kv=0.8), sample(2, kv=0.8)], 16)
    assert [c for c, _ in caps] == [16, 16, 16]
    assert "at its target" in caps[-1][1]


def test_kv_usage_over_kv_high_comes_down_to_the_fit() -> None:
    """Usage over kv_high lowers the capacity toward the fit, at most x down_factor at a
    time, and leaves no ceiling behind (usage moves as requests grow)."""
    samples = [sample(0, kv=0.95, running=100), sample(1, kv=0.95, running=100)]
    state = ControllerState()
    cap, state, _ = decide(None, samples[0], 100, BOUNDS, state, in_flight=100)
    cap, state, reason = decide(samples[0], samples[1], cap, BOUNDS, state, in_flight=100)
    assert cap == 85 and "over 85%" in reason  # the fit is 78; one cut goes to x0.85
    assert state.ceiling is None


def test_preemptions_cut_and_leave_a_ceiling() -> None:
    """New preemptions cut x0.85; the capacity that overflowed is avoided (growth stops
    at near x ceiling) for ceiling_hold decisions, then approached by probe steps."""
    bounds = Bounds(min=4, max=1024, ceiling_hold=5)
    out = plant(100, 16, per_request=0.001, preempt_over=99, bounds=bounds)
    caps = [c for c, _ in out]
    assert caps[1] == 85 and "preemptions" in out[1][1]
    assert caps[2:6] == [90, 90, 90, 90]  # 0.9 x 100 while the ceiling holds
    assert caps[6] == 92 and "probing near 100" in out[6][1]  # +2% a decision after
    assert max(caps) <= 100


def test_a_ceiling_far_below_is_forgotten() -> None:
    """Probing past ceiling / near shows the ceiling no longer holds: growth is back to
    x up_factor."""
    bounds = Bounds(min=4, max=1024, ceiling_hold=1)
    state = ControllerState(ceiling=20, ceiling_ttl=0)
    prev = sample(0, kv=0.01, running=24)
    now = sample(1, kv=0.01, running=24)
    cap, state, _ = decide(prev, now, 24, bounds, state, in_flight=24)
    assert cap == 36 and state.ceiling is None


def test_a_lasting_server_queue_cuts_below_what_the_engine_runs() -> None:
    """An engine that runs at most 64 (max_num_seqs) while more wait: the capacity falls
    below 64 and settles around it, never running far past it again."""
    out = plant(8, 60, per_request=0.001, max_num_seqs=64)
    caps = [c for c, _ in out]
    cut = next(i for i, (_, reason) in enumerate(out) if "server queue" in reason)
    assert caps[cut] == 54  # 0.85 x 64
    assert all(54 <= c <= 72 for c in caps[cut:])  # around 64 + slack, no leap past it


def test_a_queue_seen_once_is_not_a_saturated_engine() -> None:
    """Requests that arrived between two steps wait for one sample: no cut."""
    samples = [sample(0), sample(1, waiting=9, kv=0.1), sample(2, kv=0.1)]
    caps = replay(samples, 16)
    assert all("queue" not in reason for _, reason in caps)
    assert caps[-1][0] > 16


def test_a_queue_while_the_batch_still_fills_holds() -> None:
    """A queue while the engine's batch keeps growing is a burst being admitted (prefill
    after prefill): hold rather than cut to the partial batch."""
    samples = [
        sample(0, waiting=300, running=20, kv=0.1),
        sample(1, waiting=250, running=60, kv=0.3),
        sample(2, waiting=200, running=100, kv=0.5),
    ]
    caps = replay(samples, 400)
    assert caps[-1][0] == 400 and "still admits" in caps[-1][1]


def test_a_queue_with_a_full_kv_cache_goes_to_the_fit() -> None:
    """Waiting requests and a full KV cache: down to what fits at kv_target at once."""
    samples = [
        sample(0, waiting=3000, running=100, kv=0.97),
        sample(1, waiting=3000, running=100, kv=0.97),
    ]
    cap, reason = replay(samples, 4096)[-1]
    assert cap == 77 and "KV 97% full" in reason


def test_holds_while_draining_an_excess_in_flight() -> None:
    """More in flight than the capacity (it was cut): what the server shows is the old
    load, so the controller waits for the excess to finish instead of cutting on."""
    samples = [sample(0, preemptions=0), sample(1, preemptions=5, waiting=900)]
    caps = replay(samples, 100, in_flight=1000)
    assert caps[-1] == (100, "draining: 1000 in flight over the capacity 100")


def test_does_not_grow_a_limit_that_is_not_used() -> None:
    """Growing is pointless while our own in-flight work is far below the capacity."""
    caps = replay([sample(t, kv=0.05) for t in range(4)], 32, in_flight=5)
    assert [c for c, _ in caps] == [32, 32, 32, 32]
    assert "not used" in caps[-1][1]


def test_respects_bounds_and_holds_at_them() -> None:
    """Growth stops at max and cuts stop at min; the controller then holds there."""
    bounds = Bounds(min=4, max=64)
    up = plant(8, 12, per_request=0.001, bounds=bounds)
    assert max(c for c, _ in up) == 64 and up[-1] == (64, "room to grow but at max")
    down = replay([sample(t, preemptions=t) for t in range(20)], 10, bounds=bounds)
    assert min(c for c, _ in down) == 4 and down[-1][0] == 4
    assert down[-1][1].endswith("at min")


def test_clamps_a_capacity_outside_the_bounds() -> None:
    """A capacity set outside [min, max] is brought back in at the next decision."""
    bounds = Bounds(min=4, max=64)
    assert decide(None, sample(0), 500, bounds, ControllerState())[0] == 64
    assert decide(None, sample(0), 1, bounds, ControllerState())[0] == 4


def test_server_restart_resets_the_comparison() -> None:
    """Counters that go backwards (a restarted server) hold instead of reacting."""
    caps = replay([sample(0, preemptions=50, tokens=9e6), sample(1, preemptions=0, tokens=10)], 16)
    assert caps[1][0] == 16 and "restarted" in caps[1][1]


def test_smoothing_damps_a_single_kv_spike() -> None:
    """One sample of KV usage over kv_high after a calm one is averaged, not obeyed."""
    samples = [sample(0, kv=0.76), sample(1, kv=0.76), sample(2, kv=0.9)]
    caps = replay(samples, 16)
    assert caps[-1][0] == 16 and "at its target" in caps[-1][1]  # (0.76 + 0.9) / 2


def test_bounds_are_validated() -> None:
    """Bounds with min > max or a KV target over kv_high are refused."""
    with pytest.raises(ValueError, match="min"):
        Bounds(min=10, max=5)
    with pytest.raises(ValueError, match="kv_target"):
        Bounds(kv_target=0.9, kv_high=0.8)


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


async def test_run_all_steers_each_engine_on_its_own_metrics() -> None:
    """Two engines, two limiters: one preempting, one with room. Each limit moves on its
    own engine's figures only."""
    full, roomy = PriorityLimiter(40), PriorityLimiter(40)
    t = 0.0

    async def read_full() -> MetricsView:
        return sample(t, preemptions=t, running=40, kv=0.8)

    async def read_roomy() -> MetricsView:
        return sample(t, running=40, kv=0.1)

    controllers = [
        AdaptiveController(full, read_full, BOUNDS, interval_s=0.001, name="a"),
        AdaptiveController(roomy, read_roomy, BOUNDS, interval_s=0.001, name="b"),
    ]
    for c in controllers:  # our own in-flight counts: the limit is in use
        c.limiter._in_flight = 40  # a scripted load
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_all, controllers)
            while len(controllers[0].history) < 3 or len(controllers[1].history) < 3:
                t += 1.0
                await anyio.sleep(0.002)
            tg.cancel_scope.cancel()
    assert full.capacity < 40 < roomy.capacity


def test_limiter_figures_may_come_with_the_sample() -> None:
    """In-flight and queued counts carried by the MetricsView are used when decide is
    not given them, so a reader can fill them in at sampling time."""
    prev, now = sample(0, kv=0.1), sample(1, kv=0.1)
    now.in_flight, now.queued = 2, 0
    assert decide(prev, now, 32, BOUNDS, ControllerState())[0] == 32
    now.queued = 5  # callers waiting for a slot: the limit is in use
    assert decide(prev, now, 32, BOUNDS, ControllerState())[0] == 48


def test_a_queue_of_compiling_grammars_is_no_overload() -> None:
    """Every turn carries its own grammar: vLLM counts the requests whose grammar still
    compiles in num_requests_waiting, and apart as waiting_by_reason "deferred". Such a
    queue, however long, is not cut; the same queue waiting for room is."""
    compiling = [
        MetricsView(running=8, waiting=12, waiting_deferred=12, kv_cache_usage=0.3,
                    generation_tokens=1000 * t, time=t)
        for t in range(5)
    ]  # fmt: skip
    caps = replay(compiling, 16)
    assert all("queue" not in reason for _, reason in caps), caps
    assert caps[-1][0] > 16  # it grows as the KV cache allows
    for_room = [sample(t, waiting=12, kv=0.3) for t in range(5)]
    assert any("server queue" in reason for _, reason in replay(for_room, 16))


def test_a_queue_with_nothing_running_is_warm_up() -> None:
    """An engine still warming up queues what it is sent and runs nothing: the limit
    holds (a run once went "server queue 8 at 0 running: down 32->4" this way), and
    once the engine runs, the rule reads it as before."""
    warming = [sample(t, waiting=8, running=0, kv=0.0, tokens=0) for t in range(4)]
    out = replay(warming, 32)
    assert [c for c, _ in out] == [32] * 4
    assert "warm-up" in out[-1][1]
    running = warming + [sample(4 + t, waiting=8, running=16, kv=0.5) for t in range(3)]
    assert any("server queue 8 at 16 running" in r for _, r in replay(running, 32))


def hits_samples(rates: list[float], *, kv: float = 0.7) -> list[MetricsView]:
    """One sample a second, each second 10,000 prompt tokens looked up at its hit rate
    (the counters cumulative, as /metrics has them)."""
    out, hits = [], 0.0
    for t, rate in enumerate([0.0, *rates]):
        hits += 10_000 * rate
        out.append(
            MetricsView(
                running=32,
                kv_cache_usage=kv,
                generation_tokens=1000 * t,
                prefix_cache_queries=10_000 * t,
                prefix_cache_hits=hits,
                time=t,
            )
        )
    return out


def test_falling_prefix_cache_hits_cut_back_to_where_they_held() -> None:
    """Hits at 88% at 32; the capacity grows to 40 and hits fall to 50% with the KV cache
    still under kv_high: the conversations' prefixes are evicted, so the capacity goes
    back towards 32 and 40 becomes a ceiling."""
    samples = hits_samples([0.88, 0.88, 0.88, 0.5, 0.5, 0.5], kv=0.72)
    state = ControllerState()
    for prev, now in itertools.pairwise(samples[:4]):
        _, state, _ = decide(prev, now, 32, BOUNDS, state, in_flight=32)
    assert state.hit_ref == pytest.approx(0.88) and state.hit_ref_cap == 32
    capacity, reasons = 40, []
    for prev, now in itertools.pairwise(samples[3:]):
        capacity, state, reason = decide(prev, now, 40, BOUNDS, state, in_flight=40)
        reasons.append(reason)
        if capacity != 40:
            break
    assert capacity == 34 and "prefix-cache hits" in reasons[-1], reasons  # 0.85 x 40
    assert state.ceiling == 40


def test_hits_that_fall_without_more_in_flight_are_a_new_load() -> None:
    """A wave of new conversations (nothing of theirs cached yet) lowers the hits at the
    same capacity: no cut; the lower rate becomes the reference."""
    samples = hits_samples([0.88, 0.88, 0.4, 0.4, 0.4, 0.4])
    state, out = ControllerState(), []
    for prev, now in itertools.pairwise(samples):
        cap, state, reason = decide(prev, now, 32, BOUNDS, state, in_flight=32)
        out.append((cap, reason))
    assert all("prefix-cache" not in r for _, r in out), out
    assert state.hit_ref is not None and state.hit_ref < 0.6


def test_nothing_running_gives_no_fit_to_grow_toward() -> None:
    """Our requests are sent and the engine runs none of them yet (it queues nothing
    either, as its API server still holds them): the limit does not grow."""
    samples = [sample(t, running=0, kv=0.0, tokens=0) for t in range(4)]
    out = replay(samples, 32)
    assert [c for c, _ in out] == [32] * 4 and "warm-up" in out[-1][1], out
