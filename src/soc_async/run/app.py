"""One run from start to finish: the run directory, the server, the event loop, the end.

The CLI hands over a validated config; this module prepares the run directory (so a bad
config never leaves files behind), takes the endpoints from an endpoints file of
``soc-async serve`` or starts managed vLLM engines when no endpoint is given, runs the
pipeline on uvloop when it is installed, and turns a requested stop into
:class:`~soc_async.errors.Interrupted` once everything finished has been flushed.

``serve`` is ``soc-async serve``: the engines of a layout in the foreground, restarted
when one dies, until a signal.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
import msgspec

from soc_async import config as config_mod
from soc_async import logs, loop
from soc_async.config import RunConfig, RunFacts, ServerConfig
from soc_async.errors import (
    ConfigError,
    Interrupted,
    RunDirError,
    ServerStartError,
    first_error,
)
from soc_async.llm.engines import EngineGroup
from soc_async.llm.plan import plan_engines
from soc_async.monitor.exporter import MetricsServer
from soc_async.records import id_index
from soc_async.run.gateway import ModelGateway, served_engines
from soc_async.run.pipeline import Pipeline
from soc_async.run.progress import LiveView, Reporter, RunCounters
from soc_async.scheduler.runner import StopSignal
from soc_async.store import RunDir, run_identity

log = logs.get("app")
T = TypeVar("T")

if TYPE_CHECKING:
    from soc_async.llm.server import ServerSpec


def execute(
    config: RunConfig,
    *,
    imports: dict[str, Path] | None = None,
    resume: bool = False,
    chats_from_imports: bool = False,
    allow_torn: bool = False,
    metrics_at: tuple[str, int] | None = None,
    found: RunFacts | None = None,
) -> str:
    """Runs ``config`` to completion and returns a one-line summary of what was written.

    ``imports`` are input files already checked (store.check_stage_inputs); a torn last
    line in them is left out only with ``allow_torn``. ``metrics_at`` (host, port): serve
    the run's figures for Prometheus there. ``found``: servers the caller started and
    knows (the smoke's engine); else the config's endpoints file, or managed engines.
    """
    from soc_async.llm.preflight import raise_open_files

    raise_open_files()  # SLURM passes the login shell's soft limit, often 1,024
    with _terminate_as_interrupt(), _exporter(config, metrics_at) as exporter:
        return _execute(
            config, imports or {}, resume, chats_from_imports, allow_torn, exporter, found
        )


@contextlib.contextmanager
def _exporter(
    config: RunConfig, metrics_at: tuple[str, int] | None
) -> Iterator[MetricsServer | None]:
    """The Prometheus endpoint, opened before anything is written (a busy port is an
    input error that must leave no run directory behind)."""
    if metrics_at is None:
        yield None
        return
    host, port = metrics_at
    info = {"path": str(Path(config.out)), "seed": str(config.seed), "shard": config.shard}
    with MetricsServer(host, port, info) as server:
        log.info("prometheus metrics", url=server.url)
        yield server


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM outside the event loop (while a managed server starts, say) unwinds like
    Ctrl-C, so every ``with`` block runs its exit and no server is left behind; inside
    the loop the pipeline's StopSignal takes over with its graceful stop."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(
    config: RunConfig,
    imports: dict[str, Path],
    resume: bool,
    chats_from_imports: bool,
    allow_torn: bool,
    exporter: MetricsServer | None,
    found: RunFacts | None,
) -> str:
    run_dir = _prepare(config, imports, resume, chats_from_imports, allow_torn)
    counters = RunCounters()
    counters.capacity = config.concurrency.fixed or config.concurrency.initial
    reporter = Reporter(
        counters,
        lambda snap: run_dir.append_metrics(msgspec.to_builtins(snap)),
        interval_s=config.monitor.interval_s,
        publish=exporter.publish if exporter is not None else None,
    )
    # A line at once: a watcher of a resumed directory must not take the previous
    # process's finished line for this one's end while a managed server starts.
    reporter.report()
    outcome = "failed"
    try:
        _run(config, found, run_dir, counters, reporter, chats_from_imports)
        outcome = "done"
    except BaseException as exc:
        error = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(error, Interrupted | KeyboardInterrupt):
            outcome = "interrupted"
        raise
    finally:
        try:
            reporter.final(outcome)
        except (OSError, RunDirError) as exc:  # advisory figures must not hide how it ended
            log.warning("cannot write the last metrics line", error=str(exc))
    return _summary(run_dir, counters)


def _run(
    config: RunConfig,
    found: RunFacts | None,
    run_dir: RunDir,
    counters: RunCounters,
    reporter: Reporter,
    chats_from_imports: bool,
) -> None:
    chats = _chat_target(run_dir) if chats_from_imports else None
    found = found if found is not None else served_engines(config)
    with managed_engines(config, found) as (facts, group):
        facts = msgspec.structs.replace(facts, chats=chats)
        _run_loop(config, facts, run_dir, counters, reporter, group)


def _prepare(
    config: RunConfig,
    imports: dict[str, Path],
    resume: bool,
    chats_from_imports: bool,
    allow_torn: bool,
) -> RunDir:
    chats_follow_experiences = not (chats_from_imports or resume or imports.get("experiences"))
    if chats_follow_experiences and config.targets.chats > config.targets.experiences:
        raise ConfigError(
            f"targets.chats: chat j is rolled out from experience j, so it must be <= "
            f"targets.experiences ({config.targets.experiences}), got {config.targets.chats}"
        )
    text = config_mod.dump(config)
    identity = run_identity(config)
    path = Path(config.out)
    if resume:
        run_dir = RunDir.open(path, config_text=text)
        run_dir.check()  # a hand-edited line is named before any server starts
    else:
        run_dir = RunDir.create(path, text, identity)
    for stage, source in imports.items():
        run_dir.import_records(stage, source, allow_torn=allow_torn)
    return run_dir


def _chat_target(run_dir: RunDir) -> int:
    indices = [id_index(h.item_id) for h in run_dir.scan("experiences") if h.kind == "experience"]
    return max(indices) + 1 if indices else 0


@contextlib.contextmanager
def managed_engines(
    config: RunConfig, facts: RunFacts
) -> Iterator[tuple[RunFacts, EngineGroup | None]]:
    """The managed vLLM engines of a config that names no endpoint (and no endpoints
    file gave any), started and ready, and the facts of them (their URLs, batch size and
    scheduling policy); ``facts`` as they are, and None, when there are endpoints."""
    if facts.endpoints:
        yield facts, None
        return
    plan = plan_engines(config.server, api_key=config.api_key)
    log.info("starting vLLM", layout=plan.describe())
    t0 = time.monotonic()
    with EngineGroup(plan, max_restarts=config.server.max_restarts) as group:
        log.info("vLLM ready", urls=group.ready_urls(), seconds=round(time.monotonic() - t0, 1))
        yield (
            msgspec.structs.replace(
                facts,
                endpoints=list(group.urls),
                per_engine=group.max_num_seqs,
                priority_scheduling=group.priority_scheduling,
            ),
            group,
        )


def _run_loop(
    config: RunConfig,
    facts: RunFacts,
    run_dir: RunDir,
    counters: RunCounters,
    reporter: Reporter,
    group: EngineGroup | None,
) -> None:
    from soc_async.llm.preflight import require_open_files

    async def main() -> None:
        stop = StopSignal(grace_s=config.client.shutdown_grace_s)
        with stop.installed(), LiveView(counters, title=str(run_dir.path)) as view:
            gateway = ModelGateway(config, counters, facts)
            async with gateway, anyio.create_task_group() as tg:
                bounds = config.concurrency
                require_open_files(bounds.fixed or gateway.facts.max_in_flight)
                log.info(
                    "requests in flight",
                    per_engine=gateway.limits,
                    total=gateway.facts.max_in_flight,
                    fixed=config.concurrency.fixed,
                )
                pipeline = Pipeline(
                    config,
                    run_dir,
                    gateway,
                    facts=gateway.facts,  # with the served model and the sized bound
                    stop=stop,
                    counters=counters,
                )
                if group is not None:
                    tg.start_soon(_watch, group)
                tg.start_soon(view.run)
                tg.start_soon(reporter.run)
                async with stop.guard():
                    await pipeline.run()
                tg.cancel_scope.cancel()
        if stop.requested:
            raise Interrupted(
                f"stopped by {stop.signal_name}; everything finished is in {run_dir.path}"
            )

    loop.run(main())


async def _watch(group: EngineGroup) -> None:
    """Keeps the managed engines going (an engine that dies is restarted, a bounded
    number of times) and fails the run once none is left, rather than waiting out the
    client's down_timeout_s against servers that will never come back."""
    while await anyio.to_thread.run_sync(group.poll):  # noqa: ASYNC110 - no event to wait on
        await anyio.sleep(1.0)
    raise ServerStartError(
        "every managed vLLM engine has exited more often than server.max_restarts allows",
        group.log_tail(),
    )


def _summary(run_dir: RunDir, counters: RunCounters) -> str:
    """One line: records per file, tokens, faults, rejections and, when more than one
    model wrote the records, how many each wrote."""
    # Headers only: a run of 100,000 conversations is counted, not loaded.
    counts = dict.fromkeys(("personas", "experiences", "conversations", "failures"), 0)
    by_model: dict[str, dict[str, int]] = {}
    for name in counts:
        for header in run_dir.scan(name):
            if not header.kind:
                continue
            counts[name] += 1
            if header.model_name:
                per = by_model.setdefault(header.model_name, {})
                per[name] = per.get(name, 0) + 1
    snap = counters.snapshot()
    faults = ", ".join(f"{k} {v}" for k, v in snap.faults.items()) or "none"
    rejected = ", ".join(f"{k} {v}" for k, v in list(snap.rejections.items())[:5]) or "none"
    thinking = (
        f"; {snap.thinking_stripped} <think> parts stripped from replies"
        if snap.thinking_stripped
        else ""
    )
    if len(snap.rejections) > 5:
        rejected += f", ... ({sum(snap.rejections.values())} in all)"
    line = (
        f"{run_dir.path}: {counts['personas']} personas, {counts['experiences']} experiences, "
        f"{counts['conversations']} conversations, {counts['failures']} failures; "
        f"{snap.completion_tokens} tokens generated in {snap.elapsed_s:.0f}s; "
        f"transport faults: {faults} ({snap.request_errors} requests failed for good); "
        f"rejected: {rejected}{thinking}"
    )
    if len(by_model) > 1:
        parts = [
            f"{model} " + ", ".join(f"{n} {name}" for name, n in per.items())
            for model, per in sorted(by_model.items())
        ]
        line += "; by model: " + "; ".join(parts)
    return line


def with_gateway(config: RunConfig, work: Callable[[ModelGateway], Awaitable[T]]) -> T:
    """Runs ``work`` with a :class:`ModelGateway` on the config's servers, as a run would:
    the embedded server is started (and stopped) when the config names no endpoint.
    For commands other than ``run`` that ask the served model, e.g. the report's judge."""
    with _terminate_as_interrupt(), managed_engines(config, served_engines(config)) as (facts, _):

        async def main() -> T:
            async with ModelGateway(config, RunCounters(), facts) as gateway:
                return await work(gateway)

        return loop.run(main())


def serve(
    server: ServerConfig,
    *,
    host: str,
    api_key: str | None,
    dp_mode: Literal["engines", "vllm"] = "engines",
    device: Literal["auto", "cpu"] = "auto",
    gpus: str | None = None,
    gpu_memory_gib: float | None = None,
    endpoints_file: str | None = None,
    log_dir: str | None = None,
    stagger_s: float = 15.0,
    restart_delay_s: float = 10.0,
    dry_run: bool = False,
) -> int:
    """``soc-async serve``: the engines of a layout in the foreground until SIGINT/SIGTERM.

    The layout is checked before anything starts (InputError, exit 2). An engine that
    dies is restarted up to ``server.max_restarts`` times while the others serve on;
    when none is left it is an error (exit 1). A signal stops them all (exit 0). The
    endpoints file, when asked for, is written before the first engine starts and
    removed at the end.
    """
    from soc_async.llm import preflight
    from soc_async.llm.layout import GpuSet
    from soc_async.llm.node import visible_gpus
    from soc_async.llm.server import has_gpu

    on_cpu = device == "cpu" or not server.model
    facts = preflight.gather(command=server.command, cpu=on_cpu)
    if on_cpu:
        facts.gpu = False  # the driver and torch's CUDA do not matter to vLLM's CPU build
    preflight.enforce(
        preflight.run_checks(facts, model=server.model, in_flight=None, host=host), "serve"
    )
    chosen = None
    if device == "cpu":
        chosen = GpuSet(ids=())
    elif server.model and (gpus is not None or has_gpu()):
        chosen = visible_gpus(gpus, memory_gib=gpu_memory_gib)
    plan = plan_engines(
        server, host=host, api_key=api_key, gpus=chosen, dp_mode=dp_mode, log_dir=log_dir
    )
    print(f"layout: {plan.describe()}", flush=True)
    if dry_run:
        for engine in plan.engines:
            print(_shown(engine.spec), flush=True)
        return 0
    group = EngineGroup(
        plan,
        max_restarts=server.max_restarts,
        stagger_s=stagger_s,
        restart_delay_s=restart_delay_s,
    )
    written = None
    announced: set[str] = set()
    try:
        with _terminate_as_interrupt():
            if endpoints_file:
                written = group.write_endpoints_file(endpoints_file)
            group.start()
            while True:
                live = group.poll()
                for url in group.ready_urls():
                    if url not in announced:
                        announced.add(url)
                        print(f"engine ready: {url}", flush=True)
                if live == 0:
                    raise ServerStartError(
                        "every vLLM engine has exited more often than --max-restarts allows",
                        group.log_tail(),
                    )
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("soc-async: engines stopped", flush=True)
        return 0
    finally:
        group.stop()
        if written is not None:
            with contextlib.suppress(OSError):
                written.unlink()


def _shown(spec: ServerSpec) -> str:
    """One engine's environment and command line, for a dry run."""
    from soc_async.errors import InputError
    from soc_async.llm.server import ManagedServer

    try:
        command = ManagedServer(spec).printable_command()
    except InputError:  # no vLLM here (a login node): show what would run on the node
        launcher = spec.launcher or ["vllm", "serve"]
        shown = msgspec.structs.replace(spec, launcher=launcher)
        command = ManagedServer(shown).printable_command()
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env.items())
    return f"{env} {command}" if env else command
