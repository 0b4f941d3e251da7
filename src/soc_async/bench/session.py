"""One bench session: from the parsed arguments to files and a table.

``soc_async.commands.bench`` defines the arguments and calls :func:`run`; errors are
raised as :class:`~soc_async.errors.SocError` for the CLI to turn into exit codes. The
heavy modules (the client, the stages, rich, matplotlib) are imported by :func:`run`, so
building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soc_async import config as config_mod
from soc_async import logs, loop
from soc_async.bench import sizing
from soc_async.bench.results import BenchResult, BenchSettings
from soc_async.config import RunConfig, RunFacts
from soc_async.errors import EXIT_FAILED, EXIT_OK, InputError, first_error

__all__ = [
    "DEFAULT_CONVERSATIONS",
    "DEFAULT_TURNS",
    "embedded_cpu",
    "parse_concurrency",
    "run",
    "settings_from",
]

if TYPE_CHECKING:
    from soc_async.bench.live import BenchView

DEFAULT_TURNS = 6  # turns per conversation when neither --max-turns nor the plan says
DEFAULT_CONVERSATIONS = 8
log = logs.get("bench")


def parse_concurrency(text: str) -> list[int]:
    """``"1,4,16"`` as ascending distinct positive integers; InputError otherwise."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise InputError(
            f"--concurrency: expected comma-separated integers like 1,4,16, got {text!r}"
        ) from exc
    if not values or values[0] < 1:
        raise InputError(f"--concurrency: expected positive integers like 1,4,16, got {text!r}")
    return values


def embedded_cpu(config: RunConfig) -> bool:
    """True when the bench will start the embedded CPU server itself (no endpoint, no
    model of the user's): its sweep must stay small."""
    return config.uses_embedded_server()


def _config(args: argparse.Namespace) -> RunConfig:
    """The bench's config (:func:`soc_async.config.resolve`, profile included): the
    file, the server flags, --seed, --no-grammar and the turn count (--max-turns, else
    the CPU plan's when the bench starts the embedded server, else
    :data:`DEFAULT_TURNS`)."""
    server = config_mod.server_changes(
        args.endpoint, args.endpoints_file, args.ready_timeout, args.model
    )

    def changes(base: RunConfig) -> dict[str, Any]:
        out: dict[str, Any] = {**server, "seed": args.seed}
        if args.no_grammar:
            for kind in config_mod.CALL_KINDS:
                out[f"calls.{kind}.grammar"] = False
        turns = args.max_turns
        if turns is None:
            named = args.endpoint or args.endpoints_file
            embedded = not named and embedded_cpu(base)
            turns = sizing.CPU_TURNS if embedded else DEFAULT_TURNS
        out["chat.max_turns"] = turns
        return out

    return config_mod.resolve(args.config, changes)


def settings_from(args: argparse.Namespace, config: RunConfig) -> BenchSettings:
    """The bench's own settings from its arguments; InputError on a bad value.

    Without --concurrency the sweep is the CPU plan when the bench starts the embedded
    server, else empty: :func:`~soc_async.bench.runner.run_bench` sizes it from the
    server (:mod:`soc_async.bench.sizing`).
    """
    conversations = args.conversations
    if conversations is not None and conversations < 1:
        raise InputError(f"--conversations: expected a positive integer, got {conversations}")
    if args.concurrency is not None:
        concurrency, source = parse_concurrency(args.concurrency), "--concurrency"
    elif embedded_cpu(config):
        plan = sizing.plan_sweep(None, embedded_cpu=True)
        concurrency, source = plan.concurrency, plan.source
        conversations = conversations or plan.conversations
    else:
        concurrency, source = [], ""
    return BenchSettings(
        concurrency=concurrency,
        conversations=conversations or DEFAULT_CONVERSATIONS,
        max_turns=config.chat.max_turns,
        grammar=config.call("turn").grammar,
        adaptive=args.adaptive,
        shared_prefix=args.shared_prefix,
        sweep_source=source,
        reference=args.reference,
        breakdown=args.breakdown,
    )


@contextlib.contextmanager
def _server(config: RunConfig) -> Iterator[RunFacts]:
    """The facts of the config's servers (an endpoints file's too), or of managed vLLM
    engines started for the bench (the embedded CPU one when no model is named)."""
    from soc_async.run.app import managed_engines
    from soc_async.run.gateway import served_engines

    with managed_engines(config, served_engines(config)) as (found, _group):
        yield found


def _loop(
    config: RunConfig, found: RunFacts, settings: BenchSettings, view: BenchView
) -> BenchResult:
    from soc_async.bench.runner import run_bench

    try:
        return loop.run(run_bench(config, settings, view, found))
    except BaseExceptionGroup as group:
        error = first_error(group)
        if error is group:
            raise
        raise error from group


def run(args: argparse.Namespace, *, live: bool | None = None) -> int:
    """Runs the bench the arguments describe; 0 when the pipeline produced tokens.

    ``live`` None shows the progress display only on a terminal.
    """
    from rich.console import Console

    from soc_async.bench.live import BenchView
    from soc_async.bench.report import (
        recommendation_text,
        render_breakdown,
        render_table,
        write_reports,
    )

    config = _config(args)
    settings = settings_from(args, config)
    out = Path(args.out)
    with _server(config) as found, BenchView(enabled=live) as view:
        result = _loop(config, found, settings, view)
    written = write_reports(result, out)
    # A pipe gets the table at a width it fits in rather than the 80 columns rich assumes.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(render_table(result))
    if result.breakdown:
        console.print(render_breakdown(result))
    console.print(recommendation_text(result), highlight=False)
    missing = (
        ""
        if any(p.name == "bench.png" for p in written)
        else (" (no bench.png: matplotlib is missing; pip install 'soc-async[bench]')")
    )
    console.print(f"wrote {', '.join(str(p) for p in written)}{missing}", highlight=False)
    produced = any(pt.pipeline_tokens_per_s > 0 for pt in result.summary.points)
    return EXIT_OK if produced else EXIT_FAILED
