"""The model side of a run: clients, the request limiter and its adaptive controller.

:class:`ModelGateway` is the :class:`~soc_async.llm.types.Completer` the stages call. Every
request, whatever its stage, takes a slot of one :class:`PriorityLimiter` first, so the
whole process keeps one bound on requests in flight; the controller moves that bound from
the servers' /metrics when the concurrency is adaptive.

A request goes to the servers of its model: a model of ``[calls.KIND] models`` that
names its own ``endpoints`` is served there, any other model by the kind's endpoints
(else the run's). The model itself was chosen by ``stages.calls.build_request``.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import anyio

from soc_async import logs
from soc_async.config import CALL_KINDS, RunConfig
from soc_async.errors import RequestError
from soc_async.llm.client import LLMClient
from soc_async.llm.metrics import MetricsReader
from soc_async.llm.types import ChatRequest, Completion
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
        self._by_model: dict[tuple[str, str], LLMClient] = {}  # (kind, model) -> its servers
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._reader: MetricsReader | None = None
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
            self._by_kind[kind] = await self._client(tuple(cfg.endpoints_for(kind)), pool)
            for choice in cfg.call(kind).models:
                if choice.endpoints:
                    client = await self._client(tuple(choice.endpoints), pool)
                    self._by_model[(kind, choice.name)] = client
        if not self.model:
            self.model = await self._by_kind["turn"].served_model()
        self.counters.capacity = self.limiter.capacity
        if cfg.concurrency.fixed is None:
            main = self._by_kind["turn"]
            turn_urls = cfg.endpoints_for("turn") + [
                u for m in cfg.call("turn").models for u in m.endpoints
            ]
            self._reader = MetricsReader(main.session, list(dict.fromkeys(turn_urls)))
            self.controller = AdaptiveController(
                self.limiter,
                self._read_metrics,
                Bounds(min=cfg.concurrency.min, max=cfg.concurrency.max),
                cfg.concurrency.interval_s,
            )
            self._tg = await self._stack.enter_async_context(anyio.create_task_group())
            self._tg.start_soon(self.controller.run)
        return self

    async def _client(self, urls: tuple[str, ...], pool: int) -> LLMClient:
        """The one client of an endpoint set, opened on first use."""
        if urls not in self._clients:
            client = LLMClient(
                list(urls),
                api_key=self.config.api_key,
                config=self.config.client,
                pool_size=pool,
                default_model=self.config.model,
            )
            self._clients[urls] = await self._stack.enter_async_context(client)
        return self._clients[urls]

    def client_for(self, kind: str, model: str) -> LLMClient:
        """The client whose servers serve ``model`` for calls of ``kind``."""
        return self._by_model.get((kind, model)) or self._by_kind[kind]

    async def __aexit__(self, *exc: object) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.aclose()

    async def _read_metrics(self) -> MetricsView:
        assert self._reader is not None
        snap = await self._reader.read()
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
                client = self.client_for(kind, request.model)
                reply = await client.chat(request, affinity=affinity)
            except RequestError:
                self.counters.request_errors += 1
                raise
            finally:
                self.counters.in_flight -= 1
        reply.queue_s = queued
        self.counters.capacity = self.limiter.capacity
        self.counters.on_reply(
            reply.usage.prompt, reply.usage.completion, reply.usage.cached, reply.latency_s, queued
        )
        return reply
