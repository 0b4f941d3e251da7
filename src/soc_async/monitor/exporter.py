"""The Prometheus endpoint of ``soc-async run --metrics-port P``.

prometheus_client serves ``/metrics`` from its own thread. What it serves is the newest
:class:`~soc_async.monitor.snapshot.Snapshot` the run handed over (:meth:`publish`, at
every metrics.jsonl line), never live objects of the event loop: a scrape reads one
immutable snapshot, so its figures agree with each other and with a line of
metrics.jsonl. Every name starts with ``soc_async_``; counters end in ``_total``.

    soc_async_run_info{path,seed,shard,host}             1
    soc_async_elapsed_seconds, soc_async_finished        gauges
    soc_async_stage_target / _active {stage}             gauges
    soc_async_stage_done_total / _failed_total {stage}   counters
    soc_async_requests_total, soc_async_request_errors_total
    soc_async_tokens_total{kind=prompt|completion|cached}
    soc_async_tokens_per_second                          completion tokens, recent window
    soc_async_in_flight, soc_async_limit                 gauges
    soc_async_limit_moves_total
    soc_async_transport_faults_total{endpoint,cause}     every failed attempt
    soc_async_rejections_total{reason}                   content rejections
    soc_async_failures_total{reason}                     failure records
    soc_async_engine_up / _in_flight / _running / _waiting / _kv_cache_usage
        / _prefix_cache_hit_ratio / _generation_tokens_per_second {endpoint}
    soc_async_engine_requests_total / _preemptions_total {endpoint}
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from soc_async.errors import InputError
from soc_async.monitor.snapshot import Snapshot

__all__ = ["MetricsServer", "SnapshotCollector", "families"]


def families(snap: Snapshot, info: dict[str, str] | None = None) -> Iterator[Metric]:
    """The metric families of one snapshot (pure: no server needed)."""
    if info:
        run = InfoMetricFamily("soc_async_run", "The run this process writes.")
        run.add_metric([], info)
        yield run
    yield _gauge("soc_async_elapsed_seconds", "Seconds since the process started.", snap.elapsed_s)
    yield _gauge("soc_async_finished", "1 once the run has ended.", float(snap.finished))

    target = GaugeMetricFamily(
        "soc_async_stage_target", "Items this shard makes.", labels=["stage"]
    )
    active = GaugeMetricFamily("soc_async_stage_active", "Items in progress.", labels=["stage"])
    done = CounterMetricFamily("soc_async_stage_done", "Items written.", labels=["stage"])
    failed = CounterMetricFamily(
        "soc_async_stage_failed", "Items failed or skipped.", labels=["stage"]
    )
    for name, st in snap.stages.items():
        target.add_metric([name], st.target)
        active.add_metric([name], st.active)
        done.add_metric([name], st.done)
        failed.add_metric([name], st.failed + st.skipped)
    yield from (target, active, done, failed)

    yield _counter("soc_async_requests", "Replies received.", snap.requests)
    yield _counter(
        "soc_async_request_errors", "Requests failed for good (4xx, retries spent).",
        snap.request_errors,
    )  # fmt: skip
    tokens = CounterMetricFamily("soc_async_tokens", "Tokens in replies.", labels=["kind"])
    tokens.add_metric(["prompt"], snap.prompt_tokens)
    tokens.add_metric(["completion"], snap.completion_tokens)
    tokens.add_metric(["cached"], snap.cached_tokens)
    yield tokens
    yield _gauge(
        "soc_async_tokens_per_second", "Completion tokens/s, recent window.", snap.tokens_per_s
    )
    yield _gauge("soc_async_in_flight", "Requests in flight.", snap.in_flight)
    limit = snap.controller.limit if snap.controller else snap.capacity
    yield _gauge("soc_async_limit", "The limit on requests in flight, all engines.", limit)
    moves = snap.controller.moves if snap.controller else 0
    yield _counter("soc_async_limit_moves", "Changes of the limit.", moves)

    faults = CounterMetricFamily(
        "soc_async_transport_faults",
        "Failed transport attempts (retried or not), by endpoint and cause.",
        labels=["endpoint", "cause"],
    )
    for engine in snap.engines:
        for cause, n in engine.faults.items():
            faults.add_metric([engine.url, cause], n)
    yield faults
    yield _by_reason("soc_async_rejections", "Content rejections by reason.", snap.rejections)
    yield _by_reason("soc_async_failures", "Failure records by reason.", snap.failures)
    yield from _engines(snap)


def _engines(snap: Snapshot) -> Iterator[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"soc_async_engine_{name}", doc, labels=["endpoint"])

    up = gauge("up", "1 while the endpoint is in service.")
    in_flight = gauge("in_flight", "Our requests on it.")
    limit = gauge("limit", "Its own limit on our requests in flight (soc_async_limit: the sum).")
    running = gauge("running", "vllm:num_requests_running.")
    waiting = gauge("waiting", "vllm:num_requests_waiting.")
    kv = gauge("kv_cache_usage", "vllm:kv_cache_usage_perc, 0..1.")
    hit = gauge("prefix_cache_hit_ratio", "Prefix-cache hits / queries over this run.")
    tps = gauge("generation_tokens_per_second", "vllm:generation_tokens rate.")
    requests = CounterMetricFamily(
        "soc_async_engine_requests", "Replies it sent us.", labels=["endpoint"]
    )
    preemptions = CounterMetricFamily(
        "soc_async_engine_preemptions", "vllm:num_preemptions since the run began.",
        labels=["endpoint"],
    )  # fmt: skip
    for e in snap.engines:
        labels = [e.url]
        up.add_metric(labels, float(e.up))
        in_flight.add_metric(labels, e.in_flight)
        if e.limit is not None:
            limit.add_metric(labels, e.limit)
        requests.add_metric(labels, e.requests)
        for family, value in (
            (running, e.running),
            (waiting, e.waiting),
            (kv, e.kv_cache_usage),
            (hit, e.prefix_hit_rate),
            (tps, e.tokens_per_s),
            (preemptions, e.preemptions),
        ):
            if value is not None:  # an unread figure is absent, not zero
                family.add_metric(labels, value)
    yield from (up, in_flight, limit, running, waiting, kv, hit, tps, requests, preemptions)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by_reason(name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, n in values.items():
        family.add_metric([reason], n)
    return family


class SnapshotCollector(Collector):
    """Serves the newest published snapshot; nothing before the first one."""

    def __init__(self, info: dict[str, str] | None = None) -> None:
        self._latest: Snapshot | None = None
        self._info = info or {}

    def publish(self, snapshot: Snapshot) -> None:
        self._latest = snapshot  # one reference swap: a scrape sees old or new, whole

    def collect(self) -> Iterator[Metric]:
        snap = self._latest
        if snap is not None:
            yield from families(snap, self._info)


class MetricsServer:
    """``/metrics`` on ``host:port`` while the ``with`` block runs (port 0: a free one).

    A port that cannot be bound is an :class:`InputError` naming it, raised on entry,
    before the run writes anything.
    """

    def __init__(self, host: str, port: int, info: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.collector = SnapshotCollector(info)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def publish(self, snapshot: Snapshot) -> None:
        self.collector.publish(snapshot)

    def __enter__(self) -> MetricsServer:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=registry
            )
        except OSError as exc:
            raise InputError(
                f"--metrics-port {self.port}: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or exc}); choose another port"
            ) from exc
        self.port = self._server.server_address[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
