"""The adaptive controller: moves one engine's in-flight limit from that engine's /metrics.

The goal is the point where the engine's batch is as large as its KV cache holds with
room to spare, and its queue empty. Past it, vLLM queues what it cannot place, evicts
the prefix cache of the conversations between turns (whose next turn must then be
computed again in full) and preempts running requests: on the simulated 8B/H100 engine
(docs/simulator.md) throughput falls by a fifth a few requests past that point and by
half a little further. Below it, the GPU reads its weights for a smaller batch than it
could carry.

KV-cache usage leads those losses, so it is what the controller steers on (falling
prefix-cache hits are read too, as the first sign of eviction): from the
usage and the number of requests running it estimates how many requests *fit* at
``kv_target`` (``running * kv_target / usage``, both smoothed), and moves the limit
toward that estimate. The server's own queue and preemptions override it. A limit that
led to either becomes a *ceiling*: it is not tried again for ``ceiling_hold``
decisions, and after that the controller approaches and passes it only in small steps
(``probe`` of the capacity per decision), additive increase after a multiplicative
decrease, so it does not leap back over the edge it found.

One controller per engine: each engine (one vLLM server) has its own limiter and its
controller reads only that engine's /metrics, so an engine that is slower or busier
than the others gets a limit of its own and does not hold theirs down. Several
controllers run side by side (:func:`run_all`).

The decision is a pure function, :func:`decide`, over two consecutive
:class:`MetricsView` samples and a small :class:`ControllerState`, so it is tested on
scripted sequences. The rule, checked in this order at every interval:

1. A capacity outside ``[min, max]`` is clamped into it.
2. The first sample, a sample with no time passed, or counters that went backwards (the
   server restarted): hold, there is no interval to read (the smoothed figures start
   over).
3. Draining: more requests in flight than the capacity (it was lowered and the excess
   is still on the server, which no limit can take back): hold; what the server shows
   is the old load.
4. Preemptions since the last sample: the KV cache overflowed. Down (``x down_factor``,
   at least ``step``); the capacity that overflowed becomes a ceiling.
5. A server queue (in both samples and smoothed, above ``queue_slack`` plus
   ``queue_share`` of the batch; one sample's queue is requests that arrived between
   two steps): the engine does not take what it is sent. Only requests waiting for room
   count: vLLM's ``num_requests_waiting`` also holds requests whose grammar is still
   compiling (every turn carries its own), which it reports apart as
   ``num_requests_waiting_by_reason{reason="deferred"}``; those wait for a CPU thread,
   and a lower limit would only starve the batch. With nothing running in either
   sample, hold: an engine still warming up (or serving nobody) is not overloaded.
   With the KV cache past ``kv_high``, down to the KV fit of this sample; with the
   batch still growing, hold (the engine is admitting a burst, prefill by prefill);
   otherwise (bound by ``max_num_seqs``, the token budget, or a prefix cache too small
   for the conversations between their turns) down to ``down_factor`` times what it
   runs. What the engine ran when it queued (plus the slack) becomes a ceiling.
6. Prefix-cache hits (smoothed, tokens) ``hit_drop`` below the best seen at a capacity
   no higher than the one it was seen at, with the KV cache at least ``hit_kv`` full
   and tokens/s no more than ``hit_gain`` above what they were then: the cached
   prefixes of conversations between turns are being evicted, the cliff's first sign
   (their next turns will be computed in full), and nothing is gained for it. Down to
   that capacity (at most ``x down_factor``); this capacity becomes a ceiling. Hits
   that fall without a higher capacity (a change of load) or for more tokens/s become
   the new reference.
7. KV usage (smoothed, and in both samples) above ``kv_high``: down to the KV fit (at most ``x
   down_factor`` per decision), no ceiling (usage moves as requests grow).
8. Up toward the KV fit while the usage is under ``kv_target`` and our limit is used
   (``in_flight >= busy * capacity``, or callers wait for a slot: a limit that is not
   reached would change nothing), unless nothing runs in either sample (a warming-up
   engine gives nothing to fit): at most ``x up_factor`` and at least ``step``; at
   most ``near`` times a ceiling for ``ceiling_hold`` decisions after it was found,
   then by ``probe`` steps from there to ``1 / near`` times it; past that the
   ceiling is forgotten (the load has changed).
9. Hold otherwise, with the reason.

A fixed concurrency simply means no controller runs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

import anyio
import msgspec
import structlog

from soc_async.scheduler.limiter import PriorityLimiter

__all__ = [
    "AdaptiveController",
    "Bounds",
    "ControllerState",
    "MetricsView",
    "decide",
    "run_all",
]

_log = structlog.get_logger("soc_async.scheduler")


class MetricsView(msgspec.Struct, kw_only=True):
    """The part of one engine's /metrics snapshot the controller reads (a 1:1 copy of the
    same-named fields of the client's snapshot, so the scheduler does not import llm/)."""

    running: float = 0  # vllm:num_requests_running
    waiting: float = 0  # vllm:num_requests_waiting
    # vllm:num_requests_waiting_by_reason{reason="deferred"}: the waiting requests that
    # wait for something of their own (a grammar compiling), not for room in the batch.
    waiting_deferred: float = 0
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1
    preemptions: float = 0  # vllm:num_preemptions, cumulative
    generation_tokens: float = 0  # vllm:generation_tokens, cumulative
    prefix_cache_hits: float = 0  # vllm:prefix_cache_hits, cumulative (tokens)
    prefix_cache_queries: float = 0  # vllm:prefix_cache_queries, cumulative (tokens)
    time: float = 0.0  # when the sample was taken, seconds on one clock
    # Our own limiter at sampling time, when the reader fills them in (decide's keyword
    # arguments take precedence): requests in flight, callers queued, the capacity.
    in_flight: int | None = None
    queued: int | None = None
    capacity: int | None = None


class Bounds(msgspec.Struct, kw_only=True, frozen=True):
    """Where the capacity may go and how; the defaults suit one vLLM engine."""

    min: int = 4
    max: int = 1024
    up_factor: float = 1.5  # the most one decision grows the capacity by
    down_factor: float = 0.85  # the cut on preemptions, and the most a KV cut takes
    step: int = 1  # the least one move changes the capacity by (matters at small sizes)
    # KV-cache usage to fill up to: the rest is room for running requests to grow and
    # for the prefix cache of conversations between two turns.
    kv_target: float = 0.75
    kv_high: float = 0.85  # usage above which the capacity comes down to the fit
    busy: float = 0.8  # in-flight share of capacity that counts as using the limit
    queue_slack: float = 2  # server waiting count still treated as an empty queue...
    queue_share: float = 0.05  # ... plus this share of the requests running
    smoothing: float = 0.5  # weight of the newest sample in the smoothed figures
    ceiling_hold: int = 30  # decisions during which a capacity that overflowed is avoided
    near: float = 0.9  # from this share of the ceiling on, growth is by probe steps
    probe: float = 0.02  # share of the capacity one probe step adds (at least step)
    # Prefix-cache hits (smoothed) this far below the best seen since the capacity was
    # last at or below where that best was seen: the conversations' cached prefixes are
    # being evicted, the cliff's first sign. Read only with the KV cache at least
    # ``hit_kv`` full (eviction needs a full cache; a new wave of conversations with
    # nothing cached yet lowers the hits too, at any usage).
    hit_drop: float = 0.1
    hit_kv: float = 0.5
    # ... and only while tokens/s (smoothed) have not risen by this share over what they
    # were at that best: eviction that still buys more tokens/s (the client's own time
    # between turns keeps conversations out of the batch) is a price worth paying.
    hit_gain: float = 0.03

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ValueError(f"bounds need 1 <= min <= max, got min={self.min} max={self.max}")
        if self.up_factor < 1 or not 0 < self.down_factor <= 1 or self.step < 1:
            raise ValueError("bounds need up_factor >= 1, 0 < down_factor <= 1, step >= 1")
        if not 0 < self.kv_target <= self.kv_high <= 1:
            raise ValueError("bounds need 0 < kv_target <= kv_high <= 1")
        if not 0 < self.smoothing <= 1:
            raise ValueError("bounds need 0 < smoothing <= 1")

    def clamp(self, capacity: int) -> int:
        return max(self.min, min(self.max, capacity))


class ControllerState(msgspec.Struct, kw_only=True, frozen=True):
    """What one decision remembers for the next: smoothed figures and the ceiling."""

    last_action: str = "start"  # "start" | "up" | "down" | "hold" | "clamp"
    kv: float | None = None  # smoothed KV usage
    running: float | None = None  # smoothed requests running on the engine
    waiting: float | None = None  # smoothed server queue (requests waiting for room)
    hits: float | None = None  # smoothed prefix-cache hit rate (tokens)
    hit_ref: float | None = None  # the best smoothed hit rate at or below hit_ref_cap
    hit_ref_cap: int = 0  # the capacity that hit rate was seen at
    hit_ref_rate: float = 0.0  # the smoothed tokens/s then
    rate: float | None = None  # smoothed generation tokens/s
    ceiling: int | None = None  # the last capacity that overflowed
    ceiling_ttl: int = 0  # decisions left during which it is not tried again
    last_rate: float | None = None  # tokens/s over the last interval, for the record


def _smooth(old: float | None, new: float, weight: float) -> float:
    return new if old is None else weight * new + (1 - weight) * old


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
    ``now`` (``None`` everywhere: unknown, taken as a limit in use and not draining).
    See the module docstring for the rule.
    """
    in_flight = now.in_flight if in_flight is None else in_flight
    queued = (now.queued or 0) if queued is None else queued
    ceiling, ttl = state.ceiling, max(0, state.ceiling_ttl - 1)
    state = msgspec.structs.replace(state, ceiling_ttl=ttl)

    Decision = tuple[int, ControllerState, str]

    def move(new: int, action: str, reason: str, **changes: object) -> Decision:
        return new, msgspec.structs.replace(state, last_action=action, **changes), reason

    def hold(reason: str, **changes: object) -> tuple[int, ControllerState, str]:
        return move(capacity, "hold", reason, **changes)

    if capacity != bounds.clamp(capacity):
        new = bounds.clamp(capacity)
        return move(new, "clamp", f"clamped {capacity} into [{bounds.min}, {bounds.max}]")
    # The server's queue of requests waiting for room in the batch: vLLM counts requests
    # whose grammar still compiles (every turn has its own) in num_requests_waiting too,
    # and apart as waiting_by_reason "deferred"; they wait for a CPU, not for the batch.
    queue_now = max(0.0, now.waiting - now.waiting_deferred)
    fresh = {"kv": now.kv_cache_usage, "running": now.running, "waiting": queue_now}
    if prev is None:
        return hold("first sample", **fresh)
    queue_prev = max(0.0, prev.waiting - prev.waiting_deferred)
    dt = now.time - prev.time
    if dt <= 0:
        return hold("no time passed since the last sample")
    if now.preemptions < prev.preemptions or now.generation_tokens < prev.generation_tokens:
        return hold("counters went back (server restarted?)", **fresh)

    w = bounds.smoothing
    kv = _smooth(state.kv, now.kv_cache_usage, w)
    running = _smooth(state.running, now.running, w)
    waiting = _smooth(state.waiting, queue_now, w)
    rate = (now.generation_tokens - prev.generation_tokens) / dt
    rate_s = _smooth(state.rate, rate, w)
    state = msgspec.structs.replace(
        state, kv=kv, running=running, waiting=waiting, last_rate=rate, rate=rate_s
    )
    queries = now.prefix_cache_queries - prev.prefix_cache_queries
    hits = state.hits
    if queries > 0 and now.prefix_cache_hits >= prev.prefix_cache_hits:
        hits = _smooth(hits, (now.prefix_cache_hits - prev.prefix_cache_hits) / queries, w)
        state = msgspec.structs.replace(state, hits=hits)
    # Requests that fit at kv_target: the usage per running request, scaled.
    fit = math.floor(running * bounds.kv_target / kv) if kv > 0 and running > 0 else None

    if in_flight is not None and in_flight > capacity + bounds.step:
        return hold(f"draining: {in_flight} in flight over the capacity {capacity}")
    hold_for = bounds.ceiling_hold

    def down(new: int, why: str, *, remember: int | None) -> tuple[int, ControllerState, str]:
        new = max(bounds.min, min(capacity - bounds.step, new))
        if new >= capacity:
            return hold(f"{why}, at min")
        changes = {"ceiling": remember, "ceiling_ttl": hold_for} if remember else {}
        return move(new, "down", f"{why}: down {capacity}->{new}", **changes)

    preempted = now.preemptions - prev.preemptions
    if preempted > 0:
        return down(
            math.floor(capacity * bounds.down_factor),
            f"{preempted:g} new preemptions",
            remember=capacity,
        )
    slack = bounds.queue_slack + bounds.queue_share * running
    if waiting > slack and queue_now > slack and queue_prev > slack:
        queue = f"server queue {queue_now:g}"
        if now.running == 0 and prev.running == 0:
            # Nothing runs yet: an engine still warming up (compiling, capturing graphs)
            # or one that serves nobody; a lower limit would not help either.
            return hold(f"{queue} with nothing running yet (warm-up)")
        if now.kv_cache_usage >= bounds.kv_high and now.running > 0:
            # KV-bound: as many as fit at the target, by this sample's own ratio.
            target = math.floor(now.running * bounds.kv_target / now.kv_cache_usage)
            why = f"{queue}, KV {now.kv_cache_usage:.0%} full"
            return down(target, why, remember=min(capacity, math.ceil(now.running)))
        if now.running > prev.running + slack:
            return hold(f"{queue} while the engine still admits ({now.running:g} running)")
        # Bound by max_num_seqs, the token budget or a prefix cache that no longer
        # holds the conversations between turns: below what it runs.
        target = math.floor(min(now.running, capacity) * bounds.down_factor)
        edge = min(capacity, math.ceil(now.running + slack))
        return down(target, f"{queue} at {now.running:g} running", remember=edge)
    if hits is not None:
        ref, ref_cap = state.hit_ref, state.hit_ref_cap
        fell = ref is not None and hits < ref - bounds.hit_drop
        gained = rate_s > state.hit_ref_rate * (1 + bounds.hit_gain)
        if ref is None or hits >= ref or (fell and (capacity <= ref_cap or gained)):
            # A new best; or hits that fell with no more in flight than then (the load
            # changed, not the cache's room), or for more tokens/s than then (a price
            # worth paying): the reference from now on.
            state = msgspec.structs.replace(
                state, hit_ref=hits, hit_ref_cap=capacity, hit_ref_rate=rate_s
            )
        elif fell and kv >= bounds.hit_kv:
            target = max(ref_cap, math.floor(capacity * bounds.down_factor))
            why = f"prefix-cache hits {hits:.0%}, were {ref:.0%} at {ref_cap}"
            return down(target, why, remember=capacity)
    # In both samples too, as the queue: one reading's spike (a scrape landing as a
    # burst of requests is admitted) is not a full cache.
    full = min(now.kv_cache_usage, prev.kv_cache_usage) > bounds.kv_high
    if kv > bounds.kv_high and full and fit is not None:
        target = max(fit, math.floor(capacity * bounds.down_factor))
        return down(target, f"KV cache {kv:.0%} over {bounds.kv_high:.0%}", remember=None)

    busy = in_flight is None or queued > 0 or in_flight >= bounds.busy * capacity
    if now.running == 0 and prev.running == 0 and busy:
        # Requests sent and none running: a warming-up engine gives no fit to grow to.
        return hold("nothing running yet (warm-up)")
    if kv >= bounds.kv_target:
        return hold(f"KV cache {kv:.0%} at its target {bounds.kv_target:.0%}")
    if not busy:
        return hold(f"limit not used ({in_flight} of {capacity} in flight)")
    grown = math.ceil(capacity * bounds.up_factor)
    new = max(capacity + bounds.step, min(grown, fit) if fit is not None else grown)
    careful = ""
    if ceiling is not None and ttl == 0 and capacity * bounds.near > ceiling:
        ceiling = None  # passed well beyond it without trouble: it no longer holds
        state = msgspec.structs.replace(state, ceiling=None)
    if ceiling is not None and new >= bounds.near * ceiling:
        edge = math.floor(bounds.near * ceiling)
        probe = capacity + max(bounds.step, math.ceil(capacity * bounds.probe))
        new = min(new, edge if ttl > 0 else max(probe, edge))
        careful = f", {'below' if ttl > 0 else 'probing near'} {ceiling}"
    new = min(new, bounds.max)
    if new <= capacity:
        at = "at max" if capacity >= bounds.max else f"below {ceiling}, which overflowed"
        return hold(f"room to grow but {at}")
    fits = f", fit {fit}" if fit is not None else ""
    return move(new, "up", f"KV {kv:.0%}{fits}{careful}: up {capacity}->{new}")


class AdaptiveController:
    """Reads one engine's metrics every ``interval_s`` and applies :func:`decide` to its
    limiter.

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
        *,
        name: str = "",
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.limiter = limiter
        self.bounds = bounds
        self.interval_s = interval_s
        self.name = name  # the engine it steers (its URL), for the log
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
            _log.debug(
                "capacity", engine=self.name, old=self.limiter.capacity, new=capacity, reason=reason
            )
            self.last_move = (now.time, self.limiter.capacity, capacity, reason)
            self.moves += 1
            self.limiter.set_capacity(capacity)
        self._prev = now
        self.history.append((now.time, capacity, reason))
        return capacity, reason

    async def run(self) -> None:
        """Adjust until cancelled."""
        failing = False
        while True:
            try:
                await self.step()
                failing = False
            except Exception as exc:  # a server that is down must not stop the run
                # Once per outage: an engine out for minutes must not flood the log.
                say = _log.debug if failing else _log.warning
                say("metrics unavailable", engine=self.name, error=str(exc))
                failing = True
                self._prev = None  # the next sample starts a fresh interval
            await anyio.sleep(self.interval_s)


async def run_all(controllers: Sequence[AdaptiveController]) -> None:
    """Runs one controller per engine side by side until cancelled."""
    async with anyio.create_task_group() as tg:
        for controller in controllers:
            tg.start_soon(controller.run)
