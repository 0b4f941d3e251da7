"""A simulated engine's /metrics page, in vLLM's names and labels.

The figures are the engine's own books (:class:`~.engine.EngineCounters`, its queue and
block pool), so what the page says is what the engine did. Besides the series the
client steers on (llm/metrics.py), it carries what vLLM itself exports about the engine
and that a tool can size itself from: ``vllm:cache_config_info``, an info-style gauge
whose labels are vLLM's CacheConfig (``block_size``, ``num_gpu_blocks``, ...), and the
time-to-first-token histogram.
"""

from __future__ import annotations

from soc_async.testing.simulator.engine import TTFT_BUCKETS, SimEngine

__all__ = ["exposition"]


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def exposition(engine: SimEngine, model: str) -> str:
    """The Prometheus text page of ``engine``, served under ``model``."""
    p = engine.profile
    c = engine.counters
    base = _labels(engine=engine.name, model_name=model)
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float) -> None:
        sample = f"{name}_total" if kind == "counter" else name
        out.append(f"# HELP {sample} {help_text}")
        out.append(f"# TYPE {sample} {kind}")
        out.append(f"{sample}{base} {float(value)!r}")

    metric("vllm:num_requests_running", "gauge", "Requests in the batch.", engine.running)
    metric("vllm:num_requests_waiting", "gauge", "Requests waiting.", engine.num_waiting)
    name = "vllm:num_requests_waiting_by_reason"
    out.append(f"# HELP {name} Waiting requests by reason; the sum is num_requests_waiting.")
    out.append(f"# TYPE {name} gauge")
    deferred = engine.num_compiling  # blocked on their grammar
    for reason, value in (("capacity", engine.num_waiting - deferred), ("deferred", deferred)):
        labels = _labels(engine=engine.name, model_name=model, reason=reason)
        out.append(f"{name}{labels} {float(value)!r}")
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 is full.", engine.kv_usage)
    metric("vllm:num_preemptions", "counter", "Preemptions.", c.preemptions)
    metric("vllm:prefix_cache_queries", "counter", "Prompt tokens looked up.", c.prefix_queries)
    metric("vllm:prefix_cache_hits", "counter", "Prompt tokens found cached.", c.prefix_hits)
    metric("vllm:prompt_tokens", "counter", "Prefill tokens processed.", c.prompt_tokens)
    metric("vllm:generation_tokens", "counter", "Tokens generated.", c.generation_tokens)
    metric("vllm:request_success", "counter", "Requests finished.", c.finished)

    name = "vllm:time_to_first_token_seconds"
    out.append(f"# HELP {name} Time to first token.")
    out.append(f"# TYPE {name} histogram")
    cumulative = 0
    for bound, count in zip(TTFT_BUCKETS, c.ttft_buckets, strict=True):
        cumulative += count
        le = _labels(engine=engine.name, le=repr(float(bound)), model_name=model)
        out.append(f"{name}_bucket{le} {float(cumulative)!r}")
    inf = _labels(engine=engine.name, le="+Inf", model_name=model)
    out.append(f"{name}_bucket{inf} {float(c.ttft_count)!r}")
    out.append(f"{name}_count{base} {float(c.ttft_count)!r}")
    out.append(f"{name}_sum{base} {float(c.ttft_sum)!r}")

    info = _labels(
        block_size=str(p.block_size),
        cache_dtype="auto",
        enable_prefix_caching="True",
        engine=engine.name,
        gpu_memory_utilization="0.9",
        num_cpu_blocks="0",
        num_gpu_blocks=str(p.num_gpu_blocks),
    )
    out.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
    out.append("# TYPE vllm:cache_config_info gauge")
    out.append(f"vllm:cache_config_info{info} 1.0")
    return "\n".join(out) + "\n"
