"""The model side of a run: clients, a request limiter per engine and their controllers.

:class:`ModelGateway` is the :class:`~soc_async.llm.types.Completer` the stages call. A
request first finds its engine (its conversation's home, else the engine with the most
room: llm/endpoints.py) and then waits for a slot of that engine's own
:class:`PriorityLimiter`; when the concurrency is adaptive, each engine's
:class:`AdaptiveController` moves that engine's limit from that engine's /metrics alone
(:func:`~soc_async.scheduler.controller.run_all`). So an engine that is slower, busier or
preempting gets a limit of its own and never cuts the others' (docs/performance.md
measures the difference on eight simulated engines). When an engine is taken out of
service, the turns queued for its slots move to the others at once.

The gateway is also where the run's figures about its servers come together: it reads
every server's /metrics each ``concurrency.interval_s`` for the live panel, counts
replies and tokens per endpoint, and hands :class:`~soc_async.run.progress.RunCounters`
the functions that describe each engine (its own limit included) and the limits summed.

Opening it waits for every endpoint to be ready (llm/readiness.py) and sizes the bounds
from the engines: each endpoint takes at most its batch size in flight
(:func:`engine_limits`), its cap; ``concurrency.fixed``, ``initial``, ``min`` and ``max``
are totals over the engines, split in proportion to those caps (:func:`split`). Replies
lose any ``<think>`` text before the stages see them.

What the gateway finds out (the bound it sized, the served model) goes into its
:class:`~soc_async.config.RunFacts`, never back into the config.

A request goes to the servers of its model: a model of ``[calls.KIND] models`` that
names its own ``endpoints`` is served there, any other model by the kind's endpoints
(else the run's). The request arrives whole (``soc_async.calls.build_request`` chose its
model, seed, priority and chat-template arguments): the gateway routes and limits it,
and changes nothing in it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack

import anyio
import msgspec

from soc_async import logs
from soc_async.config import CALL_KINDS, RunConfig, RunFacts
from soc_async.errors import RequestError, ServerError
from soc_async.formats.thinking import strip_thinking
from soc_async.llm.client import LLMClient
from soc_async.llm.endpoints import Endpoint
from soc_async.llm.http import open_session
from soc_async.llm.metrics import (
    EngineInfo,
    MetricsReader,
    MetricsSnapshot,
    fetch_engine_info,
    fetch_metrics,
)
from soc_async.llm.readiness import EndpointsFile, wait_for_endpoints_file, wait_until_ready
from soc_async.llm.types import ChatRequest, Completion, RequestOrBuild, built
from soc_async.monitor.engines import EngineWatch
from soc_async.monitor.snapshot import ControllerFigures, EngineFigures
from soc_async.run.progress import RunCounters
from soc_async.scheduler.controller import AdaptiveController, Bounds, MetricsView, run_all
from soc_async.scheduler.limiter import PriorityLimiter, Withdrawn

log = logs.get("engine")

# vLLM's own max_num_seqs on GPUs under 70 GiB (1,024 on H100/H200-class GPUs): the bound
# of an engine that neither the config, the start nor its /metrics sizes.
DEFAULT_PER_ENGINE = 256


def engine_limits(
    urls: Sequence[str], configured: int | None, reported: Mapping[str, EngineInfo]
) -> dict[str, int]:
    """Each endpoint's bound on requests in flight: ``concurrency.per_engine`` when set,
    else the batch size its server reports, else :data:`DEFAULT_PER_ENGINE`."""
    out: dict[str, int] = {}
    for url in urls:
        info = reported.get(url)
        if configured is not None:
            out[url] = configured
        elif info is not None and info.max_num_seqs:
            out[url] = info.max_num_seqs
        else:
            out[url] = DEFAULT_PER_ENGINE
    return out


def split(total: int, caps: Sequence[int]) -> list[int]:
    """``total`` shared over engines in proportion to their caps (largest remainders
    first), each share at least 1 and at most its cap."""
    if not caps:
        return []
    whole = sum(caps)
    exact = [total * c / whole for c in caps]
    out = [max(1, min(c, int(x))) for c, x in zip(caps, exact, strict=True)]
    left = total - sum(out)
    order = sorted(range(len(caps)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    for i in order:
        if left <= 0:
            break
        if out[i] < caps[i]:
            out[i] += 1
            left -= 1
    return out


def with_endpoints_file(config: RunConfig, served: EndpointsFile) -> RunFacts:
    """The facts of the engines of an endpoints file, after any ``endpoints`` the config
    names: their batch size (when they share one) bounds each engine unless
    ``concurrency.per_engine`` is set, and requests carry a priority when every engine
    schedules by it."""
    sizes = {e.max_num_seqs for e in served.engines}
    return RunFacts(
        endpoints=list(dict.fromkeys([*config.endpoints, *served.urls])),
        per_engine=sizes.pop() if len(sizes) == 1 else None,
        priority_scheduling=bool(served.engines) and all(e.priority for e in served.engines),
    )


def served_engines(config: RunConfig) -> RunFacts:
    """The facts of the config's ``endpoints_file`` (waited for while `soc-async serve`
    starts, up to ``client.ready_timeout_s``); the config's own endpoints without one."""
    if not config.endpoints_file:
        return RunFacts.of(config)
    served = anyio.run(
        wait_for_endpoints_file, config.endpoints_file, config.client.ready_timeout_s
    )
    return with_endpoints_file(config, served)


class ModelGateway:
    """Clients per endpoint set; per engine a limiter and (when adaptive) a controller."""

    def __init__(
        self, config: RunConfig, counters: RunCounters, facts: RunFacts | None = None
    ) -> None:
        self.config = config
        self.facts = facts if facts is not None else RunFacts.of(config)
        self.counters = counters
        self.limiters: dict[str, PriorityLimiter] = {}  # by endpoint URL, once open
        self.controllers: dict[str, AdaptiveController] = {}  # by endpoint URL, when adaptive
        self._clients: dict[tuple[str, ...], LLMClient] = {}
        self._by_kind: dict[str, LLMClient] = {}
        self._by_model: dict[tuple[str, str], LLMClient] = {}  # (kind, model) -> its servers
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._reader: MetricsReader | None = None
        self._watch: EngineWatch | None = None
        self._replies: Counter[str] = Counter()  # by endpoint URL
        self._tokens: Counter[str] = Counter()  # completion tokens by endpoint URL
        self.limits: dict[str, int] = {}  # each endpoint's bound (its cap), once open
        self._not_ready: list[str] = []  # endpoints not ready in time: out until they answer
        self.starts: dict[str, int] = {}  # each engine's limit when the run began

    @property
    def capacity(self) -> int:
        """The engines' limits summed: the most requests the run keeps in flight now."""
        return sum(lim.capacity for lim in self.limiters.values())

    @property
    def in_flight(self) -> int:
        return sum(lim.in_flight for lim in self.limiters.values())

    @property
    def queued(self) -> int:
        """Callers waiting for a slot, over every engine."""
        return sum(lim.waiting for lim in self.limiters.values())

    def capacity_history(self) -> list[tuple[float, int]]:
        """The limits summed after each controller decision, in time order (empty
        without controllers): every engine's history folded into one step function."""
        caps = dict(self.starts)
        events = sorted(
            (t, url, cap) for url, c in self.controllers.items() for t, cap, _ in c.history
        )
        out: list[tuple[float, int]] = []
        for t, url, cap in events:
            caps[url] = cap
            out.append((t, sum(caps.values())))
        return out

    async def __aenter__(self) -> ModelGateway:
        try:
            return await self._open()
        except BaseException:
            await self._stack.aclose()  # no session left open when the server is away
            raise

    async def _open(self) -> ModelGateway:
        cfg, facts = self.config, self.facts
        servers: dict[str, None] = {}
        for kind in CALL_KINDS:
            servers.update(dict.fromkeys(facts.endpoints_for(cfg, kind)))
            for choice in cfg.call(kind).models:
                servers.update(dict.fromkeys(choice.endpoints))
        not_ready, limits = await self._survey(list(servers))
        self.limits = limits
        self._not_ready = not_ready
        c = cfg.concurrency
        total = c.max or sum(limits.values())
        log.debug("in-flight bounds", per_engine=limits, total=total)
        self._engine_limits(cfg, limits, total)
        pool = total if c.fixed is None else c.fixed  # connections: every engine's slots
        for kind in CALL_KINDS:
            self._by_kind[kind] = await self._client(tuple(facts.endpoints_for(cfg, kind)), pool)
            for choice in cfg.call(kind).models:
                if choice.endpoints:
                    client = await self._client(tuple(choice.endpoints), pool)
                    self._by_model[(kind, choice.name)] = client
        served = cfg.model or await self._by_kind["turn"].served_model()
        self.facts = msgspec.structs.replace(facts, model=served, max_in_flight=total)
        self.counters.capacity = self.capacity
        urls = self.endpoint_urls()
        self._reader = MetricsReader(self._by_kind["turn"].session, urls)
        self._watch = EngineWatch(urls)
        self.counters.engines = self.engine_figures
        self.counters.controller = self.controller_figures
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        if self.controllers:
            # Each controller reads its own engine (and feeds the panel's figures).
            self._tg.start_soon(run_all, list(self.controllers.values()))
        else:
            self._tg.start_soon(self._watch_engines, cfg.concurrency.interval_s)
        return self

    def _engine_limits(self, cfg: RunConfig, caps: dict[str, int], total: int) -> None:
        """A limiter per engine and, unless the concurrency is fixed, its controller:
        the run's totals split over the engines in proportion to their caps."""
        urls = list(caps)
        bound = caps.values()
        c = cfg.concurrency
        if c.fixed is not None:
            for url, n in zip(urls, split(c.fixed, list(bound)), strict=True):
                self.limiters[url] = PriorityLimiter(n)
            return
        tops = split(total, list(bound))
        lows = split(min(c.min, total), tops)
        starts = split(min(c.initial, total), tops)
        for url, top, low, start in zip(urls, tops, lows, starts, strict=True):
            limiter = self.limiters[url] = PriorityLimiter(max(low, start))
            self.starts[url] = limiter.capacity
            self.controllers[url] = AdaptiveController(
                limiter,
                self._reader_of(url),
                Bounds(min=low, max=top),
                c.interval_s,
                name=url,
            )

    async def _survey(self, urls: list[str]) -> tuple[list[str], dict[str, int]]:
        """Waits for the endpoints (those still not ready when the time is up come back
        first) and reads each one's bound."""
        cfg = self.config
        per_engine = self.facts.per_engine_bound(cfg)
        async with open_session(cfg.api_key) as session:
            not_ready = await wait_until_ready(session, urls, cfg.client.ready_timeout_s)
            reported: dict[str, EngineInfo] = {}
            if per_engine is None:
                async with anyio.create_task_group() as tg:

                    async def read(url: str) -> None:
                        reported[url] = await fetch_engine_info(session, url)

                    for url in urls:
                        if url not in not_ready:
                            tg.start_soon(read, url)
        return not_ready, engine_limits(urls, per_engine, reported)

    async def _client(self, urls: tuple[str, ...], pool: int) -> LLMClient:
        """The one client of an endpoint set, opened on first use."""
        if urls not in self._clients:
            client = LLMClient(
                list(urls),
                api_key=self.config.api_key,
                config=self.config.client,
                pool_size=pool,
            )
            client.pool.router.set_limits(self.limits)
            client.pool.router.load = self._load
            client.pool.on_down = self._engine_down
            for url in self._not_ready:
                client.pool.take_out(url)
            self._clients[urls] = await self._stack.enter_async_context(client)
        return self._clients[urls]

    def _load(self, ep: Endpoint) -> tuple[bool, float]:
        """New work goes to the engine whose own limit has the most room, counting the
        callers already queued for it (every client's), so a slow engine with a queue
        gets fewer new conversations."""
        limiter = self.limiters.get(ep.url)
        if limiter is None:
            return ep.load()
        taken = limiter.in_flight + limiter.waiting
        return taken >= limiter.capacity, taken / max(1, limiter.capacity)

    def _engine_down(self, url: str) -> None:
        """An engine taken out: the callers queued for its slots choose again."""
        limiter = self.limiters.get(url)
        if limiter is not None:
            moved = limiter.withdraw()
            if moved:
                log.info("engine out: its queued requests move", endpoint=url, requests=moved)

    def client_for(self, kind: str, model: str) -> LLMClient:
        """The client whose servers serve ``model`` for calls of ``kind``."""
        return self._by_model.get((kind, model)) or self._by_kind[kind]

    def endpoint_urls(self) -> list[str]:
        """Every server of the run, each once, in the order the config names them."""
        urls: dict[str, None] = {}
        for client in self._clients.values():
            urls.update(dict.fromkeys(client.endpoints))
        return list(urls)

    async def __aexit__(self, *exc: object) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.aclose()

    async def _poll(self) -> dict[str, MetricsSnapshot]:
        """Read every server's /metrics into the engine figures; the readable ones."""
        assert self._reader is not None and self._watch is not None
        each = await self._reader.read_each()
        for url, reading in each.items():
            self._watch.update(url, reading)
        read = {u: r for u, r in each.items() if isinstance(r, MetricsSnapshot)}
        self.counters.capacity = self.capacity
        return read

    async def _watch_engines(self, interval_s: float) -> None:
        """With fixed limits no controller reads /metrics: read it for the panel."""
        while True:
            await self._poll()
            await anyio.sleep(interval_s)

    def _reader_of(self, url: str) -> Callable[[], Awaitable[MetricsView]]:
        """The view one engine's controller steers on: that engine's /metrics (read at
        once, so each decision has a sample of its own) and its own limiter."""

        async def read() -> MetricsView:
            assert self._reader is not None
            try:
                snap = await fetch_metrics(self._reader.session, url)
            except ServerError as exc:
                if self._watch is not None:
                    self._watch.update(url, exc)
                raise
            if self._watch is not None:
                self._watch.update(url, snap)
            limiter = self.limiters[url]
            self.counters.capacity = self.capacity
            return MetricsView(
                time=snap.time,
                running=snap.running,
                waiting=snap.waiting,
                waiting_deferred=snap.waiting_deferred,
                kv_cache_usage=snap.kv_cache_usage,
                preemptions=snap.preemptions,
                generation_tokens=snap.generation_tokens,
                prefix_cache_hits=snap.prefix_cache_hits,
                prefix_cache_queries=snap.prefix_cache_queries,
                in_flight=limiter.in_flight,
                queued=limiter.waiting,
                capacity=limiter.capacity,
            )

        return read

    def engine_figures(self) -> list[EngineFigures]:
        """Each server now: its state and load in our client, its faults, its /metrics."""
        assert self._watch is not None
        figures = []
        for url in self._watch.urls:
            up, in_flight, limit = True, 0, None
            faults: Counter[str] = Counter()
            for client in self._clients.values():
                for ep in client.pool.endpoints:
                    if ep.url == url:
                        up = up and ep.up
                        in_flight += ep.in_flight
                        limit = getattr(ep, "limit", None) or limit  # a per-engine bound
                faults.update(client.faults.get(url, {}))
            limiter = self.limiters.get(url)
            if limiter is not None:
                limit = limiter.capacity  # the engine's own limit now (its cap: self.limits)
            reading = self._watch.reading(url)
            figures.append(
                EngineFigures(
                    url=url,
                    up=up,
                    in_flight=in_flight,
                    limit=limit,
                    requests=self._replies[url],
                    completion_tokens=self._tokens[url],
                    faults={k: v for k, v in sorted(faults.items()) if v},
                    **msgspec.structs.asdict(reading),
                )
            )
        return figures

    def controller_figures(self) -> ControllerFigures:
        """The engines' limits summed and, when adaptive, the last move of any of them
        (each engine's own limit is in :meth:`engine_figures`)."""
        if not self.controllers:
            return ControllerFigures(adaptive=False, limit=self.capacity)
        moved = [(c.last_move, c) for c in self.controllers.values() if c.last_move]
        latest = max(moved, key=lambda m: m[0][0], default=None)
        last = latest[0] if latest else None
        reasons = [c.history[-1] for c in self.controllers.values() if c.history]
        reason = max(reasons, key=lambda h: h[0])[2] if reasons else ""
        name = f"{latest[1].name}: " if latest and len(self.controllers) > 1 else ""
        return ControllerFigures(
            adaptive=True,
            limit=self.capacity,
            reason=reason,
            moved_reason=f"{name}{last[3]}" if last else "",
            moved_ago_s=round(time.monotonic() - last[0], 1) if last else None,
            moves=sum(c.moves for c in self.controllers.values()),
        )

    @property
    def model(self) -> str:
        """The run's model: ``model`` of the config, else what the servers serve."""
        return self.facts.model

    async def complete(
        self,
        kind: str,
        request: RequestOrBuild,
        *,
        affinity: str | None = None,
        priority: int = 0,
    ) -> Completion:
        """One completion under its engine's limit; the time spent waiting for a slot is kept
        apart from the server's latency in every figure. A request given as a function is
        built once the slot is held, and sent as it was built."""
        t0 = time.monotonic()
        # The engine is chosen before the request is built, so a request built later for
        # a model with servers of its own is sent there by its client's routing instead.
        model = request.model if isinstance(request, ChatRequest) else ""
        routing = self.client_for(kind, model) if model else self._by_kind[kind]
        async with _EngineSlot(self, routing, affinity, priority) as url:
            queued = time.monotonic() - t0
            request = built(request)
            self.counters.in_flight += 1
            try:
                client = self.client_for(kind, request.model)
                reply = await client.chat(request, affinity=affinity, endpoint=url)
            except RequestError:
                self.counters.request_errors += 1
                raise
            finally:
                self.counters.in_flight -= 1
        reply.queue_s = queued
        text, thoughts = strip_thinking(reply.text)
        if thoughts:
            reply.text = text
            self.counters.thinking_stripped += thoughts
        self._replies[reply.endpoint] += 1
        self._tokens[reply.endpoint] += reply.usage.completion
        self.counters.on_reply(
            reply.usage.prompt, reply.usage.completion, reply.usage.cached, reply.latency_s, queued
        )
        return reply


class _EngineSlot:
    """``async with``: a slot of the engine a request goes to, its URL as the value.

    The engine is chosen first (the conversation's home, else the one with most room),
    then its own limiter is waited on; when that engine is taken out meanwhile, its
    limiter withdraws the wait and the engine is chosen again among the others."""

    __slots__ = ("_affinity", "_client", "_gateway", "_limiter", "_priority")

    def __init__(
        self, gateway: ModelGateway, client: LLMClient, affinity: str | None, priority: int
    ) -> None:
        self._gateway = gateway
        self._client = client
        self._affinity = affinity
        self._priority = priority
        self._limiter: PriorityLimiter | None = None

    async def __aenter__(self) -> str:
        pool = self._client.pool
        while True:
            ep = await pool.home(self._affinity)
            limiter = self._gateway.limiters[ep.url]
            try:
                await limiter.acquire(self._priority)
            except Withdrawn:
                continue
            self._limiter = limiter
            return ep.url

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._limiter is not None
        self._limiter.release()
