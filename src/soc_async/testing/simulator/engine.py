"""One simulated vLLM engine: continuous batching step by step, on a clock of its own.

The engine is plain synchronous code with no I/O and no real time: :meth:`SimEngine.add`
queues a request at a given time, :meth:`SimEngine.step` runs one scheduler step and
advances the engine's clock by the step's duration (:func:`~.profiles.step_time`). A
driver (:mod:`.driver`) decides when steps run against a real or virtual clock.

One step follows vLLM's V1 scheduler:

1. Running requests first. Each decoding request computes one token; a request still
   prefilling computes a chunk of its prompt, as much as the step's token budget
   (``max_num_batched_tokens``) leaves. Each gets the KV blocks its new tokens need; when
   the pool has none left, the request admitted last is preempted (its blocks freed,
   its work to be recomputed; it goes back to the head of the queue) until they fit.
2. Then, if nothing was preempted in this step, waiting requests in arrival order while
   the budget, ``max_num_seqs`` and the free blocks allow. A request's prompt is first
   looked up in the prefix cache (whole blocks, at most all but its last token), and
   only the rest is computed.
3. The step takes ``step_time(tokens computed, KV tokens read)``; every request whose
   computed tokens reach its length samples one token; a request that reaches its
   output length finishes and its blocks go back to the pool (its full prompt blocks
   stay in the prefix cache until evicted).

Two costs on the engine's CPU, both off by default: a request with a grammar first
waits for it to compile (``grammar_s`` on one of ``grammar_workers`` threads, as vLLM's
structured-output manager compiles on a thread pool of half the CPUs) in the waiting
queue, where /metrics counts it as waiting and as deferred; and every step fills the
grammar mask of each running request with a grammar (``mask_s`` each, added to the
step). ``warmup_s``: the engine takes requests from the start but runs its first step
only then, as a server still compiling its graphs queues what it is sent.

Decoding requests are kept in aggregate (counts by block phase, a heap of finishing
steps), so a step costs O(requests that change), not O(batch): the simulator must keep
up with thousands of requests in flight at a time scale of 60x or more.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Sequence
from enum import Enum

from soc_async.testing.simulator.kv import BlockPool
from soc_async.testing.simulator.profiles import SimProfile, step_time

__all__ = ["TTFT_BUCKETS", "EngineCounters", "RequestPhase", "SimEngine", "SimRequest"]

# vLLM's bucket bounds for vllm:time_to_first_token_seconds (v1/metrics/loggers.py).
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip


class RequestPhase(Enum):
    WAITING = "waiting"  # queued: new, or preempted and to be recomputed
    PREFILL = "prefill"  # admitted, more than one token left to compute
    DECODE = "decode"  # admitted, one token a step (kept in the engine's aggregate)
    DONE = "done"  # finished; its blocks are back in the pool


class SimRequest:
    """One request: its prompt (length and block hashes), how many tokens it will
    generate, and where it stands."""

    __slots__ = (
        "arrival",
        "c0",
        "cached_tokens",
        "compiling",
        "computed",
        "epoch",
        "finished_at",
        "first_token_at",
        "g0",
        "grammar",
        "held",
        "id",
        "key",
        "max_output",
        "o0",
        "output",
        "phase",
        "preemptions",
        "private",
        "prompt_hashes",
        "prompt_tokens",
        "published",
        "tag",
    )

    def __init__(
        self,
        prompt_tokens: int,
        max_output: int,
        prompt_hashes: Sequence[int] = (),
        *,
        tag: object = None,
        grammar: bool = False,
    ) -> None:
        if prompt_tokens < 1 or max_output < 1:
            raise ValueError("a request needs at least one prompt token and one output token")
        self.id = 0
        self.prompt_tokens = prompt_tokens
        self.max_output = max_output
        self.prompt_hashes = prompt_hashes  # hashes of the prompt's full blocks, in order
        self.tag = tag  # the driver's handle (a future), opaque here
        self.grammar = grammar  # carries a grammar (compiled before it is admitted)
        self.compiling = False  # waiting for its grammar to compile
        self.phase = RequestPhase.WAITING
        self.arrival = 0.0
        self.computed = 0  # tokens whose KV is computed (materialised outside DECODE)
        self.output = 0  # tokens generated so far (likewise)
        self.held: list[int] = []  # hashed blocks held (shared through the prefix cache)
        self.private = 0  # blocks held without a hash (materialised outside DECODE)
        self.published = 0  # prompt blocks already looked up or published
        self.cached_tokens: int | None = None  # prefix-cache hit of the first admission
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.preemptions = 0
        # DECODE aggregate: computed = c0 + (g - g0), output = o0 + (g - g0).
        self.g0 = self.c0 = self.o0 = self.key = 0
        self.epoch = 0  # bumped when it leaves DECODE early, voiding its heap entry

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.output

    def __repr__(self) -> str:
        return (
            f"<SimRequest {self.id} {self.phase.value} prompt={self.prompt_tokens} "
            f"output={self.output}/{self.max_output}>"
        )


class EngineCounters:
    """Cumulative figures, as vLLM's /metrics counts them."""

    __slots__ = (
        "e2e_sum",
        "finished",
        "generation_tokens",
        "preemptions",
        "prefix_hits",
        "prefix_queries",
        "prompt_tokens",
        "steps",
        "ttft_buckets",
        "ttft_count",
        "ttft_sum",
    )

    def __init__(self) -> None:
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.preemptions = 0
        self.finished = 0
        self.steps = 0
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)  # per bucket, not cumulative
        self.ttft_count = 0
        self.ttft_sum = 0.0
        self.e2e_sum = 0.0

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_count += 1
        self.ttft_sum += seconds
        for i, bound in enumerate(TTFT_BUCKETS):
            if seconds <= bound:
                self.ttft_buckets[i] += 1
                return


class SimEngine:
    """One engine; see the module docstring. ``slowdown`` multiplies every step's time
    (2.0: an engine half as fast); ``noise`` is the sigma of a log-normal factor drawn
    per step from a ``seed``-ed RNG."""

    def __init__(
        self,
        profile: SimProfile,
        *,
        slowdown: float = 1.0,
        noise: float = 0.0,
        seed: int = 0,
        name: str = "0",
        grammar_s: float = 0.0,
        grammar_workers: int = 4,
        mask_s: float = 0.0,
        warmup_s: float = 0.0,
    ) -> None:
        if slowdown <= 0 or noise < 0:
            raise ValueError("slowdown must be > 0 and noise >= 0")
        if min(grammar_s, mask_s, warmup_s) < 0 or grammar_workers < 1:
            raise ValueError("grammar_s, mask_s, warmup_s must be >= 0, grammar_workers >= 1")
        self.grammar_s = grammar_s
        self.mask_s = mask_s
        self._workers = [0.0] * grammar_workers  # when each compile thread is free (a heap)
        self._compiling: list[tuple[float, int, SimRequest]] = []  # (ready at, id, request)
        self.num_compiling = 0
        self._structured = 0  # running requests with a grammar (a mask each per step)
        self.profile = profile
        self.name = name
        self.slowdown = slowdown
        self.noise = noise
        self._rng = random.Random(seed)
        self.pool = BlockPool(profile.num_gpu_blocks)
        self.counters = EngineCounters()
        self.now = warmup_s  # when the next step starts (or the last one ended, when idle)
        self.busy_s = 0.0  # time spent in steps
        self.waiting: deque[SimRequest] = deque()
        self._order: dict[int, SimRequest] = {}  # running, in admission order
        self._prefill: dict[int, SimRequest] = {}  # running and prefilling, same order
        self._ids = itertools.count(1)
        # The DECODE aggregate, over decode counter g (one per step with decoders).
        self._g = 0
        self._d_count = 0
        self._d_sum = 0  # sum of (c0 - g0)
        self._d_keys = [0] * profile.block_size  # members by (c0 - g0) mod block size
        self._d_heap: list[tuple[int, int, int, SimRequest]] = []  # (g_fin, id, epoch, req)
        self._d_allocated = False  # this step's decode blocks are already taken

    # -- what /metrics shows ------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._order)

    @property
    def num_waiting(self) -> int:
        """vllm:num_requests_waiting: waiting for room, and for their grammar."""
        return len(self.waiting) + self.num_compiling

    @property
    def kv_usage(self) -> float:
        return self.pool.usage

    @property
    def has_work(self) -> bool:
        return bool(self._order) or bool(self.waiting) or self.num_compiling > 0

    # -- requests in ----------------------------------------------------------------------

    def check(self, prompt_tokens: int, max_output: int) -> None:
        """ValueError when a request of this size could never run on this engine (vLLM
        answers 400 for a prompt over the model length)."""
        total = prompt_tokens + max_output
        if total > self.profile.max_model_len:
            raise ValueError(
                f"this model's maximum context length is {self.profile.max_model_len} "
                f"tokens; the request asks for {prompt_tokens} + {max_output}"
            )
        if math.ceil(total / self.profile.block_size) > self.profile.num_gpu_blocks:
            raise ValueError(
                f"a request of {total} tokens cannot fit the KV cache "
                f"({self.profile.kv_tokens} tokens)"
            )

    def add(self, request: SimRequest, now: float) -> SimRequest:
        """Queue ``request``, arrived at ``now`` (not before the engine's last step began)."""
        self.check(request.prompt_tokens, request.max_output)
        request.id = next(self._ids)
        request.arrival = now
        request.phase = RequestPhase.WAITING
        if not self.has_work:
            self.now = max(self.now, now)
        if request.grammar and self.grammar_s > 0:
            start = max(now, heapq.heappop(self._workers))
            ready = start + self.grammar_s
            heapq.heappush(self._workers, ready)
            heapq.heappush(self._compiling, (ready, request.id, request))
            request.compiling = True
            self.num_compiling += 1
        else:
            self.waiting.append(request)
        return request

    def abort(self, request: SimRequest) -> None:
        """Drops a request the client gave up on (vLLM aborts on disconnect)."""
        if request.phase is RequestPhase.WAITING and request.compiling:
            request.compiling = False  # its heap entry is skipped when it comes up
            self.num_compiling -= 1
        elif request.phase is RequestPhase.WAITING:
            try:
                self.waiting.remove(request)
            except ValueError:
                return
        elif request.phase in (RequestPhase.PREFILL, RequestPhase.DECODE):
            if request.phase is RequestPhase.DECODE:
                self._leave_decode(request)
            else:
                self._prefill.pop(request.id, None)
            self._order.pop(request.id, None)
            self._structured -= request.grammar
            self._release(request)
        else:
            return
        request.phase = RequestPhase.DONE

    # -- one step ---------------------------------------------------------------------------

    def step(self) -> list[SimRequest]:
        """Runs one step starting at :attr:`now`; returns the requests that finished, all
        at the new :attr:`now`. Does nothing (returns []) when there is no work."""
        if not self.has_work:
            return []
        start = self.now
        compiling = self._compiling
        while compiling and compiling[0][0] <= start:
            _, _, req = heapq.heappop(compiling)
            if req.compiling:  # else aborted meanwhile
                req.compiling = False
                self.num_compiling -= 1
                self.waiting.append(req)
        bs = self.profile.block_size
        pool = self.pool
        g = self._g
        preempted = False
        self._d_allocated = False

        # 1a. Decoding requests: one token each; those crossing a block boundary need one.
        need = self._d_keys[(-g) % bs]
        while need > pool.free:
            preempted = True
            self._preempt_last()
            need = self._d_keys[(-g) % bs]
        pool.allocate(need)
        self._d_allocated = True
        budget = self.profile.max_num_batched_tokens - self._d_count

        # 1b. Requests still prefilling, in admission order.
        chunks: list[tuple[SimRequest, int]] = []
        for req in list(self._prefill.values()):
            if budget <= 0:
                break
            if req.phase is not RequestPhase.PREFILL:
                continue  # preempted by an earlier request of this loop
            n = min(req.total - req.computed, budget)
            more = -(-(req.computed + n) // bs) - len(req.held) - req.private
            while more > pool.free:
                preempted = True
                if self._preempt_last() is req:
                    break
            if req.phase is not RequestPhase.PREFILL:
                continue
            pool.allocate(more)
            req.private += more
            chunks.append((req, n))
            budget -= n

        # 2. Waiting requests, unless this step had to preempt.
        max_seqs = self.profile.max_num_seqs
        while (
            not preempted
            and self.waiting
            and budget > 0
            and len(self._order) < max_seqs
            and self.waiting[0].arrival <= start
        ):
            req = self.waiting[0]
            total = req.total
            limit = min(len(req.prompt_hashes), (total - 1) // bs)
            hashes = req.prompt_hashes[:limit]
            found, found_free = pool.cached_prefix(hashes)
            hit = found * bs
            n = min(total - hit, budget)
            more = -(-(hit + n) // bs) - found
            if more > pool.free - found_free:
                break
            pool.take_cached(hashes[:found])
            pool.allocate(more)
            self.waiting.popleft()
            req.held = list(hashes[:found])
            req.private = more
            req.published = found
            req.computed = hit
            req.phase = RequestPhase.PREFILL
            self._structured += req.grammar
            self._order[req.id] = req
            self._prefill[req.id] = req
            c = self.counters
            c.prefix_queries += total
            c.prefix_hits += hit
            if req.cached_tokens is None:
                req.cached_tokens = hit
            chunks.append((req, n))
            budget -= n

        # 3. The step's duration, then its outcome.
        tokens = self._d_count + sum(n for _, n in chunks)
        if tokens == 0:
            # Nothing ran: the queue's head arrives later than this step would start
            # (a driver behind its clock). The next step starts when it arrives.
            if self.waiting and self.waiting[0].arrival > start:
                self.now = self.waiting[0].arrival
            elif not self.waiting and compiling:  # only grammars compiling: the first done
                self.now = max(start, compiling[0][0])
            return []
        context = self._d_sum + self._d_count * g + sum(r.computed + n for r, n in chunks)
        slowdown = self.slowdown
        if self.noise:
            slowdown *= math.exp(self._rng.gauss(0.0, self.noise))
        duration = step_time(self.profile, tokens, context, slowdown=slowdown)
        duration += self.mask_s * self._structured  # grammar masks, on the CPU
        end = start + duration
        self.now = end
        self.busy_s += duration
        self.counters.steps += 1
        self.counters.generation_tokens += self._d_count
        self._d_allocated = False
        finished: list[SimRequest] = []
        if self._d_count:
            self._g = g = g + 1
            heap = self._d_heap
            while heap and heap[0][0] <= g:
                _, _, epoch, req = heapq.heappop(heap)
                if epoch != req.epoch or req.phase is not RequestPhase.DECODE:
                    continue
                self._leave_decode(req)
                self._finish(req, end, finished)
        for req, n in chunks:
            if req.phase is not RequestPhase.PREFILL:
                continue
            req.computed += n
            self._publish(req)
            if req.computed >= req.total:  # all known tokens computed: sample one
                req.output += 1
                self.counters.generation_tokens += 1
                if req.first_token_at is None:
                    req.first_token_at = end
                    self.counters.prompt_tokens += req.prompt_tokens
                    self.counters.observe_ttft(end - req.arrival)
                del self._prefill[req.id]
                if req.output >= req.max_output:
                    self._finish(req, end, finished)
                else:
                    self._join_decode(req)
        return finished

    # -- internals ------------------------------------------------------------------------

    def _publish(self, req: SimRequest) -> None:
        """Makes the request's newly full prompt blocks findable in the prefix cache."""
        full = min(req.computed, req.prompt_tokens) // self.profile.block_size
        full = min(full, len(req.prompt_hashes))
        pool = self.pool
        for i in range(req.published, full):
            h = req.prompt_hashes[i]
            if pool.publish(h):
                req.held.append(h)
                req.private -= 1
        req.published = max(req.published, full)

    def _join_decode(self, req: SimRequest) -> None:
        g = self._g
        req.phase = RequestPhase.DECODE
        req.g0, req.c0, req.o0 = g, req.computed, req.output
        diff = req.c0 - g
        req.key = diff % self.profile.block_size
        self._d_count += 1
        self._d_sum += diff
        self._d_keys[req.key] += 1
        heapq.heappush(self._d_heap, (g + req.max_output - req.o0, req.id, req.epoch, req))

    def _leave_decode(self, req: SimRequest) -> None:
        """Takes ``req`` out of the aggregate, its figures made concrete."""
        steps = self._g - req.g0
        req.computed = req.c0 + steps
        req.output = req.o0 + steps
        # Blocks now held: enough for the computed tokens, plus this step's token when
        # the step's decode blocks were already taken.
        pending = 1 if self._d_allocated else 0
        blocks = -(-(req.computed + pending) // self.profile.block_size)
        req.private = blocks - len(req.held)
        self._d_count -= 1
        self._d_sum -= req.c0 - req.g0
        self._d_keys[req.key] -= 1
        req.epoch += 1

    def _release(self, req: SimRequest) -> None:
        self.pool.release(req.held, req.private)
        req.held = []
        req.private = 0

    def _finish(self, req: SimRequest, at: float, finished: list[SimRequest]) -> None:
        del self._order[req.id]
        self._structured -= req.grammar
        self._release(req)
        req.phase = RequestPhase.DONE
        req.finished_at = at
        self.counters.finished += 1
        self.counters.e2e_sum += at - req.arrival
        finished.append(req)

    def _preempt_last(self) -> SimRequest | None:
        """Preempts the request admitted last (recompute: its KV is dropped)."""
        if not self._order:
            return None
        _, req = self._order.popitem()
        if req.phase is RequestPhase.DECODE:
            self._leave_decode(req)
        else:
            self._prefill.pop(req.id, None)
        self._structured -= req.grammar
        self._release(req)
        req.computed = 0
        req.published = 0
        req.phase = RequestPhase.WAITING
        req.preemptions += 1
        self.counters.preemptions += 1
        self.waiting.appendleft(req)
        return req

    def check_invariants(self) -> None:
        """AssertionError when the engine's books disagree (for tests)."""
        self.pool.check()
        held = 0
        shared: dict[int, int] = {}
        for req in self._order.values():
            if req.phase is RequestPhase.DECODE:
                computed = req.c0 + (self._g - req.g0)
                blocks = -(-computed // self.profile.block_size)
                held += blocks - len(req.held)
            else:
                held += req.private
            for h in req.held:
                shared[h] = shared.get(h, 0) + 1
        assert held + len(shared) == self.pool.used, (held, len(shared), self.pool.used)
        assert self._d_count == sum(
            1 for r in self._order.values() if r.phase is RequestPhase.DECODE
        )
