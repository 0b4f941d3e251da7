"""One run from start to finish: the run directory, the server, the event loop, the end.

The CLI hands over a validated config; this module prepares the run directory (so a bad
config never leaves files behind), starts the embedded vLLM server when no endpoint is
given, runs the pipeline on uvloop when it is installed, and turns a requested stop into
:class:`~soc_async.errors.Interrupted` once everything finished has been flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec

from soc_async import config as config_mod
from soc_async import logs
from soc_async.config import RunConfig
from soc_async.errors import ConfigError, Interrupted, ServerStartError, first_error
from soc_async.gateway import ModelGateway
from soc_async.llm.server import ManagedServer, spec_for
from soc_async.monitor.exporter import MetricsServer
from soc_async.pipeline import Pipeline
from soc_async.progress import LiveView, Reporter, RunCounters
from soc_async.records import id_index
from soc_async.scheduler.runner import StopSignal
from soc_async.store import RunDir, run_identity

log = logs.get("app")


def execute(
    config: RunConfig,
    *,
    imports: dict[str, Path] | None = None,
    resume: bool = False,
    chats_from_imports: bool = False,
    allow_torn: bool = False,
    metrics_at: tuple[str, int] | None = None,
) -> str:
    """Runs ``config`` to completion and returns a one-line summary of what was written.

    ``imports`` are input files already checked (store.check_stage_inputs); a torn last
    line in them is left out only with ``allow_torn``. ``metrics_at`` (host, port): serve
    the run's figures for Prometheus there.
    """
    with _terminate_as_interrupt(), _exporter(config, metrics_at) as exporter:
        return _execute(config, imports or {}, resume, chats_from_imports, allow_torn, exporter)


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
        _run(config, run_dir, counters, reporter, chats_from_imports)
        outcome = "done"
    except BaseException as exc:
        error = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(error, Interrupted | KeyboardInterrupt):
            outcome = "interrupted"
        raise
    finally:
        try:
            reporter.final(outcome)
        except OSError as exc:  # advisory figures must not hide how the run ended
            log.warning("cannot write the last metrics line", error=str(exc))
    return _summary(run_dir, counters)


def _run(
    config: RunConfig,
    run_dir: RunDir,
    counters: RunCounters,
    reporter: Reporter,
    chats_from_imports: bool,
) -> None:
    if chats_from_imports:
        config = config_mod.override(
            config, {"targets.chats": _chat_target(run_dir)}, "imported experiences"
        )
    with _server(config) as server:
        if server is not None:
            config = config_mod.override(
                config,
                {
                    "endpoints": [server.base_url],
                    "client.send_priority": server.priority_scheduling,
                },
                "managed server",
            )
        _run_loop(config, run_dir, counters, reporter, server)


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
def _server(config: RunConfig) -> Iterator[ManagedServer | None]:
    """The managed vLLM server of a run that names no endpoint; None when it names some."""
    if config.endpoints:
        yield None
        return
    spec = spec_for(config.server, api_key=config.api_key)
    log.info("starting vLLM", model=spec.model or "embedded SmolLM2-135M-Instruct")
    t0 = time.monotonic()
    with ManagedServer(spec) as server:
        log.info("vLLM ready", url=server.base_url, seconds=round(time.monotonic() - t0, 1))
        yield server


def _run_loop(
    config: RunConfig,
    run_dir: RunDir,
    counters: RunCounters,
    reporter: Reporter,
    server: ManagedServer | None,
) -> None:
    async def main() -> None:
        stop = StopSignal(grace_s=config.client.shutdown_grace_s)
        with stop.installed(), LiveView(counters, title=str(run_dir.path)) as view:
            async with ModelGateway(config, counters) as gateway, anyio.create_task_group() as tg:
                pipeline = Pipeline(
                    config,
                    run_dir,
                    gateway,
                    model_name=gateway.model,
                    stop=stop,
                    counters=counters,
                    send_priority=config.client.send_priority,
                )
                if server is not None:
                    tg.start_soon(_watch, server)
                tg.start_soon(view.run)
                tg.start_soon(reporter.run)
                async with stop.guard():
                    await pipeline.run()
                tg.cancel_scope.cancel()
        if stop.requested:
            raise Interrupted(
                f"stopped by {stop.signal_name}; everything finished is in {run_dir.path}"
            )

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main())
    else:
        uvloop.run(main())


async def _watch(server: ManagedServer) -> None:
    """Fails the run at once when the managed server dies, rather than waiting out the
    client's down_timeout_s against a server that will never come back."""
    while server.alive():  # noqa: ASYNC110 - a child process has no event to wait on
        await anyio.sleep(1.0)
    raise ServerStartError(
        f"the managed vLLM server exited during the run (log: {server.log_path})",
        server.log_tail(),
    )


def _summary(run_dir: RunDir, counters: RunCounters) -> str:
    # Headers only: a run of 100,000 conversations is counted, not loaded.
    counts = {
        name: sum(1 for header in run_dir.scan(name) if header.kind)
        for name in ("personas", "experiences", "conversations", "failures")
    }
    snap = counters.snapshot()
    faults = ", ".join(f"{k} {v}" for k, v in snap.faults.items()) or "none"
    rejected = ", ".join(f"{k} {v}" for k, v in list(snap.rejections.items())[:5]) or "none"
    if len(snap.rejections) > 5:
        rejected += f", ... ({sum(snap.rejections.values())} in all)"
    return (
        f"{run_dir.path}: {counts['personas']} personas, {counts['experiences']} experiences, "
        f"{counts['conversations']} conversations, {counts['failures']} failures; "
        f"{snap.completion_tokens} tokens generated in {snap.elapsed_s:.0f}s; "
        f"transport faults: {faults} ({snap.request_errors} requests failed for good); "
        f"rejected: {rejected}"
    )


def serve(*, model: str, host: str, port: int, extra: list[str], api_key: str | None) -> int:
    """``soc-async serve``: a managed vLLM server in the foreground until SIGINT/SIGTERM.

    Runs until the server dies (an error, exit 1) or a signal stops it (exit 0): the
    server is always stopped on the way out, so no orphan holds the port.
    """
    from soc_async.config import ServerConfig
    from soc_async.errors import ServerStartError
    from soc_async.llm.server import ManagedServer, spec_for

    spec = spec_for(
        ServerConfig(model=model, port=port, extra_args=extra), host=host, api_key=api_key
    )
    try:
        with _terminate_as_interrupt(), ManagedServer(spec) as server:
            print(f"vLLM serving {spec.model} at {server.base_url} (Ctrl-C stops it)", flush=True)
            log.info("server log", path=str(server.log_path))
            while server.alive():
                time.sleep(1.0)
            raise ServerStartError(
                f"the vLLM server at {server.base_url} exited (log: {server.log_path})",
                server.log_tail(),
            )
    except KeyboardInterrupt:
        print("soc-async: server stopped", flush=True)
        return 0
