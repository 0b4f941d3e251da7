"""The simulated engine's model: step time, batching, KV cache, prefix cache, metrics."""

from __future__ import annotations

import msgspec
import pytest

from soc_async.llm.metrics import parse_metrics
from soc_async.testing.simulator import PROFILES, SimEngine, SimRequest, step_time
from soc_async.testing.simulator.kv import BlockPool
from soc_async.testing.simulator.metrics import exposition
from soc_async.testing.simulator.profiles import profile, with_kv_levers

H100 = PROFILES["h100-8b"]
TINY = PROFILES["tiny"]


def run_until_done(engine: SimEngine, limit: int = 200_000) -> list[SimRequest]:
    done: list[SimRequest] = []
    for _ in range(limit):
        if not engine.has_work:
            return done
        done += engine.step()
        engine.check_invariants()
    raise AssertionError("the engine did not finish its work")


def closed_loop(engine: SimEngine, concurrency: int, prompt: int, output: int, until: float):
    """``concurrency`` requests always in flight, each new one with a prompt of its own;
    returns generated tokens per simulated second over the second half."""
    serial = 0

    def new() -> SimRequest:
        nonlocal serial
        serial += 1
        return SimRequest(prompt, output, [hash(("p", serial, j)) for j in range(prompt // 16)])

    for _ in range(concurrency):
        engine.add(new(), 0.0)
    mark = None
    while engine.now < until:
        for _ in engine.step():
            engine.add(new(), engine.now)
        if mark is None and engine.now >= until / 2:
            mark = (engine.now, engine.counters.generation_tokens)
    assert mark is not None
    return (engine.counters.generation_tokens - mark[1]) / (engine.now - mark[0])


def test_step_time_is_flat_while_memory_bound_then_grows_with_tokens() -> None:
    """Decode reads the weights once per step whatever the batch: up to the knee more
    tokens cost almost nothing; past it the step grows in proportion to the tokens."""
    one = step_time(H100, 1, 0)
    assert step_time(H100, 128, 0) == one  # memory-bound: 128 tokens cost what 1 does
    big, bigger = step_time(H100, 4096, 0), step_time(H100, 8192, 0)
    assert bigger > big * 1.8  # compute-bound: twice the tokens, about twice the time
    # Reading KV cache costs time too: 100 requests of 4,000 tokens of context.
    assert step_time(H100, 100, 400_000) > one * 2
    assert step_time(H100, 100, 0, slowdown=2.0) == pytest.approx(2 * step_time(H100, 100, 0))


def test_single_stream_and_saturated_throughput_match_the_published_figures() -> None:
    """The model's two fitted parameters (bw_efficiency, mfu) against the two figures
    they were fitted to: one request decodes at 121.8 tokens/s (GPUStack's vLLM
    baseline: 1.66 s for a ShareGPT request of about 200 tokens, ~120/s), and a
    saturated engine makes 6,172 output tokens/s for 1,000-token prompts and 500-token
    replies over this window (datatrove's 6,338 per H100; 2.6% below). The bounds are
    what the model computes, give or take 1-2%: a change to the model moves them."""
    single = closed_loop(SimEngine(H100), 1, 1000, 500, until=60)
    assert 120 < single < 124
    saturated = closed_loop(SimEngine(H100), 256, 1000, 500, until=120)
    assert 6_100 < saturated < 6_250


def test_throughput_rises_with_the_batch_then_stops() -> None:
    """Continuous batching: more requests in flight, more tokens/s, until the KV cache
    holds no more; past that, requests wait and throughput does not grow."""
    rates = [closed_loop(SimEngine(TINY), c, 800, 200, until=60) for c in (1, 4, 16, 32, 64)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[4] < rates[3] * 1.1  # the tiny KV cache holds ~20 such requests


def test_a_kv_overflow_preempts_and_every_request_still_finishes() -> None:
    """More decode growth than free blocks: the request admitted last is preempted
    (recompute), goes back to the head of the queue, and finishes later."""
    engine = SimEngine(TINY)  # 1,200 blocks of 16 tokens
    requests = [engine.add(SimRequest(1500, 800), 0.0) for _ in range(12)]
    done = run_until_done(engine)
    assert len(done) == 12 and all(r.output == 800 for r in requests)
    assert engine.counters.preemptions > 0
    assert sum(r.preemptions for r in requests) == engine.counters.preemptions
    assert engine.pool.used == 0 and engine.pool.free == TINY.num_gpu_blocks


def test_prefix_cache_serves_a_shared_prompt_and_evicts_the_oldest() -> None:
    """A prompt seen before is served from the cache (whole blocks, not its last token);
    a different prompt is not; filling the cache with other prompts evicts it."""
    engine = SimEngine(TINY)
    hashes = [hash(("shared", j)) for j in range(100)]
    first = engine.add(SimRequest(1600, 10, hashes), 0.0)
    run_until_done(engine)
    second = engine.add(SimRequest(1600, 10, hashes), engine.now)
    other = engine.add(SimRequest(1600, 10, [hash(("other", j)) for j in range(100)]), engine.now)
    run_until_done(engine)
    assert first.cached_tokens == 0
    assert second.cached_tokens == 99 * 16  # all but the block with the last token
    assert other.cached_tokens == 0
    for k in range(12):  # 12 x 100 blocks of new prompts push the old ones out
        engine.add(SimRequest(1600, 10, [hash(("fill", k, j)) for j in range(100)]), engine.now)
    run_until_done(engine)
    third = engine.add(SimRequest(1600, 10, hashes), engine.now)
    run_until_done(engine)
    assert third.cached_tokens == 0
    assert engine.pool.evictions > 0


def test_blocks_of_a_finished_request_are_evicted_tail_first() -> None:
    """Freed blocks go back last block first, so the shared beginning of a prompt
    outlives its end in the cache."""
    pool = BlockPool(4)
    assert pool.allocate(3)
    for h in (1, 2, 3):
        assert pool.publish(h)
    pool.release([1, 2, 3], private=0)  # published: the three blocks carry hashes
    assert pool.free == 4 and pool.used == 0
    assert pool.allocate(2)  # the blank block, then the oldest cached: block 3
    assert pool.cached_prefix([1, 2, 3]) == (2, 2)


def test_a_long_prompt_is_prefilled_in_chunks_of_the_token_budget() -> None:
    """Chunked prefill: a 10,000-token prompt with an 8,192-token budget needs two steps
    before its first token."""
    engine = SimEngine(H100)
    req = engine.add(SimRequest(10_000, 5), 0.0)
    engine.step()
    assert req.output == 0 and req.computed == H100.max_num_batched_tokens
    engine.step()
    assert req.output == 1 and req.first_token_at is not None


def test_never_runs_more_than_max_num_seqs() -> None:
    """Requests past max_num_seqs wait in the queue."""
    small = msgspec.structs.replace(TINY, max_num_seqs=8, num_gpu_blocks=10_000)
    engine = SimEngine(small)
    for _ in range(20):
        engine.add(SimRequest(50, 50), 0.0)
    engine.step()
    assert engine.running == 8 and engine.num_waiting == 12
    seen = 0
    while engine.has_work:
        engine.step()
        seen = max(seen, engine.running)
    assert seen == 8


def test_metrics_page_agrees_with_what_the_engine_served() -> None:
    """/metrics counts what the finished requests hold: generated and prompt tokens,
    prefix-cache hits, preemptions, and one time-to-first-token per request."""
    engine = SimEngine(TINY)
    hashes = [hash(("m", j)) for j in range(50)]
    requests = [engine.add(SimRequest(800 + 16 * i, 30 + i, hashes), 0.0) for i in range(30)]
    done = run_until_done(engine)
    snap = parse_metrics(exposition(engine, "sim"))
    assert len(done) == 30
    assert snap.generation_tokens == sum(r.max_output for r in requests)
    assert snap.prompt_tokens == sum(r.prompt_tokens for r in requests)
    assert snap.prefix_cache_hits == engine.counters.prefix_hits > 0
    assert snap.preemptions == sum(r.preemptions for r in requests)
    assert snap.running == 0 and snap.waiting == 0 and snap.kv_cache_usage == 0
    text = exposition(engine, "sim")
    assert 'vllm:time_to_first_token_seconds_count{engine="0",model_name="sim"} 30.0' in text
    assert f'num_gpu_blocks="{TINY.num_gpu_blocks}"' in text


def test_running_engine_metrics_show_its_batch_and_queue() -> None:
    """Mid-run the gauges show the batch, the queue and the KV usage of the moment."""
    engine = SimEngine(msgspec.structs.replace(TINY, max_num_seqs=4))
    for _ in range(6):
        engine.add(SimRequest(400, 100), 0.0)
    engine.step()
    snap = parse_metrics(exposition(engine, "sim"))
    assert (snap.running, snap.waiting) == (4, 2)
    assert snap.kv_cache_usage == pytest.approx(4 * 25 / TINY.num_gpu_blocks)


def test_abort_gives_the_blocks_back() -> None:
    """A request the client gave up on leaves the batch and frees its blocks."""
    engine = SimEngine(TINY)
    a = engine.add(SimRequest(800, 100), 0.0)
    b = engine.add(SimRequest(800, 100), 0.0)
    for _ in range(3):
        engine.step()
    engine.abort(a)
    engine.abort(b)
    engine.check_invariants()
    assert engine.pool.used == 0 and not engine.has_work


def test_a_slower_engine_takes_longer_and_noise_is_seeded() -> None:
    """slowdown=2 doubles the simulated time of the same work; noise with one seed gives
    the same run twice, and another seed another run."""

    def finish(**kw: float) -> float:
        engine = SimEngine(TINY, **kw)
        for _ in range(4):
            engine.add(SimRequest(500, 200), 0.0)
        run_until_done(engine)
        return engine.now

    assert finish(slowdown=2.0) == pytest.approx(2 * finish())
    assert finish(noise=0.2, seed=1) == finish(noise=0.2, seed=1)
    assert finish(noise=0.2, seed=1) != finish(noise=0.2, seed=2)


def test_refuses_a_request_that_can_never_run() -> None:
    """A prompt over the model length or the whole KV cache is refused up front."""
    engine = SimEngine(TINY)
    with pytest.raises(ValueError, match="maximum context length"):
        engine.add(SimRequest(TINY.max_model_len, 10), 0.0)
    with pytest.raises(ValueError, match="cannot fit the KV cache"):
        engine.add(SimRequest(TINY.kv_tokens, 10), 0.0)
    with pytest.raises(ValueError, match="unknown simulator profile"):
        profile("a100-1t")


def test_a_grammar_compiles_before_its_request_runs_and_is_counted_deferred() -> None:
    """Two compile threads, 0.5 s each: of three requests with a grammar, two wait 0.5 s
    and the third 1 s before they may run; meanwhile /metrics counts them as waiting,
    and as deferred (vLLM's waiting_by_reason), none of them running."""
    engine = SimEngine(TINY, grammar_s=0.5, grammar_workers=2)
    reqs = [engine.add(SimRequest(100, 4, grammar=True), 0.0) for _ in range(3)]
    plain = engine.add(SimRequest(100, 4), 0.0)
    snap = parse_metrics(exposition(engine, "m"))
    assert (snap.waiting, snap.waiting_deferred) == (4, 3)
    run_until_done(engine)
    assert plain.first_token_at is not None and plain.first_token_at < 0.5
    firsts = sorted(r.first_token_at or 0.0 for r in reqs)
    assert 0.5 <= firsts[0] <= firsts[1] < 1.0 <= firsts[2]
    assert parse_metrics(exposition(engine, "m")).waiting_deferred == 0


def test_grammar_masks_lengthen_each_step_and_warm_up_delays_the_first() -> None:
    """mask_s per running request with a grammar is added to each step; warmup_s holds
    the first step back while requests queue with nothing running."""

    def finish(**options: float) -> float:
        engine = SimEngine(TINY, **options)
        reqs = [engine.add(SimRequest(100, 50, grammar=True), 0.0) for _ in range(4)]
        run_until_done(engine)
        return max(r.finished_at or 0.0 for r in reqs)

    plain, masked = finish(), finish(mask_s=0.001)
    assert masked - plain == pytest.approx(4 * 50 * 0.001, rel=0.1)  # 4 masks, ~50 steps
    warm = SimEngine(TINY, warmup_s=3.0)
    waiting = warm.add(SimRequest(100, 4), 0.0)
    assert warm.running == 0 and warm.num_waiting == 1
    run_until_done(warm)
    assert waiting.first_token_at is not None and waiting.first_token_at >= 3.0


def test_kv_levers_size_the_cache_as_vllm_would() -> None:
    """An fp8 KV cache holds each token in half the bytes (twice the tokens, half the
    bytes read per token of context); gpu_memory_utilization 0.95 gives the cache 5% more
    of the GPU's memory; the profile's other figures stay; bad levers are refused."""
    fp8 = with_kv_levers(H100, kv_cache_dtype="fp8")
    assert fp8.kv_tokens == 2 * H100.kv_tokens
    assert fp8.kv_bytes_per_token == H100.kv_bytes_per_token / 2
    assert step_time(fp8, 100, 400_000) < step_time(H100, 100, 400_000)
    more = with_kv_levers(H100, gpu_memory_utilization=0.95)
    extra = 0.05 * H100.gpu_memory_bytes / H100.kv_bytes_per_token
    assert more.kv_tokens == pytest.approx(H100.kv_tokens + extra, abs=H100.block_size)
    both = with_kv_levers(H100, kv_cache_dtype="fp8", gpu_memory_utilization=0.95)
    assert both.kv_tokens == pytest.approx(2 * more.kv_tokens, abs=2 * H100.block_size)
    assert (both.params, both.max_num_seqs, both.bandwidth) == (
        H100.params, H100.max_num_seqs, H100.bandwidth,
    )  # fmt: skip
    assert with_kv_levers(H100) == H100
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        with_kv_levers(H100, kv_cache_dtype="int3")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        with_kv_levers(H100, gpu_memory_utilization=1.2)
    with pytest.raises(ValueError, match="memory is not known"):
        with_kv_levers(TINY, kv_cache_dtype="fp8")
