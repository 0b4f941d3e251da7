"""The reference phase: vLLM's benchmark's arguments, its result's arithmetic, its loading."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from typing import Any

import pytest

from soc_async.bench import reference
from soc_async.bench.load import LoadShape
from soc_async.bench.metrics import CounterDelta
from soc_async.bench.reference import (
    ReferenceFailed,
    ReferencePlan,
    load_benchmark,
    plan_reference,
    reference_argv,
    reference_result,
    run_benchmark,
)

PLAN = ReferencePlan(
    requests=24, concurrency=8, prefix_tokens=1856, input_tokens=734, output_tokens=197, seed=77
)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_plan_takes_the_ceiling_shape() -> None:
    """Same request count, the ceiling's shared prefix as --random-prefix-len, the rest
    of the mean prompt as the input length, the output rounded as the ceiling's."""
    shape = LoadShape(requests=24, prompt_tokens=2590.4, output_tokens=197, shared_tokens=1856)
    assert plan_reference(shape, 8, seed=77) == PLAN
    unshared = plan_reference(LoadShape(requests=3, prompt_tokens=10, output_tokens=4), 8, 1)
    assert (unshared.prefix_tokens, unshared.input_tokens) == (0, 10)
    # A prefix as long as the prompt leaves one token of its own (vLLM needs one).
    full = plan_reference(LoadShape(requests=3, prompt_tokens=10, output_tokens=4,
                                    shared_tokens=10), 8, 1)  # fmt: skip
    assert (full.prefix_tokens, full.input_tokens) == (9, 1)


def test_argv_describes_the_same_load() -> None:
    """vLLM's random dataset with the plan's lengths and seed, no length spread, EOS
    ignored, all requests issued at once under the same concurrency, per-request detail
    kept for the steady window; the key goes in a header and is redacted for the record."""
    argv = reference_argv(PLAN, "http://127.0.0.1:8000/", api_key="sk-secret")
    assert option(argv, "--base-url") == "http://127.0.0.1:8000"
    assert option(argv, "--dataset-name") == "random"
    assert option(argv, "--num-prompts") == "24"
    assert option(argv, "--random-prefix-len") == "1856"
    assert option(argv, "--random-input-len") == "734"
    assert option(argv, "--random-output-len") == "197"
    assert option(argv, "--random-range-ratio") == "0"
    assert option(argv, "--max-concurrency") == "8"
    assert option(argv, "--request-rate") == "inf"
    assert option(argv, "--seed") == "77"
    assert option(argv, "--temperature") == "1.0"
    assert {"--ignore-eos", "--save-detailed", "--disable-tqdm"} <= set(argv)
    assert option(argv, "--header") == "Authorization=Bearer sk-secret"
    assert "sk-secret" not in " ".join(reference.redacted(argv))
    assert "--header" not in reference_argv(PLAN, "http://h:1")


def vllm_result(**changes: Any) -> dict[str, Any]:
    """A result dict as vLLM's main_async returns it with --save-detailed: four requests
    two at a time in 10 s waves, the fourth failed."""
    data: dict[str, Any] = {
        "duration": 20.0,
        "completed": 3,
        "failed": 1,
        "total_input_tokens": 3 * 2590,
        "total_output_tokens": 3 * 200,
        "output_throughput": 30.0,
        "start_times": [100.0, 100.0, 110.0, 110.0],
        "latencies": [10.0, 10.0, 10.0, 0.0],
        "output_lens": [200, 200, 200, 0],
        "errors": ["", "", "", "HTTP 500"],
        "queue_times": [0.0, 0.0, 10.0, 10.0],
    }
    data.update(changes)
    return data


def test_result_arithmetic() -> None:
    """Tokens/s is all output over vLLM's own duration; means are per completed request;
    latency from its per-request figures; the steady window from its start times; hit
    rate and preemptions from the server's counters; the seed and argv are kept."""
    server = CounterDelta(
        seconds=20.0, prefix_cache_hits=5376, prefix_cache_queries=7770, preemptions=0,
        generation_tokens=600, prompt_tokens=7770,
    )  # fmt: skip
    plan = ReferencePlan(
        requests=4, concurrency=2, prefix_tokens=1856, input_tokens=734, output_tokens=200, seed=3
    )
    argv = reference_argv(plan, "http://h:1", api_key="k")
    result = reference_result(vllm_result(), plan, server=server, ttft=None, argv=argv)
    assert result.phase == "reference" and result.concurrency == 2
    assert (result.requests, result.request_errors, result.output_tokens) == (3, 1, 600)
    assert result.tokens_per_s == pytest.approx(30.0)
    assert result.mean_prompt_tokens == pytest.approx(2590)
    assert result.mean_completion_tokens == pytest.approx(200)
    assert result.latency_s.p50 == pytest.approx(10.0)
    assert result.queue_s.p90 == pytest.approx(10.0)
    assert result.prefix_hit_rate == pytest.approx(5376 / 7770)
    assert result.ttft_s.p50 is None and result.cached_share is None
    # Two requests full from 100 s to 110 s, then the third alone: the window is the first.
    assert result.steady_s == pytest.approx(10.0)
    assert result.steady_tokens_per_s == pytest.approx(40.0)
    assert result.method["seed"] == 3 and "k" not in result.method["argv"]


def test_result_of_a_run_with_nothing_answered() -> None:
    """No completed request: rates are zero, means and windows unknown, nothing raises."""
    data = vllm_result(completed=0, failed=4, total_output_tokens=0, total_input_tokens=0,
                       errors=["x"] * 4)  # fmt: skip
    result = reference_result(data, PLAN, server=None, ttft=None)
    assert result.tokens_per_s == 0.0
    assert result.mean_prompt_tokens is None and result.steady_tokens_per_s is None
    assert result.prefix_hit_rate is None


def test_missing_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """With vLLM's benchmark not importable the loader returns one line that names it."""
    monkeypatch.setitem(sys.modules, reference.MODULE, None)
    line = load_benchmark()
    assert isinstance(line, str) and "\n" not in line
    assert line.startswith("no reference phase:") and reference.MODULE in line


class FakeBenchmark(types.ModuleType):
    """Stands for vllm.benchmarks.serve: its parser's few options and main_async."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__("fake_serve")
        self.fail = fail
        self.seen: argparse.Namespace | None = None

    def add_cli_args(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seed", type=int, required=True)
        parser.add_argument("--num-prompts", type=int)

    async def main_async(self, args: argparse.Namespace) -> dict[str, Any]:
        self.seen = args
        print("Starting main benchmark run...")
        if self.fail:
            print("Error 0: Connection refused")
            raise ValueError("Initial test run failed")
        return {"completed": args.num_prompts}


async def test_run_benchmark_parses_with_its_own_parser_and_quiets_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The argv goes through the module's own parser into main_async; what it prints is
    kept off the bench's output."""
    fake = FakeBenchmark()
    data = await run_benchmark(fake, ["--seed", "5", "--num-prompts", "3"])
    assert data == {"completed": 3}
    assert fake.seen is not None and fake.seen.seed == 5
    assert "Starting" not in capsys.readouterr().out


async def test_run_benchmark_failures_are_one_line() -> None:
    """A refused argument or a failed run is ReferenceFailed with what it printed last."""
    with pytest.raises(ReferenceFailed, match=r"refused its arguments.*--no-such-flag"):
        await run_benchmark(FakeBenchmark(), ["--seed", "1", "--no-such-flag"])
    with pytest.raises(ReferenceFailed, match=r"Initial test run failed.*Connection refused"):
        await run_benchmark(FakeBenchmark(fail=True), ["--seed", "1"])


@pytest.mark.slow
def test_argv_is_accepted_by_vllms_own_parser() -> None:
    """The installed vLLM's benchmark parser takes every argument the bench builds."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    module = load_benchmark()
    if isinstance(module, str):
        pytest.skip(module)
    parser = module.FlexibleArgumentParser()
    module.add_cli_args(parser)
    args = parser.parse_args(reference_argv(PLAN, "http://127.0.0.1:8000", api_key="k"))
    assert (args.random_prefix_len, args.random_input_len) == (1856, 734)
    assert (args.random_output_len, args.num_prompts, args.max_concurrency) == (197, 24, 8)
    assert args.ignore_eos and args.save_detailed and args.disable_tqdm
    assert args.dataset_name == "random" and args.backend == "openai"
    assert args.seed == 77 and args.temperature == 1.0
