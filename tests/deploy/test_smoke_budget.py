"""`soc-async smoke` sized from the engine and kept to its budget, on a 1-GPU fake node
(the fake `vllm` serves the fake model with a KV cache of the size it is given): the
sweep lies around the requests the KV cache holds, smoke.json is rewritten after every
phase, and a budget too short stops the generation and leaves sweep points out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeNode

from soc_async.bench import runner
from soc_async.errors import ServerError
from soc_async.run import smoke
from soc_async.run.smoke import default_sweep, sweep_around

MODEL = "Qwen/Qwen3-8B"


def test_the_sweep_lies_around_the_kv_caches_capacity_in_requests() -> None:
    """An 8B model on an H100: ~262k tokens of KV cache, prompts of ~2,600 tokens: about
    100 requests fit, so 25..202, not the batch size of 1,024 the smoke used to reach."""
    points, why = sweep_around(262144, 2600.0, 1024)
    assert points == [25, 50, 101, 202]
    assert "101 requests" in why and "262,144 tokens" in why
    assert sweep_around(262144, 2600.0, 64)[0] == [25, 50, 64]
    assert sweep_around(None, 2600.0, 1024)[0] == default_sweep(1024) == [16, 64, 256, 1024]
    assert sweep_around(4096, None, 256)[0] == default_sweep(256)


@pytest.fixture
def one_gpu(fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch) -> FakeNode:
    fake_node.model(MODEL)
    fake_node.env.update(FAKE_GPUS="1", FAKE_VLLM_ARGS="--kv-capacity-tokens 6000")
    return fake_node.apply(monkeypatch)


@pytest.mark.slow
def test_smoke_sizes_its_sweep_from_the_engine_and_writes_after_each_phase(
    one_gpu: FakeNode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "smoke"
    seen: list[list[str]] = []
    real = runner.run_bench

    async def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(json.loads((out / "smoke.json").read_text())["phases"])
        return await real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_bench", watched)
    report = smoke.run_smoke(
        MODEL, out, conversations=3, max_turns=4, bench_conversations=2, bench_turns=2,
        budget_s=3600,
    )  # fmt: skip
    assert report.kv_cache_tokens == 6000
    assert report.mean_prompt_tokens and report.mean_prompt_tokens > 0
    expected, why = sweep_around(6000, report.mean_prompt_tokens, report.batch_size)
    assert report.sweep == expected and report.sweep_source == why
    assert max(report.sweep) <= 2 * 6000 / report.mean_prompt_tokens + 1
    # Before each sweep point, smoke.json already held every phase done so far.
    assert seen[0] == ["engine", "generation"]
    assert seen[1:] == [
        ["engine", "generation", *[f"sweep C={c}" for c in expected[:k]]]
        for k in range(1, len(expected))
    ]
    written = json.loads((out / "smoke.json").read_text())
    assert written["complete"] and written["recommended_concurrency"] in expected
    assert json.loads((out / "bench" / "bench.json").read_text())["settings"]["concurrency"] == (
        expected
    )


@pytest.mark.slow
def test_a_short_budget_stops_the_generation_and_leaves_the_sweep_out(
    one_gpu: FakeNode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A slow engine and a budget of 1 s: the generation is stopped at its minimum share
    (as Ctrl-C stops a run), every sweep point is left out and said so, smoke.json is
    whole and complete; with no conversation finished the smoke is an error."""
    one_gpu.env["FAKE_VLLM_ARGS"] += " --ttft-s 2"
    one_gpu.apply(monkeypatch)
    monkeypatch.setattr(smoke, "MIN_GENERATION_S", 4.0)
    out = tmp_path / "smoke"
    with pytest.raises(ServerError, match="finished no conversation: stopped at its share"):
        smoke.run_smoke(MODEL, out, conversations=20, max_turns=4, budget_s=1.0)
    written = json.loads((out / "smoke.json").read_text())
    assert written["complete"] and written["generation_stopped"]
    assert written["phases"] == ["engine", "generation"]
    assert written["sweep"] == [] and written["skipped"]
    assert "OVER the 1 s budget" in smoke.render(smoke.SmokeReport(**written))
