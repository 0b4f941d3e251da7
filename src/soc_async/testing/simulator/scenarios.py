"""The controller against the best fixed limit in scenarios closer to a real run.

Each :class:`Scenario` is one way a real engine and client differ from the plain
simulated chat load: gauges read with noise, the client's own time between turns,
conversations of mixed shapes, a grammar mask computed on the CPU every step, grammars
compiling before their turn may run (counted in vLLM's waiting queue), an engine still
warming up when the run starts. :func:`compare` runs the fixed limits of ``SWEEP`` and
the adaptive controller in one scenario on the ``tiny`` profile (the 8B/H100 arithmetic
with a small KV cache, so the knee sits at about 16 requests and a run costs about a
second of CPU on a virtual clock) and returns the ratio. Every figure is simulated.

``benchmarks/sim_scenarios.py`` prints the table of docs/performance.md from these;
``tests/scheduler/test_controller_scenarios.py`` asserts each ratio.
"""

from __future__ import annotations

from typing import Any

import msgspec

from soc_async.scheduler.controller import Bounds
from soc_async.testing.simulator.profiles import PROFILES
from soc_async.testing.simulator.workload import ChatShape, ScenarioResult, run_scenario
from soc_async.testing.virtual_clock import run_virtual

__all__ = ["SCENARIOS", "SWEEP", "Comparison", "Scenario", "compare"]

# The load of one engine: the chat stage's layout at a scale where the tiny profile's
# 19,200 KV tokens hold about 16 turns.
SHAPE = ChatShape(system_tokens=400, fixed_tokens=600, reply_tokens=100, tail_tokens=40, turns=6)
SHORT = ChatShape(system_tokens=400, fixed_tokens=300, reply_tokens=60, tail_tokens=40, turns=4)
GRAMMAR = [(msgspec.structs.replace(SHAPE, grammar=True), 1.0)]  # a grammar every turn
LONG = ChatShape(system_tokens=400, fixed_tokens=1500, reply_tokens=150, tail_tokens=40, turns=8)
SWEEP = (12, 14, 16, 18, 20)  # around the knee of every scenario (wider sweeps: docs)
BOUNDS = Bounds(min=1, max=64)  # the tiny profile's max_num_seqs
DURATION_S, MEASURE_FROM_S = 240.0, 120.0


class Scenario(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    what: str  # one line for the table
    options: dict[str, Any] = {}  # run_scenario's keyword arguments
    start: int = 4  # the adaptive run's first limit
    sweep: tuple[int, ...] = ()  # fixed limits around this scenario's knee (default SWEEP)


class Comparison(msgspec.Struct, kw_only=True):
    scenario: str
    what: str
    best_limit: int
    best_tokens_per_s: float
    best_preemptions: int
    adaptive_tokens_per_s: float
    adaptive_preemptions: int
    ratio: float
    final_limit: int
    lowest_limit: int  # the adaptive limit's lowest point over the whole run
    limits: list[tuple[float, int]]  # (simulated s, adaptive limit) at each change
    reasons: list[str]  # the controller's reason for each change
    fixed: dict[int, float]  # tokens/s at each fixed limit


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="plain", what="the chat load alone, exact gauges"),
        Scenario(
            name="metric-noise",
            what="every gauge read x a log-normal factor, sigma 0.2",
            options={"metric_noise": 0.2},
        ),
        Scenario(
            name="client-time",
            what="2 s (mean, exponential) of client time between a reply and the next turn",
            options={"think_s": 2.0},
            sweep=(14, 16, 18, 20, 24, 28),
        ),
        Scenario(
            name="mixed-shapes",
            what="conversations of 4 turns x 60 (half), 6 x 100, 8 x 150 tokens (a fifth)",
            options={"shapes": [(SHORT, 0.5), (SHAPE, 0.3), (LONG, 0.2)]},
            sweep=(6, 8, 10, 12, 14, 16),
        ),
        Scenario(
            name="grammar-masks",
            what="a grammar per turn, its mask 0.2 ms of CPU per running request each step",
            options={
                "shapes": GRAMMAR,
                "mask_s": 0.0002,
            },
        ),
        Scenario(
            name="grammar-compile",
            what="a grammar per turn, 0.4 s to compile on one of 8 threads, deferred gauge read",
            options={
                "shapes": GRAMMAR,
                "grammar_s": 0.4,
                "grammar_workers": 8,
            },
        ),
        Scenario(
            name="grammar-compile-unread",
            what="the same, the deferred gauge not read (a server without it)",
            options={
                "shapes": GRAMMAR,
                "grammar_s": 0.4,
                "grammar_workers": 8,
                "deferred_metric": False,
            },
        ),
        Scenario(
            name="warm-up",
            what="the engine runs nothing for its first 20 s; the run starts at 32",
            options={"warmup_s": 20.0},
            start=32,
        ),
    )
}


_FIXED: dict[tuple[bytes, int, int], ScenarioResult] = {}


def _fixed(scenario: Scenario, limit: int, seed: int) -> ScenarioResult:
    """A fixed-limit run, shared by scenarios that differ only in what a controller
    reads (no controller runs here)."""
    options = {k: v for k, v in scenario.options.items() if k != "deferred_metric"}
    key = (msgspec.json.encode(msgspec.to_builtins(options)), limit, seed)
    if key not in _FIXED:
        _FIXED[key] = _run(options, limit, False, seed)
    return _FIXED[key]


def _run(options: dict[str, Any], limit: int, adaptive: bool, seed: int) -> ScenarioResult:
    return run_virtual(
        run_scenario(
            [PROFILES["tiny"]],
            limits=limit,
            adaptive=BOUNDS if adaptive else None,
            conversations=64,
            duration_s=DURATION_S,
            measure_from_s=MEASURE_FROM_S,
            shape=SHAPE,
            seed=seed,
            **options,
        )
    )


def compare(name: str, *, seed: int = 1) -> Comparison:
    """The scenario ``name`` at each fixed limit of its sweep, and adaptive."""
    scenario = SCENARIOS[name]
    fixed = {c: _fixed(scenario, c, seed) for c in scenario.sweep or SWEEP}
    limit, top = max(fixed.items(), key=lambda kv: kv[1].tokens_per_s)
    result = _run(dict(scenario.options), scenario.start, True, seed)
    engine = result.engines[0]
    return Comparison(
        scenario=name,
        what=scenario.what,
        best_limit=limit,
        best_tokens_per_s=top.tokens_per_s,
        best_preemptions=top.preemptions,
        adaptive_tokens_per_s=result.tokens_per_s,
        adaptive_preemptions=result.preemptions,
        ratio=result.tokens_per_s / top.tokens_per_s,
        final_limit=engine.final_capacity,
        lowest_limit=min(cap for _, cap in engine.capacity),
        limits=engine.capacity,
        reasons=engine.reasons,
        fixed={c: r.tokens_per_s for c, r in fixed.items()},
    )
