"""The bench's default sweep, sized from the server it measures.

What vLLM tells a client about its engine's size:

- ``/metrics`` always carries ``vllm:cache_config_info``, a gauge whose labels are the
  engine's CacheConfig, among them ``num_gpu_blocks`` and ``block_size``: their product
  is the KV cache in tokens (what vLLM logs as "GPU KV cache size").
- ``max_num_seqs``, the most requests one engine batches, is in no metric. vLLM serves
  it at ``/server_info`` (the whole engine config as JSON with
  ``?config_format=json``) only when started with ``VLLM_SERVER_DEV_MODE=1``. Its
  default, when nobody sets it, is 1,024 on a GPU of 70 GiB or more other than an A100
  (H100, H200), 256 on smaller GPUs, and 128 per CPU socket on the CPU build
  (vllm/engine/arg_utils.py).

So the sweep goes up to ``max_num_seqs`` when the server says it, else up to an
estimate from the KV cache (as many small chat turns as it holds, at least 256); it
doubles from 1/64th of that top, so the knee of a GPU engine (where its KV cache is
full: about 90 chat turns for an 8B model on an H100) falls inside. With no figure at
all, the old fixed sweep. On the embedded CPU server (SmolLM2-135M, a few tens of tokens
a second on two cores) the sweep is small enough to finish in under ten minutes.

:func:`plan_sweep` is pure; :func:`read_server_facts` does the HTTP.
"""

from __future__ import annotations

import math

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "CPU_SWEEP",
    "FALLBACK_SWEEP",
    "ServerFacts",
    "SweepPlan",
    "facts_from_metrics",
    "facts_from_server_info",
    "plan_sweep",
    "read_server_facts",
]

FALLBACK_SWEEP = (1, 4, 16, 64)  # no figure from the server: the old default
# The embedded CPU server: two values, two turns, two conversations. Each phase of C
# conversations of 2 turns of ~170 tokens at the measured 14-26 tok/s (C=2..8) takes
# 0.5-2 minutes, pipeline and ceiling; with the adaptive run and the server's start,
# about 8 minutes on 2 cores (docs/performance.md).
CPU_SWEEP = (2, 8)
CPU_TURNS = 2
CPU_CONVERSATIONS = 2
MAX_TOP = 2048  # the largest batch worth sweeping to on one engine
MIN_ESTIMATED_TOP = 256  # vLLM's smallest default max_num_seqs on a GPU
SMALL_TURN_TOKENS = 1000  # a chat turn's KV footprint is rarely below this
POINTS = 7  # top, top/2, ... top/64


class ServerFacts(msgspec.Struct, kw_only=True, frozen=True):
    """What the server said about its engine; None where it said nothing."""

    max_num_seqs: int | None = None  # from /server_info (dev mode, or the simulator)
    num_gpu_blocks: int | None = None  # from vllm:cache_config_info
    block_size: int | None = None
    time_scale: float | None = None  # the simulator's, from /server_info

    @property
    def kv_tokens(self) -> int | None:
        if self.num_gpu_blocks is None or self.block_size is None:
            return None
        return self.num_gpu_blocks * self.block_size


class SweepPlan(msgspec.Struct, kw_only=True, frozen=True):
    """The sweep to run and why."""

    concurrency: list[int]
    source: str  # one line: where the values came from, for the table and bench.json
    max_turns: int | None = None  # set: the plan's own (the CPU plan's short chats)
    conversations: int | None = None


def _doubling(top: int) -> list[int]:
    values = {max(1, top >> k) for k in range(POINTS)}
    return sorted(values)


def plan_sweep(facts: ServerFacts | None, *, embedded_cpu: bool = False) -> SweepPlan:
    """The default sweep for a server that said ``facts`` (see the module docstring)."""
    if embedded_cpu:
        return SweepPlan(
            concurrency=list(CPU_SWEEP),
            source="the embedded CPU server: a short sweep (about 8 minutes on 2 cores)",
            max_turns=CPU_TURNS,
            conversations=CPU_CONVERSATIONS,
        )
    if facts is not None and facts.max_num_seqs:
        top = min(MAX_TOP, facts.max_num_seqs)
        return SweepPlan(
            concurrency=_doubling(top),
            source=f"up to the engine's max_num_seqs {facts.max_num_seqs} (/server_info)",
        )
    kv = facts.kv_tokens if facts is not None else None
    if kv:
        fit = kv / SMALL_TURN_TOKENS
        top = min(MAX_TOP, max(MIN_ESTIMATED_TOP, 1 << max(0, math.ceil(math.log2(fit)))))
        return SweepPlan(
            concurrency=_doubling(top),
            source=(
                f"up to {top}: the KV cache holds {kv:,} tokens, about {fit:.0f} chat turns "
                f"of {SMALL_TURN_TOKENS:,} tokens (vllm:cache_config_info)"
            ),
        )
    return SweepPlan(
        concurrency=list(FALLBACK_SWEEP),
        source="the server gave no engine size: the fixed default sweep",
    )


def facts_from_metrics(text: str) -> ServerFacts:
    """The KV-cache size in a /metrics page (the first engine's cache_config_info)."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return ServerFacts()
    for family in families:
        for sample in family.samples:
            if sample.name != "vllm:cache_config_info":
                continue
            labels = sample.labels
            try:
                return ServerFacts(
                    num_gpu_blocks=int(labels["num_gpu_blocks"]),
                    block_size=int(labels["block_size"]),
                )
            except (KeyError, ValueError):
                return ServerFacts()
    return ServerFacts()


def facts_from_server_info(data: object, base: ServerFacts) -> ServerFacts:
    """``base`` with what a /server_info JSON body adds (max_num_seqs, KV blocks, the
    simulator's time scale); ``base`` unchanged for a body of another shape."""
    if not isinstance(data, dict):
        return base
    config = data.get("vllm_config")
    changes: dict[str, object] = {}
    if isinstance(config, dict):
        scheduler = config.get("scheduler_config")
        if isinstance(scheduler, dict) and isinstance(scheduler.get("max_num_seqs"), int):
            changes["max_num_seqs"] = scheduler["max_num_seqs"]
        cache = config.get("cache_config")
        if isinstance(cache, dict) and base.num_gpu_blocks is None:
            blocks, size = cache.get("num_gpu_blocks"), cache.get("block_size")
            if isinstance(blocks, int) and isinstance(size, int):
                changes.update(num_gpu_blocks=blocks, block_size=size)
    simulator = data.get("simulator")
    if isinstance(simulator, dict) and isinstance(simulator.get("time_scale"), int | float):
        changes["time_scale"] = float(simulator["time_scale"])
    return msgspec.structs.replace(base, **changes)


async def read_server_facts(session: aiohttp.ClientSession, url: str) -> ServerFacts:
    """What the server at ``url`` says about its engine: /metrics, then /server_info
    (absent on vLLM outside dev mode). Never raises: an unanswered question is None."""
    base = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=10)
    facts = ServerFacts()
    try:
        async with session.get(base + "/metrics", timeout=timeout) as resp:
            if resp.status == 200:
                facts = facts_from_metrics(await resp.text())
    except (aiohttp.ClientError, TimeoutError):
        pass
    try:
        async with session.get(
            base + "/server_info", params={"config_format": "json"}, timeout=timeout
        ) as resp:
            if resp.status == 200:
                facts = facts_from_server_info(await resp.json(content_type=None), facts)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass
    return facts
