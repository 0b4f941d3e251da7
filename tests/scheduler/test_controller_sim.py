"""The adaptive controller proven on the simulated engine (virtual clock, seeded).

Each scenario rolls out chat-turn load through the project's PriorityLimiter and
AdaptiveController against simulated engines (soc_async.testing.simulator.workload) on
a virtual clock: 15 minutes of simulated GPU time take seconds, and the same seed gives
the same figures. The bounds asserted are on simulated throughput and simulated time,
never on how fast the test runs.
"""

from __future__ import annotations

import pytest

from soc_async.scheduler import Bounds
from soc_async.testing.simulator import PROFILES
from soc_async.testing.simulator.workload import ScenarioResult, run_scenario
from soc_async.testing.virtual_clock import run_virtual

pytestmark = pytest.mark.slow

H100 = PROFILES["h100-8b"]
BOUNDS = Bounds(min=4, max=4096)
SWEEP = (48, 64, 80, 88, 96, 128)  # around the knee, found by wider sweeps (docs)
DURATION, MEASURE_FROM, WINDOW = 900.0, 450.0, 30.0


def single(limit: int, *, adaptive: bool = False, slowdown: float = 1.0) -> ScenarioResult:
    return run_virtual(
        run_scenario(
            [H100],
            limits=limit,
            adaptive=BOUNDS if adaptive else None,
            conversations=4096,
            duration_s=DURATION,
            measure_from_s=MEASURE_FROM,
            slowdowns=[slowdown],
            window_s=WINDOW,
            seed=1,
        )
    )


@pytest.fixture(scope="module")
def fast_sweep() -> dict[int, ScenarioResult]:
    """Fixed limits on one simulated 8B/H100 engine, 4,096 conversations waiting."""
    return {c: single(c) for c in SWEEP}


@pytest.fixture(scope="module")
def slow_sweep() -> dict[int, ScenarioResult]:
    """The same engine at half speed."""
    return {c: single(c, slowdown=2.0) for c in (64, 80, 88, 96)}


def best(sweep: dict[int, ScenarioResult]) -> tuple[int, ScenarioResult]:
    return max(sweep.items(), key=lambda kv: kv[1].tokens_per_s)


def test_the_sweep_has_a_knee_inside_it(fast_sweep: dict[int, ScenarioResult]) -> None:
    """The fixed sweep rises, peaks inside the range and falls past the KV cache's
    capacity (prefix cache evicted, preemptions): a real optimum to find."""
    limit, top = best(fast_sweep)
    assert SWEEP[0] < limit < SWEEP[-1]
    assert fast_sweep[SWEEP[0]].tokens_per_s < 0.9 * top.tokens_per_s
    assert fast_sweep[SWEEP[-1]].tokens_per_s < 0.8 * top.tokens_per_s
    assert fast_sweep[SWEEP[-1]].preemptions > top.preemptions


@pytest.mark.parametrize(("start", "reach_by"), [(4, 180.0), (4096, 720.0)])
def test_adaptive_reaches_the_best_fixed_limit(
    fast_sweep: dict[int, ScenarioResult], start: int, reach_by: float
) -> None:
    """From 4 and from 4,096: within 10% of the best fixed limit's tokens/s, reached
    within a bounded simulated time, with no more preemptions than the best fixed limit.

    From 4,096 the first 4,096 requests are on the server before any decision: the
    controller cuts at once, and the excess drains at the engine's own pace.
    """
    _, top = best(fast_sweep)
    result = single(start, adaptive=True)
    assert result.tokens_per_s >= 0.9 * top.tokens_per_s
    assert result.preemptions <= top.preemptions
    reached = result.reached_s(0.9 * top.tokens_per_s, WINDOW, span=3)
    assert reached is not None and reached <= reach_by


def test_eight_engines_with_a_slow_one(
    fast_sweep: dict[int, ScenarioResult], slow_sweep: dict[int, ScenarioResult]
) -> None:
    """Eight engines, one twice as slow, one controller and limiter each: the aggregate is
    within 10% of the best per-engine fixed limits, every fast engine within 10% of an
    engine on its own, and the slow engine within 10% of its own best."""
    _, fast = best(fast_sweep)
    _, slow = best(slow_sweep)
    result = run_virtual(
        run_scenario(
            [H100] * 8,
            limits=32,  # the config's concurrency.initial
            adaptive=BOUNDS,
            conversations=256,
            duration_s=600.0,
            measure_from_s=300.0,
            slowdowns=[1.0] * 7 + [2.0],
            seed=2,
        )
    )
    ideal = 7 * fast.tokens_per_s + slow.tokens_per_s
    assert result.tokens_per_s >= 0.9 * ideal
    for engine in result.engines[:7]:
        assert engine.tokens_per_s >= 0.9 * fast.tokens_per_s
    assert result.engines[7].tokens_per_s >= 0.9 * slow.tokens_per_s
    assert result.preemptions <= 7 * fast.preemptions + slow.preemptions
