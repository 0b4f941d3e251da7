"""/metrics parsing: vLLM's names, several label sets, old names, combining servers."""

from __future__ import annotations

import aiohttp
import pytest

from soc_async.config import ClientConfig
from soc_async.errors import ServerError
from soc_async.llm.client import LLMClient
from soc_async.llm.metrics import (
    EngineInfo,
    MetricsSnapshot,
    combine,
    fetch_engine_info,
    fetch_metrics,
    parse_engine_info,
    parse_metrics,
)
from soc_async.llm.types import ChatRequest

# Written for these tests in the shape a vLLM server exports: HELP and TYPE lines,
# counters with _total and _created samples, histograms, two data-parallel engines.
VLLM_PAGE = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 7.0
vllm:num_requests_running{engine="1",model_name="smol"} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smol"} 2.0
vllm:num_requests_waiting{engine="1",model_name="smol"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smol"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="smol"} 0.61
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="smol"} 3.0
vllm:num_preemptions_total{engine="1",model_name="smol"} 1.0
vllm:num_preemptions_created{engine="0",model_name="smol"} 1.77e+09
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="smol"} 10000.0
vllm:prefix_cache_queries_total{engine="1",model_name="smol"} 6000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="smol"} 7500.0
vllm:prefix_cache_hits_total{engine="1",model_name="smol"} 4500.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="smol"} 20000.0
vllm:prompt_tokens_total{engine="1",model_name="smol"} 12000.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="smol"} 3000.0
vllm:generation_tokens_total{engine="1",model_name="smol"} 2000.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="smol"} 40.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="smol"} 50.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="smol"} 50.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="smol"} 3.5
"""


def test_parse_sums_engines_and_takes_the_fullest_kv_cache() -> None:
    """Counts add over engines, KV usage is the largest, _created and histograms ignored."""
    s = parse_metrics(VLLM_PAGE, at=12.5)
    assert s == MetricsSnapshot(
        time=12.5,
        running=12,
        waiting=2,
        kv_cache_usage=0.61,
        preemptions=4,
        prefix_cache_hits=12000,
        prefix_cache_queries=16000,
        generation_tokens=5000,
        prompt_tokens=32000,
    )


def test_parse_accepts_old_names_and_counters_without_type_lines() -> None:
    """gpu_cache_usage_perc stands for KV usage; untyped _total samples and bare names count."""
    text = (
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.25\n'
        'vllm:num_preemptions_total{model_name="m"} 2\n'
        'vllm:generation_tokens{model_name="m"} 40\n'
        'vllm:generation_tokens{model_name="other"} 2\n'
    )
    s = parse_metrics(text)
    assert (s.kv_cache_usage, s.preemptions, s.generation_tokens) == (0.25, 2, 42)
    assert s.running == 0 and s.prefix_cache_hits == 0


# Families whose names start like the ones read (a histogram, a counter with a longer
# name): skipping the lines the snapshot does not read must not take these in.
LOOKALIKES = """\
# HELP vllm:prompt_tokens_cached_total Prompt tokens served from a cache.
# TYPE vllm:prompt_tokens_cached_total counter
vllm:prompt_tokens_cached_total{model_name="smol"} 900.0
# HELP vllm:num_requests_running_by_lora Requests running per adapter.
# TYPE vllm:num_requests_running_by_lora gauge
vllm:num_requests_running_by_lora{lora="a"} 99.0
# HELP vllm:request_prompt_tokens Prompt length of finished requests.
# TYPE vllm:request_prompt_tokens histogram
vllm:request_prompt_tokens_bucket{le="1.0",model_name="smol"} 0.0
vllm:request_prompt_tokens_bucket{le="+Inf",model_name="smol"} 3.0
vllm:request_prompt_tokens_count{model_name="smol"} 3.0
vllm:request_prompt_tokens_sum{model_name="smol"} 5000.0
"""


@pytest.mark.parametrize("page", [VLLM_PAGE, VLLM_PAGE + LOOKALIKES, LOOKALIKES + VLLM_PAGE])
def test_parse_reads_what_the_whole_page_says(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the lines of the families read go to the Prometheus parser; the snapshot is
    the one the whole page gives."""
    from soc_async.llm import metrics

    fast = parse_metrics(page)
    monkeypatch.setattr(metrics, "_wanted_lines", lambda text: text)
    assert fast == parse_metrics(page)
    assert fast.running == 12


def test_parse_of_a_page_without_vllm_metrics_is_all_zero() -> None:
    """A page with none of vLLM's names gives a zero snapshot, not an error."""
    assert parse_metrics("# TYPE up gauge\nup 1\n") == MetricsSnapshot()


def test_parse_refuses_text_that_is_not_an_exposition() -> None:
    """Garbage raises ValueError so the caller can tell it from an idle server."""
    with pytest.raises(ValueError):
        parse_metrics("<html>not metrics</html>\n")


def test_combine_sums_servers_and_keeps_the_fullest_cache_and_latest_time() -> None:
    """Two servers' snapshots add up; KV usage and time are the maxima."""
    one = MetricsSnapshot(time=1, running=2, waiting=1, kv_cache_usage=0.3, prefix_cache_hits=5)
    two = MetricsSnapshot(time=3, running=4, waiting=0, kv_cache_usage=0.7, prefix_cache_hits=6)
    both = combine([one, two])
    assert (both.time, both.running, both.waiting) == (3, 6, 1)
    assert both.kv_cache_usage == 0.7 and both.prefix_cache_hits == 11
    assert combine([]) == MetricsSnapshot()


async def test_fetch_reads_the_fake_servers_counters(fake_server) -> None:
    """Over HTTP: after requests with a shared prefix, tokens and prefix hits are counted."""
    server = await fake_server()
    messages = [{"role": "system", "content": "a shared system prompt " * 10}]
    async with LLMClient([server.url], api_key=None, config=ClientConfig(), pool_size=4) as c:
        for i in range(3):
            await c.chat(ChatRequest(messages=[*messages, {"role": "user", "content": f"q{i}"}]))
        s = await fetch_metrics(c.session, server.url)
        combined = await c.read_metrics()
    assert s.generation_tokens > 0 and s.prompt_tokens > 0
    assert 0 < s.prefix_cache_hits < s.prefix_cache_queries
    assert s.running == 0 and s.time > 0
    assert combined.prompt_tokens == s.prompt_tokens


async def test_fetch_from_a_dead_server_raises_server_error_with_its_url(fake_server) -> None:
    """A server that cannot be reached is named in the error, by one read or by the reader."""
    server = await fake_server()
    url = server.url
    await server.stop()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerError, match=url):
            await fetch_metrics(session, url, timeout_s=2)
    async with LLMClient([url], api_key=None, config=ClientConfig(), pool_size=2) as c:
        with pytest.raises(ServerError, match=url):
            await c.read_metrics()


def test_engine_info_reads_the_cache_config_labels() -> None:
    """vllm:cache_config_info's labels give the KV capacity (kv_cache_size_tokens, else
    blocks x block size) summed over engines; max_num_seqs only where a label has it."""
    page = (
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0\n'
        'vllm:cache_config_info{block_size="16",engine="1",kv_cache_size_tokens="20000",'
        'max_num_seqs="512"} 1.0\n'
    )
    info = parse_engine_info(page)
    assert info.kv_cache_tokens == 16000 + 20000
    assert info.max_num_seqs == 512
    assert parse_engine_info("# TYPE x gauge\nx 1\n") == EngineInfo()


async def test_the_fake_server_exposes_vllms_cache_config_info(fake_server) -> None:
    """Like vLLM 0.32: KV size in the labels, no batch size."""
    server = await fake_server(kv_capacity_tokens=4096)
    async with aiohttp.ClientSession() as session:
        info = await fetch_engine_info(session, server.url)
    assert info == EngineInfo(max_num_seqs=None, kv_cache_tokens=4096)


def test_requests_deferred_for_their_grammar_are_read_apart() -> None:
    """vLLM 0.32 exports num_requests_waiting_by_reason: "deferred" counts the waiting
    requests blocked on their own (a grammar still compiling), and is read per engine."""
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="m"} 9.0\n'
        "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 2.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="deferred"} 7.0\n'
    )
    s = parse_metrics(text)
    assert (s.waiting, s.waiting_deferred) == (9, 7)
    assert parse_metrics(VLLM_PAGE).waiting_deferred == 0  # a page without it
