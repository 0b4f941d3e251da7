"""The fake server's model of a vLLM engine: config, latency, tokens, prefix cache, /metrics.

Pure functions and plain data, apart from :mod:`soc_async.testing.fake_server`'s HTTP,
so the arithmetic is tested without a socket.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

# Every fault the fake server can inject, in the order its RNG draws them.
FAULT_KINDS: tuple[str, ...] = ("500", "503", "429", "reset", "stall", "bad_json")


class FakeConfig(msgspec.Struct, kw_only=True):
    """How the fake server behaves. Defaults: instant, faultless, one short reply."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, kept across restart()
    model: str = "fake-model"
    seed: int = 0  # the fault RNG's seed: the same seed, the same outcome sequence
    # Latency: ttft_s + completion_tokens * tpot_s * (1 + batch_slowdown * others running).
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    batch_slowdown: float = 0.0
    max_num_seqs: int = 256  # requests past this wait (vllm:num_requests_waiting)
    kv_capacity_tokens: int = 262144  # KV usage = tokens of running requests / this
    default_max_tokens: int = 512  # when a request sets none
    # Fault rates, each a share of requests; together at most 1.
    p_500: float = 0.0
    p_503: float = 0.0
    p_429: float = 0.0
    p_reset: float = 0.0  # the connection is aborted with no answer
    p_stall: float = 0.0  # no answer for stall_s, then the connection is aborted
    p_bad_json: float = 0.0  # HTTP 200 with a truncated JSON body
    retry_after_s: float = 1.0  # the Retry-After of a 429 (fractions sent as they are)
    stall_s: float = 3600.0
    api_key: str | None = None  # set: requests need "Authorization: Bearer <key>" (401)
    prefix_cache: bool = True  # count prefix-cache hits (costs a hash per message)
    record: bool = True  # keep a Hit per request in stats.log
    backlog: int = 4096  # listen backlog: thousands of clients connect at once


class ReplyError(Exception):
    """Raised by a reply function to answer with an HTTP error (vLLM's error body).

    Defined here rather than in fake_server so that a reply module sees the same class
    when the server runs as ``python -m soc_async.testing.fake_server`` (``__main__``).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def even_faults(rate: float) -> dict[str, float]:
    """FakeConfig fields spreading a total fault ``rate`` evenly over every kind."""
    return {f"p_{kind}": rate / len(FAULT_KINDS) for kind in FAULT_KINDS}


def latency_s(config: FakeConfig, completion_tokens: int, others_running: int) -> float:
    """Seconds one request takes once scheduled, with ``others_running`` beside it."""
    per_token = config.tpot_s * (1.0 + config.batch_slowdown * others_running)
    return config.ttft_s + completion_tokens * per_token


def count_tokens(text: str) -> int:
    """A token count close enough for load figures: about four characters a token."""
    return max(1, len(text) // 4)


def fit_reply(text: str, max_tokens: int, ignore_eos: bool) -> tuple[str, int, str]:
    """(text, completion tokens, finish_reason) of ``text`` under ``max_tokens``.

    A reply longer than the budget is cut and finishes with "length"; ``ignore_eos``
    pads it to the budget, as vLLM keeps generating past the end token.
    """
    budget = max(1, int(max_tokens)) * 4
    if len(text) > budget:
        return text[:budget], max(1, int(max_tokens)), "length"
    if ignore_eos:
        padded = (text + " " + "lorem " * (budget // 6 + 1))[:budget] if text else "x" * budget
        return padded, max(1, int(max_tokens)), "length"
    return text, count_tokens(text), "stop"


class PrefixCache:
    """Which message prefixes were seen before, a stand-in for vLLM's block cache.

    A hit is counted in tokens for the longest run of leading messages seen before,
    as vLLM counts prompt tokens served from cached blocks.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._seen: set[int] = set()
        self._capacity = capacity

    def lookup(self, messages: list[Any]) -> int:
        """Cached tokens of ``messages``' prompt; remembers its prefixes."""
        h = 0
        hit = 0
        tokens = 0
        still_cached = True
        for m in messages:
            content = str(m.get("content", "")) if isinstance(m, dict) else str(m)
            role = m.get("role", "") if isinstance(m, dict) else ""
            h = hash((h, role, content))
            tokens += count_tokens(content) + 4
            if still_cached and h in self._seen:
                hit = tokens
            else:
                still_cached = False
                if len(self._seen) >= self._capacity:
                    self._seen.clear()
                self._seen.add(h)
        return hit


def exposition(
    model: str,
    *,
    running: float,
    waiting: float,
    kv_usage: float,
    preemptions: float,
    prefix_hits: float,
    prefix_queries: float,
    generation_tokens: float,
    prompt_tokens: float,
    kv_capacity_tokens: int = 0,
) -> str:
    """A /metrics page in Prometheus text format with vLLM's metric names and labels.

    With ``kv_capacity_tokens``, also vLLM's ``vllm:cache_config_info`` (an info gauge
    whose labels describe the KV cache; like vLLM 0.32's, it has no max_num_seqs)."""
    labels = f'{{engine="0",model_name="{model}"}}'
    rows = [
        ("vllm:num_requests_running", "gauge", "Requests in the model's batch.", running),
        ("vllm:num_requests_waiting", "gauge", "Requests waiting to be scheduled.", waiting),
        ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 means full.", kv_usage),
        ("vllm:num_preemptions", "counter", "Preemptions so far.", preemptions),
        ("vllm:prefix_cache_queries", "counter", "Prompt tokens looked up.", prefix_queries),
        ("vllm:prefix_cache_hits", "counter", "Prompt tokens found cached.", prefix_hits),
        ("vllm:prompt_tokens", "counter", "Prefill tokens processed.", prompt_tokens),
        ("vllm:generation_tokens", "counter", "Tokens generated.", generation_tokens),
    ]
    out = []
    for name, kind, help_text, value in rows:
        sample = f"{name}_total" if kind == "counter" else name
        out.append(f"# HELP {sample} {help_text}")
        out.append(f"# TYPE {sample} {kind}")
        out.append(f"{sample}{labels} {float(value)!r}")
    if kv_capacity_tokens:
        block = 16
        info = (
            f'block_size="{block}",enable_prefix_caching="True",engine="0",'
            f'gpu_memory_utilization="0.9",kv_cache_size_tokens="{kv_capacity_tokens}",'
            f'num_gpu_blocks="{kv_capacity_tokens // block}"'
        )
        out.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
        out.append("# TYPE vllm:cache_config_info gauge")
        out.append(f"vllm:cache_config_info{{{info}}} 1.0")
    return "\n".join(out) + "\n"


def completion_body(
    completion_id: str,
    model: str,
    text: str,
    finish: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
) -> dict[str, Any]:
    """One OpenAI-compatible chat completion, as vLLM's server returns it (the fake and
    the simulated server answer alike)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }
