"""Chat-turn load on simulated engines, with the project's own limiter and controller.

:func:`run_scenario` rolls out synthetic conversations shaped like soc-async's chat
stage (:class:`ChatShape`: a static system prompt shared by every conversation, the
conversation's fixed part, an append-only transcript, a tail that changes every turn;
one turn in flight per conversation) against one or several :class:`~.engine.SimEngine`
through :class:`~soc_async.scheduler.PriorityLimiter` (one per engine; a turn's
priority is the turns its conversation has left, as in a run) and, when adaptive, one
:class:`~soc_async.scheduler.AdaptiveController` per engine reading that engine's
/metrics page. Conversations are pinned to engines round robin (the client's affinity).

Run it under :func:`soc_async.testing.virtual_clock.run_virtual`: hours of simulated
GPU time take seconds, and a seed gives the same result every time.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from soc_async.llm.metrics import combine, parse_metrics
from soc_async.scheduler.controller import AdaptiveController, Bounds, MetricsView
from soc_async.scheduler.limiter import PriorityLimiter
from soc_async.testing.simulator.driver import SimCluster
from soc_async.testing.simulator.engine import SimEngine, SimRequest
from soc_async.testing.simulator.metrics import exposition
from soc_async.testing.simulator.profiles import SimProfile

__all__ = [
    "ChatPrompts",
    "ChatShape",
    "EngineResult",
    "ScenarioResult",
    "chat_request",
    "run_scenario",
]


class ChatShape(msgspec.Struct, kw_only=True, frozen=True):
    """One conversation's turns in tokens, as the chat stage lays its prompts out."""

    system_tokens: int = 400  # the static system prompt, byte-identical everywhere
    fixed_tokens: int = 2200  # two persona cards and the experience
    reply_tokens: int = 170  # mean reply length; the transcript grows by it each turn
    reply_spread: float = 0.3  # replies drawn uniformly within +-30% of the mean
    markup_tokens: int = 20  # what the transcript adds around a reply
    tail_tokens: int = 60  # state line, clock, speaker: new every turn
    turns: int = 12
    grammar: bool = False  # every turn carries its own grammar (compiled by the engine)


class ChatPrompts:
    """The block hashes of one conversation's turns: blocks before the tail are the
    conversation's (the system prompt's leading blocks are everyone's) and stay the same
    from turn to turn; the tail's blocks are new every turn."""

    def __init__(self, shape: ChatShape, conv: int, block_size: int = 16) -> None:
        self.shape = shape
        self.conv = conv
        self.block_size = block_size
        self._stable: list[int] = []  # hashes of the blocks before the tail, so far

    def request(self, turn: int, before_tail: int, reply: int) -> SimRequest:
        """Turn ``turn`` whose prompt has ``before_tail`` tokens before its tail,
        answered with ``reply`` tokens."""
        bs = self.block_size
        shape, conv = self.shape, self.conv
        stable = before_tail // bs
        shared = shape.system_tokens // bs
        known = self._stable
        known.extend(
            hash(("sys", j)) if j < shared else hash((conv, j)) for j in range(len(known), stable)
        )
        prompt = before_tail + shape.tail_tokens
        hashes = known[:stable]
        hashes.extend(hash((conv, "turn", turn, j)) for j in range(stable, prompt // bs))
        return SimRequest(prompt, reply, hashes, grammar=shape.grammar)


def chat_request(
    shape: ChatShape, conv: int, turn: int, before_tail: int, reply: int
) -> SimRequest:
    """Turn ``turn`` of conversation ``conv`` (see :class:`ChatPrompts`)."""
    return ChatPrompts(shape, conv).request(turn, before_tail, reply)


class EngineResult(msgspec.Struct, kw_only=True):
    """One engine over the measured window."""

    name: str
    tokens_per_s: float  # generated tokens per simulated second
    preemptions: int
    prefix_hit_rate: float | None
    mean_running: float
    mean_kv_usage: float
    final_capacity: int
    windows: list[float]  # tokens/s per window_s from the start (whole run)
    capacity: list[tuple[float, int]]  # (simulated s, limit) at each change
    reasons: list[str] = []  # the controller's reason for each change (after the first)


class ScenarioResult(msgspec.Struct, kw_only=True):
    engines: list[EngineResult]
    tokens_per_s: float  # all engines
    preemptions: int
    turns: int  # turns answered over the whole run
    measured_from_s: float
    duration_s: float

    def reached_s(self, target: float, window_s: float, span: int = 1) -> float | None:
        """When the aggregate tokens/s, averaged over ``span`` windows of ``window_s``,
        had reached ``target`` for good: the end of the first such average after which
        none falls below it. None if the last one is below."""
        n = len(self.engines[0].windows)
        totals = [sum(e.windows[i] for e in self.engines) for i in range(n)]
        means = [sum(totals[i : i + span]) / span for i in range(n - span + 1)]
        if not means or means[-1] < target:
            return None
        i = len(means)
        while i > 0 and means[i - 1] >= target:
            i -= 1
        return (i + span) * window_s


async def run_scenario(
    profiles: Sequence[SimProfile],
    *,
    limits: Sequence[int] | int,
    adaptive: Bounds | None = None,
    conversations: int,
    duration_s: float,
    measure_from_s: float,
    shape: ChatShape | None = None,
    slowdowns: Sequence[float] | None = None,
    noise: float = 0.0,
    interval_s: float = 2.0,
    window_s: float = 30.0,
    seed: int = 0,
    shared_limit: bool = False,
    shapes: Sequence[tuple[ChatShape, float]] | None = None,
    think_s: float = 0.0,
    metric_noise: float = 0.0,
    deferred_metric: bool = True,
    grammar_s: float = 0.0,
    grammar_workers: int = 4,
    mask_s: float = 0.0,
    warmup_s: float = 0.0,
) -> ScenarioResult:
    """Runs ``conversations`` live conversations per engine (each placed on the engine
    with the fewest, and kept there) for ``duration_s`` simulated
    seconds; figures are measured from ``measure_from_s``.

    ``limits``: each engine's in-flight limit (fixed, or the controller's start when
    ``adaptive`` gives its bounds). A finished conversation is replaced at once, so the
    load stays the same throughout. ``shared_limit``: one limiter for all engines (their
    limits summed) and one controller reading their metrics combined, as a client with
    a single bound on requests in flight has it.

    The scenarios closer to a real run: ``shapes`` mixes conversation shapes (each
    conversation draws one by weight; ``shape`` is then unused); ``think_s`` is the
    client's own time between a reply and the next turn (exponential, that mean; no
    slot is held meanwhile); ``metric_noise`` multiplies every gauge a controller reads
    (running, waiting, KV usage) by a log-normal factor of that sigma, as a scrape
    lands at a random instant of a step; ``deferred_metric`` False hides vLLM's count
    of requests deferred for their grammar (a server without that gauge).
    ``grammar_s``, ``grammar_workers``, ``mask_s`` and ``warmup_s`` are the engines'
    CPU-side costs and warm-up (:class:`~.engine.SimEngine`).
    """
    shape = shape or ChatShape()
    n = len(profiles)
    caps = [limits] * n if isinstance(limits, int) else list(limits)
    slow = list(slowdowns) if slowdowns is not None else [1.0] * n
    cpu = {"grammar_s": grammar_s, "grammar_workers": grammar_workers, "mask_s": mask_s}
    engines = [
        SimEngine(
            p,
            slowdown=s,
            noise=noise,
            seed=seed * 1000 + i,
            name=str(i),
            warmup_s=warmup_s,
            **cpu,
        )
        for i, (p, s) in enumerate(zip(profiles, slow, strict=True))
    ]
    mix = list(shapes) if shapes else [(shape, 1.0)]
    if shared_limit:
        limiters = [PriorityLimiter(sum(caps))] * n
    else:
        limiters = [PriorityLimiter(c) for c in caps]
    rng = random.Random(seed)
    turns_done = 0
    next_conv = 0
    stop = asyncio.Event()

    async with SimCluster(engines, resolution_s=0.01) as cluster:
        loop = asyncio.get_running_loop()

        live = [0] * n  # conversations on each engine
        in_flight = [0] * n  # requests on each engine
        rotate = itertools.count()

        def least(load: list[int]) -> int:
            """The least loaded engine, ties taken in turn (as the client's router)."""
            start = next(rotate) % n
            return min(range(n), key=lambda i: (load[i], (i - start) % n))

        async def turn_on(engine: int, request: SimRequest) -> None:
            in_flight[engine] += 1
            try:
                await cluster.submit(engine, request)
            finally:
                in_flight[engine] -= 1

        async def conversation(conv: int) -> None:
            nonlocal turns_done
            r = random.Random(rng.getrandbits(32))
            shape = r.choices([s for s, _ in mix], [w for _, w in mix])[0]
            before_tail = shape.system_tokens + shape.fixed_tokens
            lo = max(1, round(shape.reply_tokens * (1 - shape.reply_spread)))
            hi = max(lo, round(shape.reply_tokens * (1 + shape.reply_spread)))
            prompts = ChatPrompts(shape, conv)
            # Per-engine limits: the conversation is placed before it waits for a slot.
            # One shared limit: its first request goes where fewest are in flight.
            engine = None if shared_limit else least(live)
            if engine is not None:
                live[engine] += 1
            try:
                for turn in range(shape.turns):
                    reply = r.randint(lo, hi)
                    request = prompts.request(turn, before_tail, reply)
                    limiter = limiters[0 if engine is None else engine]
                    async with limiter.slot(shape.turns - turn):
                        if stop.is_set():
                            return
                        if engine is None:
                            engine = least(in_flight)
                            live[engine] += 1
                        await turn_on(engine, request)
                    turns_done += 1
                    before_tail += reply + shape.markup_tokens
                    if think_s > 0:
                        await asyncio.sleep(r.expovariate(1.0 / think_s))
            finally:
                if engine is not None:
                    live[engine] -= 1

        async def population() -> None:
            nonlocal next_conv
            slots = asyncio.Semaphore(conversations * n)

            async def one(conv: int) -> None:
                try:
                    await conversation(conv)
                finally:
                    slots.release()

            async with asyncio.TaskGroup() as tg:
                while not stop.is_set():
                    await slots.acquire()
                    next_conv += 1
                    tg.create_task(one(next_conv))

        noisy = random.Random(seed + 7)

        def jitter() -> float:
            return math.exp(noisy.gauss(0.0, metric_noise)) if metric_noise else 1.0

        def reader(i: int) -> Callable[[], Awaitable[MetricsView]]:
            watched = engines if shared_limit else [engines[i]]

            async def read() -> MetricsView:
                snap = combine(parse_metrics(exposition(e, "sim"), at=loop.time()) for e in watched)
                lim = limiters[i]
                return MetricsView(
                    running=snap.running * jitter(),
                    waiting=snap.waiting * jitter(),
                    waiting_deferred=snap.waiting_deferred if deferred_metric else 0.0,
                    kv_cache_usage=min(1.0, snap.kv_cache_usage * jitter()),
                    preemptions=snap.preemptions,
                    generation_tokens=snap.generation_tokens,
                    prefix_cache_hits=snap.prefix_cache_hits,
                    prefix_cache_queries=snap.prefix_cache_queries,
                    time=snap.time,
                    in_flight=lim.in_flight,
                    queued=lim.waiting,
                    capacity=lim.capacity,
                )

            return read

        controllers = [
            AdaptiveController(limiters[i], reader(i), adaptive, interval_s, name=str(i))
            for i in range(1 if shared_limit else n)
            if adaptive is not None
        ]
        windows: list[list[float]] = [[] for _ in range(n)]
        running_samples: list[list[int]] = [[] for _ in range(n)]
        kv_samples: list[list[float]] = [[] for _ in range(n)]
        marks: list[tuple[int, int, int, int]] = []

        async def monitor() -> None:
            last = [e.counters.generation_tokens for e in engines]
            t = 0.0
            while True:
                await asyncio.sleep(window_s)
                t += window_s
                for i, e in enumerate(engines):
                    windows[i].append((e.counters.generation_tokens - last[i]) / window_s)
                    last[i] = e.counters.generation_tokens

        async def sampler() -> None:
            while True:
                await asyncio.sleep(1.0)
                if cluster.now() >= measure_from_s:
                    for i, e in enumerate(engines):
                        running_samples[i].append(e.running)
                        kv_samples[i].append(e.kv_usage)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(population())]
            tasks += [tg.create_task(c.run()) for c in controllers]
            tasks += [tg.create_task(monitor()), tg.create_task(sampler())]
            await asyncio.sleep(measure_from_s)
            start = [
                (
                    e.counters.generation_tokens,
                    e.counters.preemptions,
                    e.counters.prefix_hits,
                    e.counters.prefix_queries,
                )
                for e in engines
            ]
            await asyncio.sleep(duration_s - measure_from_s)
            marks = [
                (
                    e.counters.generation_tokens,
                    e.counters.preemptions,
                    e.counters.prefix_hits,
                    e.counters.prefix_queries,
                )
                for e in engines
            ]
            stop.set()
            for task in tasks:
                task.cancel()

    span = duration_s - measure_from_s
    results = []
    for i, e in enumerate(engines):
        tok0, pre0, hit0, q0 = start[i]
        tok1, pre1, hit1, q1 = marks[i]
        history = controllers[0 if shared_limit else i].history if controllers else []
        capacity = [(0.0, caps[i])]
        reasons = []
        for t, cap, why in history:
            if cap != capacity[-1][1]:
                capacity.append((t, cap))
                reasons.append(why)
        results.append(
            EngineResult(
                name=e.name,
                tokens_per_s=(tok1 - tok0) / span,
                preemptions=pre1 - pre0,
                prefix_hit_rate=(hit1 - hit0) / (q1 - q0) if q1 > q0 else None,
                mean_running=(
                    sum(running_samples[i]) / len(running_samples[i]) if running_samples[i] else 0.0
                ),
                mean_kv_usage=(sum(kv_samples[i]) / len(kv_samples[i]) if kv_samples[i] else 0.0),
                final_capacity=limiters[i].capacity,
                windows=windows[i],
                capacity=capacity,
                reasons=reasons,
            )
        )
    return ScenarioResult(
        engines=results,
        tokens_per_s=sum(r.tokens_per_s for r in results),
        preemptions=sum(r.preemptions for r in results),
        turns=turns_done,
        measured_from_s=measure_from_s,
        duration_s=duration_s,
    )
