"""The adaptive controller: moves the limiter's capacity from the server's /metrics.

The goal is the point where the server's batch is full and its queue short: more
requests in flight than that only queue on the server (and risk KV-cache preemptions),
fewer leave the GPU idle. The decision is a pure function, :func:`decide`, over two
consecutive :class:`MetricsView` samples, so it is tested on scripted sequences.

The rule, checked in this order at every interval:

1. A capacity outside ``[min, max]`` is clamped into it.
2. The first sample, a sample with no time passed, or counters that went backwards (the
   server restarted): hold, there is no rate to compare.
3. Down (``x down_factor``, at least ``step``) on new preemptions since the last sample:
   the KV cache overflowed and the server is recomputing work.
4. Down on a growing server queue: ``waiting`` rose above ``queue_slack`` and above
   the previous sample, so requests arrive faster than the batch takes them.
5. Back off after an increase that cost throughput: when the last move was up and the
   generation-token rate fell by more than ``rate_drop`` against the rate measured
   just before it, return to the capacity before the increase and do not climb to the
   capacity that did worse for the next ``ceiling_hold`` decisions (a simple
   hill-climb memory, kept in :class:`ControllerState`).
6. Up (``x up_factor``, at least ``step``) while the server queue is empty (``waiting <=
   queue_slack``), the KV cache has room (``< kv_high``) and our limit is actually used
   (``in_flight >= busy * capacity``, or callers wait for a slot): growing a limit that
   is not reached would change nothing but the number the next decision starts from.
7. Hold otherwise, with the reason.

A fixed concurrency simply means no controller runs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import structlog

from soc_async.scheduler.limiter import PriorityLimiter

__all__ = ["AdaptiveController", "Bounds", "ControllerState", "MetricsView", "decide"]

_log = structlog.get_logger("soc_async.scheduler")


class MetricsView(msgspec.Struct, kw_only=True):
    """The part of a vLLM /metrics snapshot the controller reads (a 1:1 copy of the
    same-named fields of the client's snapshot, so the scheduler does not import llm/)."""

    running: float = 0  # vllm:num_requests_running
    waiting: float = 0  # vllm:num_requests_waiting
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1
    preemptions: float = 0  # vllm:num_preemptions, cumulative
    generation_tokens: float = 0  # vllm:generation_tokens, cumulative
    time: float = 0.0  # when the sample was taken, seconds on one clock
    # Our own limiter at sampling time, when the reader fills them in (decide's keyword
    # arguments take precedence): requests in flight, callers queued, the capacity.
    in_flight: int | None = None
    queued: int | None = None
    capacity: int | None = None


class Bounds(msgspec.Struct, kw_only=True, frozen=True):
    """Where the capacity may go and how fast; the defaults suit one vLLM server."""

    min: int = 4
    max: int = 1024
    up_factor: float = 1.25  # multiplicative growth: reaches a large batch in few steps
    down_factor: float = 0.75  # gentler than halving: preemptions come in bursts
    step: int = 1  # the least one move changes the capacity by (matters at small sizes)
    kv_high: float = 0.9  # KV-cache usage above which growing only invites preemptions
    busy: float = 0.8  # in-flight share of capacity that counts as using the limit
    queue_slack: float = 0  # server waiting count still treated as an empty queue
    rate_drop: float = 0.05  # relative fall in tokens/s that undoes the last increase
    ceiling_hold: int = 5  # decisions during which a capacity that did worse is not retried

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ValueError(f"bounds need 1 <= min <= max, got min={self.min} max={self.max}")
        if self.up_factor < 1 or not 0 < self.down_factor <= 1 or self.step < 1:
            raise ValueError("bounds need up_factor >= 1, 0 < down_factor <= 1, step >= 1")

    def clamp(self, capacity: int) -> int:
        return max(self.min, min(self.max, capacity))


class ControllerState(msgspec.Struct, kw_only=True, frozen=True):
    """What one decision remembers for the next: the hill-climb memory."""

    last_action: str = "start"  # "start" | "up" | "down" | "hold" | "clamp" | "back_off"
    rate_before_up: float | None = None  # tokens/s measured just before the last increase
    capacity_before_up: int | None = None
    ceiling: int | None = None  # a capacity that lowered throughput; stay below it a while
    ceiling_ttl: int = 0  # decisions left before the ceiling is forgotten
    last_rate: float | None = None  # tokens/s over the last interval, for the record


def decide(
    prev: MetricsView | None,
    now: MetricsView,
    capacity: int,
    bounds: Bounds,
    state: ControllerState,
    *,
    in_flight: int | None = None,
    queued: int | None = None,
) -> tuple[int, ControllerState, str]:
    """The next capacity, the state to pass next time, and the reason in a few words.

    ``in_flight`` and ``queued`` are our own limiter's figures, by default those of
    ``now`` (``None`` everywhere: unknown, taken as a limit in use). See the module
    docstring for the rule.
    """
    in_flight = now.in_flight if in_flight is None else in_flight
    queued = (now.queued or 0) if queued is None else queued
    ceiling, ttl = state.ceiling, max(0, state.ceiling_ttl - 1)
    if ttl == 0:
        ceiling = None
    state = msgspec.structs.replace(state, ceiling=ceiling, ceiling_ttl=ttl)

    def hold(reason: str, **changes: object) -> tuple[int, ControllerState, str]:
        return capacity, msgspec.structs.replace(state, last_action="hold", **changes), reason

    if capacity != bounds.clamp(capacity):
        new = bounds.clamp(capacity)
        reason = f"clamped {capacity} into [{bounds.min}, {bounds.max}]"
        return new, msgspec.structs.replace(state, last_action="clamp"), reason
    if prev is None:
        return hold("first sample")
    dt = now.time - prev.time
    if dt <= 0:
        return hold("no time passed since the last sample")
    if now.preemptions < prev.preemptions or now.generation_tokens < prev.generation_tokens:
        return hold("counters went back (server restarted?)", rate_before_up=None)

    rate = (now.generation_tokens - prev.generation_tokens) / dt
    state = msgspec.structs.replace(state, last_rate=rate)
    busy = in_flight is None or queued > 0 or in_flight >= bounds.busy * capacity

    preempted = now.preemptions - prev.preemptions
    if preempted > 0:
        return _down(capacity, bounds, state, f"{preempted:g} new preemptions")
    if now.waiting > bounds.queue_slack and now.waiting > prev.waiting:
        grew = f"server queue grew {prev.waiting:g}->{now.waiting:g}"
        return _down(capacity, bounds, state, grew)

    before, base = state.rate_before_up, state.capacity_before_up
    after_up = state.last_action == "up" and busy and before is not None and base is not None
    if after_up and rate < before * (1 - bounds.rate_drop):
        new = bounds.clamp(min(base, capacity))
        new_state = msgspec.structs.replace(
            state,
            last_action="back_off",
            rate_before_up=None,
            capacity_before_up=None,
            ceiling=capacity,
            ceiling_ttl=bounds.ceiling_hold,
        )
        reason = f"tokens/s fell {before:.0f}->{rate:.0f} at {capacity}: back to {new}"
        return new, new_state, reason

    if now.waiting > bounds.queue_slack:
        return hold(f"server queue steady at {now.waiting:g}")
    if now.kv_cache_usage >= bounds.kv_high:
        return hold(f"KV cache {now.kv_cache_usage:.0%} full")
    if not busy:
        return hold(f"limit not used ({in_flight} of {capacity} in flight)")
    new = min(bounds.max, max(capacity + bounds.step, math.ceil(capacity * bounds.up_factor)))
    if ceiling is not None:
        new = min(new, ceiling - 1)
    if new <= capacity:
        at = "at max" if capacity >= bounds.max else f"below {ceiling}, which did worse"
        return hold(f"room to grow but {at}")
    new_state = msgspec.structs.replace(
        state, last_action="up", rate_before_up=rate, capacity_before_up=capacity
    )
    return new, new_state, f"queue empty, KV {now.kv_cache_usage:.0%}: up {capacity}->{new}"


def _down(
    capacity: int, bounds: Bounds, state: ControllerState, why: str
) -> tuple[int, ControllerState, str]:
    new = max(bounds.min, min(capacity - bounds.step, math.floor(capacity * bounds.down_factor)))
    cleared = msgspec.structs.replace(state, rate_before_up=None, capacity_before_up=None)
    if new >= capacity:
        return capacity, msgspec.structs.replace(cleared, last_action="hold"), f"{why}, at min"
    down = msgspec.structs.replace(cleared, last_action="down")
    return new, down, f"{why}: down {capacity}->{new}"


class AdaptiveController:
    """Reads metrics every ``interval_s`` and applies :func:`decide` to the limiter.

    ``history`` keeps one ``(time, capacity, reason)`` per decision, for the bench's plot;
    ``last_move`` the ``(time, old, new, reason)`` of the last change and ``moves`` how
    many there were, for the live panel's one line (a change is logged at debug level
    only, so it does not scroll over the panel). A failed metrics read is logged and
    skipped; the capacity stays where it was.
    """

    def __init__(
        self,
        limiter: PriorityLimiter,
        read_metrics: Callable[[], Awaitable[MetricsView]],
        bounds: Bounds,
        interval_s: float = 2.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.limiter = limiter
        self.bounds = bounds
        self.interval_s = interval_s
        self.state = ControllerState()
        self.history: list[tuple[float, int, str]] = []
        self.last_move: tuple[float, int, int, str] | None = None
        self.moves = 0
        self._read = read_metrics
        self._prev: MetricsView | None = None

    async def step(self) -> tuple[int, str]:
        """One read-decide-apply round; returns the capacity and the reason."""
        now = await self._read()
        capacity, self.state, reason = decide(
            self._prev,
            now,
            self.limiter.capacity,
            self.bounds,
            self.state,
            in_flight=self.limiter.in_flight,
            queued=self.limiter.waiting,
        )
        if capacity != self.limiter.capacity:
            _log.debug("capacity", old=self.limiter.capacity, new=capacity, reason=reason)
            self.last_move = (now.time, self.limiter.capacity, capacity, reason)
            self.moves += 1
            self.limiter.set_capacity(capacity)
        self._prev = now
        self.history.append((now.time, capacity, reason))
        return capacity, reason

    async def run(self) -> None:
        """Adjust until cancelled."""
        while True:
            try:
                await self.step()
            except Exception as exc:  # a server that is down must not stop the run
                _log.warning("metrics unavailable", error=str(exc))
                self._prev = None  # the next sample starts a fresh interval
            await anyio.sleep(self.interval_s)
