"""``soc-async bench``: the chat stage's tokens/s against the server's own ceiling.

For each concurrency value the bench runs the chat stage alone (the *pipeline*), then a
synthetic load with the same prompt and output lengths (the *ceiling*, as vLLM's serving
benchmark measures a server), then the adaptive controller over the same range, and
reports the ratios, the prefix-cache hit rate, latency and queue percentiles, and the
smallest concurrency that gets within a few per cent of the best throughput.

Modules: :mod:`.metrics` (pure arithmetic), :mod:`.cast` (conversations from the seeds),
:mod:`.pipeline` and :mod:`.load` (the two kinds of phase), :mod:`.runner` (the sweep),
:mod:`.results`, :mod:`.report` (CSV, JSON, PNG, table), :mod:`.live`, :mod:`.session`
(arguments to files; the parser is in ``soc_async.commands.bench``).
"""

from typing import Any

from soc_async.bench.results import BenchResult, BenchSettings, PhaseResult, Summary

__all__ = [
    "BenchResult",
    "BenchSettings",
    "PhaseResult",
    "Summary",
    "run_bench",
]


def __getattr__(name: str) -> Any:
    # run_bench pulls in the client and the stages: only when asked for, so that the
    # CLI can register the subcommand without importing them.
    if name == "run_bench":
        from soc_async.bench.runner import run_bench

        return run_bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
