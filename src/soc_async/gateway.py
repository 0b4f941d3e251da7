"""The model side of a run: clients, the request limiter and its adaptive controller.

:class:`ModelGateway` is the :class:`~soc_async.llm.types.Completer` the stages call. Every
request, whatever its stage, takes a slot of one :class:`PriorityLimiter` first, so the
whole process keeps one bound on requests in flight; the controller moves that bound from
the servers' /metrics when the concurrency is adaptive.

The gateway is also where the run's figures about its servers come together: it reads
every server's /metrics each ``concurrency.interval_s`` (for the controller when the
limit is adaptive, for the live panel in any case), counts replies and tokens per
endpoint, and hands :class:`~soc_async.progress.RunCounters` the functions that describe
each engine and the limit at snapshot time.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import AsyncExitStack

import anyio
import msgspec

from soc_async import logs
from soc_async.config import CALL_KINDS, RunConfig
from soc_async.errors import RequestError, ServerError
from soc_async.llm.client import LLMClient
from soc_async.llm.metrics import MetricsReader, MetricsSnapshot, combine
from soc_async.llm.types import ChatRequest, Completion
from soc_async.monitor.engines import EngineWatch
from soc_async.monitor.snapshot import ControllerFigures, EngineFigures
from soc_async.progress import RunCounters
from soc_async.scheduler.controller import AdaptiveController, Bounds, MetricsView
from soc_async.scheduler.limiter import PriorityLimiter

log = logs.get("engine")


class ModelGateway:
    """Clients per endpoint set, one limiter, and (when adaptive) its controller."""

    def __init__(self, config: RunConfig, counters: RunCounters) -> None:
        self.config = config
        self.counters = counters
        c = config.concurrency
        self.limiter = PriorityLimiter(c.fixed or c.initial)
        self.controller: AdaptiveController | None = None
        self._clients: dict[tuple[str, ...], LLMClient] = {}
        self._by_kind: dict[str, LLMClient] = {}
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._reader: MetricsReader | None = None
        self._watch: EngineWatch | None = None
        self._replies: Counter[str] = Counter()  # by endpoint URL
        self._tokens: Counter[str] = Counter()  # completion tokens by endpoint URL
        self.model = config.model

    async def __aenter__(self) -> ModelGateway:
        try:
            return await self._open()
        except BaseException:
            await self._stack.aclose()  # no session left open when the server is away
            raise

    async def _open(self) -> ModelGateway:
        cfg = self.config
        pool = cfg.concurrency.fixed or cfg.concurrency.max
        for kind in CALL_KINDS:
            urls = tuple(cfg.endpoints_for(kind))
            if urls not in self._clients:
                client = LLMClient(
                    list(urls),
                    api_key=cfg.api_key,
                    config=cfg.client,
                    pool_size=pool,
                    default_model=cfg.model,
                )
                self._clients[urls] = await self._stack.enter_async_context(client)
            self._by_kind[kind] = self._clients[urls]
        if not self.model:
            self.model = await self._by_kind["turn"].served_model()
        self.counters.capacity = self.limiter.capacity
        urls = self.endpoint_urls()
        self._reader = MetricsReader(self._by_kind["turn"].session, urls)
        self._watch = EngineWatch(urls)
        self.counters.engines = self.engine_figures
        self.counters.controller = self.controller_figures
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        if cfg.concurrency.fixed is None:
            self.controller = AdaptiveController(
                self.limiter,
                self._read_metrics,
                Bounds(min=cfg.concurrency.min, max=cfg.concurrency.max),
                cfg.concurrency.interval_s,
            )
            self._tg.start_soon(self.controller.run)
        else:
            self._tg.start_soon(self._watch_engines, cfg.concurrency.interval_s)
        return self

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
        return {u: r for u, r in each.items() if isinstance(r, MetricsSnapshot)}

    async def _watch_engines(self, interval_s: float) -> None:
        """With a fixed limit no controller reads /metrics: read it for the panel."""
        while True:
            await self._poll()
            await anyio.sleep(interval_s)

    async def _read_metrics(self) -> MetricsView:
        """The controller's view: the turn servers' /metrics combined, our limiter's state."""
        read = await self._poll()
        turn = [
            read[u.rstrip("/")] for u in self.config.endpoints_for("turn") if u.rstrip("/") in read
        ]
        if not turn:
            raise ServerError("no turn server's /metrics could be read")
        snap = combine(turn)
        self.counters.capacity = self.limiter.capacity
        return MetricsView(
            time=snap.time,
            running=snap.running,
            waiting=snap.waiting,
            kv_cache_usage=snap.kv_cache_usage,
            preemptions=snap.preemptions,
            generation_tokens=snap.generation_tokens,
            in_flight=self.limiter.in_flight,
            queued=self.limiter.waiting,
            capacity=self.limiter.capacity,
        )

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
        """The one limit and, when it is adaptive, what last moved it."""
        c = self.controller
        if c is None:
            return ControllerFigures(adaptive=False, limit=self.limiter.capacity)
        last = c.last_move
        return ControllerFigures(
            adaptive=True,
            limit=self.limiter.capacity,
            reason=c.history[-1][2] if c.history else "",
            moved_reason=last[3] if last else "",
            moved_ago_s=round(time.monotonic() - last[0], 1) if last else None,
            moves=c.moves,
        )

    def model_for(self, kind: str) -> str:
        return self.config.model_for(kind) or self.model

    async def complete(
        self,
        kind: str,
        request: ChatRequest,
        *,
        affinity: str | None = None,
        priority: int = 0,
    ) -> Completion:
        """One completion under the run's limit; the time spent waiting for a slot is kept
        apart from the server's latency in every figure."""
        if not request.model:
            request.model = self.model_for(kind)
        if not self.config.client.send_seed:
            request.seed = None
        t0 = time.monotonic()
        async with self.limiter.slot(priority):
            queued = time.monotonic() - t0
            self.counters.in_flight += 1
            try:
                reply = await self._by_kind[kind].chat(request, affinity=affinity)
            except RequestError:
                self.counters.request_errors += 1
                raise
            finally:
                self.counters.in_flight -= 1
        reply.queue_s = queued
        self._replies[reply.endpoint] += 1
        self._tokens[reply.endpoint] += reply.usage.completion
        self.counters.capacity = self.limiter.capacity
        self.counters.on_reply(
            reply.usage.prompt, reply.usage.completion, reply.usage.cached, reply.latency_s, queued
        )
        return reply
