"""The run's own ModelGateway over HTTP against eight simulated engines, each in its own
process, one of them twice as slow: a limit per engine, each moved by its own engine's
/metrics, reaches the sum of every engine's best fixed limit.

Throughput is read from each engine's /metrics against its own simulated clock
(/server_info), so the figures are simulated tokens/s whatever this machine's load. The
engines run at real time (a faster scale asks more of the client than a busy 2-core
machine gives it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from soc_async import config as config_mod
from soc_async.bench import session as bench_session
from soc_async.commands import bench as bench_command
from soc_async.run.gateway import ModelGateway
from soc_async.run.progress import RunCounters
from soc_async.testing.simulator.chats import engine_processes, measure_load, wait_idle
from soc_async.testing.simulator.profiles import PROFILES
from soc_async.testing.simulator.workload import ChatShape, run_scenario
from soc_async.testing.virtual_clock import run_virtual

pytestmark = pytest.mark.slow

ENGINES, SLOW = 8, 7  # engine 7 runs at half speed
# Simulated seconds per real second: low enough that the client keeps up on a busy
# machine (at 1x the eight engines ask for about 130 requests/s at their knee); a
# client that cannot keep up holds every engine below its knee, fixed or adaptive.
SCALE = 1.0
WARM_S, MEASURE_S = 7.0, 6.0  # every phase alike, so none is favoured by a longer warm-up
# The tiny profile's KV cache (19,200 tokens) holds about 16 of these turns: its knee.
SHAPE = ChatShape(system_tokens=400, fixed_tokens=600, reply_tokens=100, tail_tokens=40, turns=6)
LIVE = 32  # conversations per engine
SWEEP = (16, 20)  # fixed limits per engine: the knee and past it (12 is never the best)


@pytest.fixture(scope="module")
def engines() -> Iterator[list[str]]:
    """Eight simulated engines, one process each (as eight vLLM servers on eight GPUs)."""
    with engine_processes(ENGINES, time_scale=SCALE, slow={SLOW: 2.0}) as urls:
        yield urls


def _config(urls: list[str], **concurrency: Any) -> config_mod.RunConfig:
    return config_mod.from_dict(
        {
            "endpoints": urls,
            "concurrency": {"interval_s": 2.0 / SCALE, **concurrency},
            "client": {"ready_timeout_s": 30.0},
        }
    )


async def _phase(
    urls: list[str], config: config_mod.RunConfig, warm_s: float, measure_s: float, tag: str
) -> tuple[list[float], ModelGateway]:
    """Each engine's simulated tokens/s over ``measure_s`` real seconds after
    ``warm_s``, under a fresh gateway for ``config``."""
    async with aiohttp.ClientSession() as session:
        await wait_idle(session, urls)
        async with ModelGateway(config, RunCounters()) as gw:
            each = await measure_load(
                gw, session, urls, SHAPE, LIVE * ENGINES,
                warm_s=warm_s, measure_s=measure_s, tag=tag,
            )  # fmt: skip
        return each, gw


def _knee_on_a_virtual_clock() -> float:
    """Tokens/s of one fast engine at a fixed 16 with this load, on a virtual clock."""
    result = run_virtual(
        run_scenario([PROFILES["tiny"]], limits=16, conversations=LIVE, shape=SHAPE,
                     duration_s=120.0, measure_from_s=40.0, seed=1)
    )  # fmt: skip
    return result.tokens_per_s


async def _wait_idle(urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_idle(session, urls)


async def test_a_limit_per_engine_reaches_the_sum_of_each_engines_best(
    engines: list[str],
) -> None:
    """Fixed limits of 16 and 20 per engine give each engine's best; the adaptive
    gateway, from 8 per engine, reaches >= 0.93x their sum, and every engine, the slow
    one included, at least 0.8x its own best."""
    fixed: dict[int, list[float]] = {}
    for limit in SWEEP:
        config = _config(engines, fixed=limit * ENGINES)
        fixed[limit], gw = await _phase(engines, config, WARM_S, MEASURE_S, f"fixed{limit}-")
        assert [lim.capacity for lim in gw.limiters.values()] == [limit] * ENGINES
    # The seven fast engines are the same engine: their best limit is the one best for
    # them together (an engine's own maximum over two noisy phases would favour the
    # fixed side by the noise alone); the slow engine's is its own.
    fast = [i for i in range(ENGINES) if i != SLOW]
    top = max(SWEEP, key=lambda c: sum(fixed[c][i] for i in fast))
    best = [fixed[top][i] for i in range(ENGINES)]
    best[SLOW] = max(fixed[c][SLOW] for c in SWEEP)
    # A client that cannot keep eight engines at their knee (a machine busy with other
    # work) is the bottleneck of every phase, and the ratio then measures it, not the
    # controller: the same engine and load on a virtual clock says what the knee gives.
    ideal = await anyio.to_thread.run_sync(_knee_on_a_virtual_clock)  # a loop of its own
    fast_best = sum(best[i] for i in fast) / len(fast)
    if fast_best < 0.8 * ideal:
        pytest.skip(
            f"the client did not keep up: the fast engines made {fast_best:,.0f} simulated "
            f"tok/s at their best fixed limit, the same load on a virtual clock {ideal:,.0f}"
        )
    adaptive = _config(engines, initial=8 * ENGINES, min=ENGINES)
    each, gw = await _phase(engines, adaptive, WARM_S, MEASURE_S, "adaptive-")
    ratio = sum(each) / sum(best)
    report = f"adaptive {sum(each):,.0f} / best fixed {sum(best):,.0f} = {ratio:.3f}; {each}"
    assert ratio >= 0.93, report
    # No engine is held back by another: each one near its own best, the slow one too
    # (one engine's figure moves by about a tenth between phases on a busy machine).
    for i, (got, own) in enumerate(zip(each, best, strict=True)):
        assert got >= 0.8 * own, f"engine {i}: {got:.0f} of its best {own:.0f}; {report}"
    assert len(gw.controllers) == ENGINES


def test_bench_through_the_same_wiring(
    engines: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`soc-async bench` against the same eight engines: its fixed limits are totals
    split over the engines (8 and 16 each), its adaptive phase a controller per engine
    over [min, max] of the sweep, and every phase does the same work.

    The adaptive phase's tokens/s against the best fixed one is a wall-clock figure (the
    bench reads real seconds), so it is printed here and reported from runs of
    benchmarks/sim_bench.py in docs/performance.md, not asserted: on a loaded 2-core
    machine it moved from 0.79 to 0.97 between runs while the wiring did not change. What
    is asserted is how it is measured: the adaptive phase's steady window is taken under
    its moving limit, and a phase this short (the slow engine's conversations alone after
    a few seconds) has little or none left once the controller's search is left out,
    which the bench says.
    """
    anyio.run(_wait_idle, engines)
    out = tmp_path / "bench"
    argv = [a for url in engines for a in ("--endpoint", url)]
    # 8 and 16 per engine: the bench's chats (the scripted writer's turns) fill the KV
    # cache sooner than the load above, so its knee lies between them. As many
    # conversations as the largest value, so every phase does the same work.
    argv += ["--concurrency", f"{8 * ENGINES},{16 * ENGINES}", "--max-turns", "4",
             "--conversations", str(16 * ENGINES), "--out", str(out)]  # fmt: skip
    opened: list[ModelGateway] = []  # every gateway the bench opens, in order
    enter = ModelGateway.__aenter__

    async def recording(self: ModelGateway) -> ModelGateway:
        opened.append(self)
        return await enter(self)

    monkeypatch.setattr(ModelGateway, "__aenter__", recording)
    args = argparse.ArgumentParser()
    bench_command.register(args.add_subparsers())
    assert bench_session.run(args.parse_args(["bench", *argv]), live=False) == 0
    # Fixed phases: a limiter per engine holding its share and no controller; the
    # adaptive phase (the last gateway): a controller per engine over [8, 16].
    fixed = [g for g in opened if not g.controllers]
    shares = {tuple(lim.capacity for lim in g.limiters.values()) for g in fixed}
    assert {(8,) * ENGINES, (16,) * ENGINES} <= shares, shares
    last = opened[-1]
    assert list(last.controllers) == list(last.limiters) and len(last.controllers) == ENGINES
    assert {(c.bounds.min, c.bounds.max) for c in last.controllers.values()} == {(8, 16)}
    data = json.loads((out / "bench.json").read_text())
    phases = [p for p in data["phases"] if p["phase"] in ("pipeline", "adaptive")]
    assert [(p["phase"], p["concurrency"]) for p in phases] == [
        ("pipeline", 8 * ENGINES), ("pipeline", 16 * ENGINES), ("adaptive", None)
    ]  # fmt: skip
    for p in phases:  # the same work, all of it done
        assert p["conversations"] == 16 * ENGINES, p
        assert p["conversations_failed"] == 0 and p["request_errors"] == 0, p
    # The adaptive limit is the engines' limits summed, each engine's kept within its
    # share of the sweep's range: never under 8 x 8 nor over 16 x 8.
    adaptive = phases[-1]
    limits = [limit for _, limit in adaptive["capacity_history"]]
    assert limits and all(8 * ENGINES <= c <= 16 * ENGINES for c in limits), limits
    summary = data["summary"]
    assert data["settings"]["settle_s"] == 5 * 2.0  # five decisions of the controller
    assert adaptive["steady_s"] and summary["adaptive_steady_vs_best"] is not None
    if adaptive["steady_s"] <= 5 * 2.0:  # as here on a quiet machine: about 2.5 s
        assert adaptive["settled_s"] is None and summary["adaptive_settled_vs_best"] is None
        assert any("no settled comparison" in line for line in data["notes"]), data["notes"]
    else:  # a client slow enough to stretch the window past the search
        assert adaptive["settled_s"] == pytest.approx(adaptive["steady_s"] - 5 * 2.0)
    print(
        f"adaptive / best fixed: whole {summary['adaptive_vs_best']:.3f}, "
        f"steady {summary['adaptive_steady_vs_best']:.3f}"
    )
