"""The model side of a run: clients, the request limiter and its adaptive controller.

:class:`ModelGateway` is the :class:`~soc_async.llm.types.Completer` the stages call. Every
request, whatever its stage, takes a slot of one :class:`PriorityLimiter` first, so the
whole process keeps one bound on requests in flight; the controller moves that bound from
the servers' /metrics when the concurrency is adaptive.

The gateway is also where the run's figures about its servers come together: it reads
every server's /metrics each ``concurrency.interval_s`` (for the controller when the
limit is adaptive, for the live panel in any case), counts replies and tokens per
endpoint, and hands :class:`~soc_async.run.progress.RunCounters` the functions that describe
each engine and the limit at snapshot time.

Opening it waits for every endpoint to be ready (llm/readiness.py) and sizes the bounds
from the engines: each endpoint takes at most its batch size in flight
(:func:`engine_limits`), and unless ``concurrency.max`` says otherwise the whole run may
keep their sum in flight. Replies lose any ``<think>`` text before the stages see them.

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
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack

import anyio
import msgspec

from soc_async import logs
from soc_async.config import CALL_KINDS, RunConfig, RunFacts
from soc_async.errors import RequestError, ServerError
from soc_async.formats.thinking import strip_thinking
from soc_async.llm.client import LLMClient
from soc_async.llm.http import open_session
from soc_async.llm.metrics import (
    EngineInfo,
    MetricsReader,
    MetricsSnapshot,
    combine,
    fetch_engine_info,
)
from soc_async.llm.readiness import EndpointsFile, wait_for_endpoints_file, wait_until_ready
from soc_async.llm.types import Completion, RequestOrBuild, built
from soc_async.monitor.engines import EngineWatch
from soc_async.monitor.snapshot import ControllerFigures, EngineFigures
from soc_async.run.progress import RunCounters
from soc_async.scheduler.controller import AdaptiveController, Bounds, MetricsView
from soc_async.scheduler.limiter import PriorityLimiter

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
    """Clients per endpoint set, one limiter, and (when adaptive) its controller."""

    def __init__(
        self, config: RunConfig, counters: RunCounters, facts: RunFacts | None = None
    ) -> None:
        self.config = config
        self.facts = facts if facts is not None else RunFacts.of(config)
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
        self._watch: EngineWatch | None = None
        self._replies: Counter[str] = Counter()  # by endpoint URL
        self._tokens: Counter[str] = Counter()  # completion tokens by endpoint URL
        self.limits: dict[str, int] = {}  # each endpoint's bound, once open
        self._not_ready: list[str] = []  # endpoints not ready in time: out until they answer

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
        if c.fixed is None and self.limiter.capacity > total:
            self.limiter.set_capacity(total)
        pool = c.fixed or total
        log.debug("in-flight bounds", per_engine=limits, total=total)
        for kind in CALL_KINDS:
            self._by_kind[kind] = await self._client(tuple(facts.endpoints_for(cfg, kind)), pool)
            for choice in cfg.call(kind).models:
                if choice.endpoints:
                    client = await self._client(tuple(choice.endpoints), pool)
                    self._by_model[(kind, choice.name)] = client
        served = cfg.model or await self._by_kind["turn"].served_model()
        self.facts = msgspec.structs.replace(facts, model=served, max_in_flight=total)
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
                Bounds(min=min(cfg.concurrency.min, total), max=total),
                cfg.concurrency.interval_s,
            )
            self._tg.start_soon(self.controller.run)
        else:
            self._tg.start_soon(self._watch_engines, cfg.concurrency.interval_s)
        return self

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
            for url in self._not_ready:
                client.pool.take_out(url)
            self._clients[urls] = await self._stack.enter_async_context(client)
        return self._clients[urls]

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
        return {u: r for u, r in each.items() if isinstance(r, MetricsSnapshot)}

    async def _watch_engines(self, interval_s: float) -> None:
        """With a fixed limit no controller reads /metrics: read it for the panel."""
        while True:
            await self._poll()
            await anyio.sleep(interval_s)

    async def _read_metrics(self) -> MetricsView:
        """The controller's view: the turn servers' /metrics combined, our limiter's state."""
        read = await self._poll()
        cfg = self.config
        turn_urls = self.facts.endpoints_for(cfg, "turn") + [
            u for m in cfg.call("turn").models for u in m.endpoints
        ]
        turn = [read[u.rstrip("/")] for u in dict.fromkeys(turn_urls) if u.rstrip("/") in read]
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
        """One completion under the run's limit; the time spent waiting for a slot is kept
        apart from the server's latency in every figure. A request given as a function is
        built once the slot is held, and sent as it was built."""
        t0 = time.monotonic()
        async with self.limiter.slot(priority):
            queued = time.monotonic() - t0
            request = built(request)
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
        text, thoughts = strip_thinking(reply.text)
        if thoughts:
            reply.text = text
            self.counters.thinking_stripped += thoughts
        self._replies[reply.endpoint] += 1
        self._tokens[reply.endpoint] += reply.usage.completion
        self.counters.capacity = self.limiter.capacity
        self.counters.on_reply(
            reply.usage.prompt, reply.usage.completion, reply.usage.cached, reply.latency_s, queued
        )
        return reply
