"""vLLM's /metrics page read into a :class:`MetricsSnapshot`.

The adaptive controller steers on these figures: requests running and waiting, KV-cache
usage and preemptions say whether the server's batch has room; the prefix-cache
counters say whether the prompt layout shares its prefixes. Counters are cumulative
since the server started; the reader of two snapshots takes the difference.

:func:`parse_metrics` and :func:`combine` are pure; :func:`fetch_metrics` and
:class:`MetricsReader` do the HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from soc_async.errors import ServerError


class MetricsSnapshot(msgspec.Struct, kw_only=True):
    """One reading of one server (or several, combined). Counters are cumulative."""

    time: float = 0.0  # time.monotonic() when read
    running: float = 0.0  # requests in the engine's batch
    waiting: float = 0.0  # requests queued in the server, not yet scheduled
    # Of those, the ones deferred for a reason of their own rather than for room in the
    # batch: above all a grammar still compiling (vLLM's
    # vllm:num_requests_waiting_by_reason{reason="deferred"}; 0 where not exported).
    waiting_deferred: float = 0.0
    kv_cache_usage: float = 0.0  # 0..1; the fullest engine when combined
    preemptions: float = 0.0  # requests evicted from the batch for lack of KV cache
    prefix_cache_hits: float = 0.0  # prompt tokens served from the prefix cache
    prefix_cache_queries: float = 0.0  # prompt tokens looked up in it
    generation_tokens: float = 0.0
    prompt_tokens: float = 0.0


# Sample name (``_total`` removed) -> snapshot field. Older vLLM releases called the KV
# figure gpu_cache_usage_perc; counters appear with and without ``_total`` depending on
# the exposition and on whether the parser saw a TYPE line.
_FIELDS: dict[str, str] = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage",
    "vllm:num_preemptions": "preemptions",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:prompt_tokens": "prompt_tokens",
}
_MAX_FIELDS = frozenset({"kv_cache_usage"})  # a share per engine: the fullest one counts
# Families read per label value: (family, label) -> {value: snapshot field}.
_BY_LABEL: dict[str, tuple[str, dict[str, str]]] = {
    "vllm:num_requests_waiting_by_reason": ("reason", {"deferred": "waiting_deferred"}),
}


# The lines of the families above (samples, HELP and TYPE): a vLLM page is mostly
# histogram buckets the snapshot never reads, and the Prometheus parser costs about as
# much per line as the rest of a request, read every interval from every engine.
_WANTED_LINE_RE = re.compile(
    r"^(?:# (?:HELP|TYPE) )?(?:"
    + "|".join(re.escape(name) for name in [*_FIELDS, *_BY_LABEL])
    + r")(?:_total)?[ {].*\n?",
    re.MULTILINE,
)


def _wanted_lines(text: str) -> str:
    """The lines of ``text`` the snapshot reads; all of it when none is (so a page that
    is no exposition at all still goes to the parser, which refuses it)."""
    kept = "".join(_WANTED_LINE_RE.findall(text))
    return kept or text


def parse_metrics(text: str, *, at: float = 0.0) -> MetricsSnapshot:
    """The snapshot in a Prometheus text exposition, summed over label sets.

    Several engines (data-parallel ranks) or models each export their own label set;
    their counts add up, while KV usage is the largest of them. ``at`` is stored as the
    snapshot's time. Raises ValueError on text the Prometheus parser refuses.
    """
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(_wanted_lines(text)):
        for sample in family.samples:
            name = sample.name
            if name.endswith("_total"):
                name = name[:-6]
            field = _FIELDS.get(name)
            if name in _BY_LABEL:
                label, fields = _BY_LABEL[name]
                field = fields.get(sample.labels.get(label, ""))
            if field is None:
                continue
            value = float(sample.value)
            if field in _MAX_FIELDS:
                values[field] = max(values.get(field, 0.0), value)
            else:
                values[field] = values.get(field, 0.0) + value
    return MetricsSnapshot(time=at, **values)


class EngineInfo(msgspec.Struct, kw_only=True):
    """What a server says of its engines' size (``vllm:cache_config_info``), summed over
    the engines behind it (data-parallel ranks). None: not said."""

    max_num_seqs: int | None = None  # the batch size; vLLM 0.32 does not export it here
    kv_cache_tokens: int | None = None  # KV-cache capacity in tokens


def parse_engine_info(text: str) -> EngineInfo:
    """The labels of ``vllm:cache_config_info`` (an info gauge, one sample per engine).

    The KV capacity is ``kv_cache_size_tokens`` where the server gives it, else
    ``num_gpu_blocks * block_size``; ``max_num_seqs`` is read when a label carries it.
    Raises ValueError on text the Prometheus parser refuses.
    """
    seqs: list[int] = []
    tokens: list[int] = []
    for family in text_string_to_metric_families(text):
        if family.name != "vllm:cache_config_info":
            continue
        for sample in family.samples:
            labels = sample.labels
            seqs_label = _int_label(labels, "max_num_seqs")
            if seqs_label is not None:
                seqs.append(seqs_label)
            size = _int_label(labels, "kv_cache_size_tokens")
            if size is None:
                blocks = _int_label(labels, "num_gpu_blocks")
                block = _int_label(labels, "block_size")
                size = blocks * block if blocks is not None and block is not None else None
            if size is not None:
                tokens.append(size)
    return EngineInfo(
        max_num_seqs=sum(seqs) if seqs else None, kv_cache_tokens=sum(tokens) if tokens else None
    )


def _int_label(labels: dict[str, str], name: str) -> int | None:
    value = labels.get(name)
    if value is None:
        return None
    try:
        number = int(float(value))
    except ValueError:  # "None" before the cache is sized
        return None
    return number if number > 0 else None


async def fetch_engine_info(
    session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 5.0
) -> EngineInfo:
    """The server's :class:`EngineInfo`; an empty one when /metrics cannot be read."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return EngineInfo()
            return parse_engine_info(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return EngineInfo()


def combine(snapshots: Iterable[MetricsSnapshot]) -> MetricsSnapshot:
    """Several servers' snapshots as one: counts summed, KV usage the largest, latest time."""
    out = MetricsSnapshot()
    for s in snapshots:
        out.time = max(out.time, s.time)
        out.running += s.running
        out.waiting += s.waiting
        out.waiting_deferred += s.waiting_deferred
        out.kv_cache_usage = max(out.kv_cache_usage, s.kv_cache_usage)
        out.preemptions += s.preemptions
        out.prefix_cache_hits += s.prefix_cache_hits
        out.prefix_cache_queries += s.prefix_cache_queries
        out.generation_tokens += s.generation_tokens
        out.prompt_tokens += s.prompt_tokens
    return out


async def fetch_metrics(
    session: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 5.0
) -> MetricsSnapshot:
    """GET ``base_url``/metrics and parse it; ServerError if it cannot be read."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise ServerError(f"{url}: HTTP {resp.status} reading metrics")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ServerError(f"{url}: cannot read metrics ({exc.__class__.__name__}: {exc})") from exc
    try:
        return parse_metrics(body, at=time.monotonic())
    except ValueError as exc:
        raise ServerError(f"{url}: not a Prometheus metrics page ({exc})") from exc


class MetricsReader:
    """Reads /metrics of every endpoint at once, for the controller and the live panel."""

    def __init__(
        self, session: aiohttp.ClientSession, endpoints: Sequence[str], *, timeout_s: float = 5.0
    ) -> None:
        self._session = session
        self.endpoints = [u.rstrip("/") for u in endpoints]
        self._timeout_s = timeout_s

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    async def read_each(self) -> dict[str, MetricsSnapshot | ServerError]:
        """Each endpoint's snapshot, or the error that kept it from being read."""
        results = await asyncio.gather(
            *(fetch_metrics(self._session, u, timeout_s=self._timeout_s) for u in self.endpoints),
            return_exceptions=True,
        )
        out: dict[str, MetricsSnapshot | ServerError] = {}
        for url, result in zip(self.endpoints, results, strict=True):
            if isinstance(result, MetricsSnapshot | ServerError):
                out[url] = result
            else:  # anything else is a bug or a cancellation: let it out
                raise result
        return out

    async def read(self) -> MetricsSnapshot:
        """The combined snapshot of the endpoints that answered; ServerError if none did."""
        each = await self.read_each()
        ok = [s for s in each.values() if isinstance(s, MetricsSnapshot)]
        if not ok:
            raise ServerError("; ".join(str(e) for e in each.values()))
        return combine(ok)
