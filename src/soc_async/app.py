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

from soc_async import config as config_mod
from soc_async import logs
from soc_async.config import RunConfig
from soc_async.errors import ConfigError, Interrupted, ServerStartError
from soc_async.gateway import ModelGateway
from soc_async.llm.server import ManagedServer, spec_for
from soc_async.pipeline import Pipeline
from soc_async.progress import LiveView, RunCounters
from soc_async.records import Experience, id_index
from soc_async.scheduler.runner import StopSignal
from soc_async.store import RunDir, run_identity

log = logs.get("app")


def execute(
    config: RunConfig,
    *,
    imports: dict[str, Path] | None = None,
    resume: bool = False,
    chats_from_imports: bool = False,
) -> str:
    """Runs ``config`` to completion and returns a one-line summary of what was written."""
    with _terminate_as_interrupt():
        return _execute(config, imports or {}, resume, chats_from_imports)


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
    config: RunConfig, imports: dict[str, Path], resume: bool, chats_from_imports: bool
) -> str:
    run_dir = _prepare(config, imports, resume, chats_from_imports)
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
        counters = RunCounters()
        _run_loop(config, run_dir, counters, server)
    return _summary(run_dir, counters)


def _prepare(
    config: RunConfig, imports: dict[str, Path], resume: bool, chats_from_imports: bool
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
    run_dir = RunDir.open(path, config_text=text) if resume else RunDir.create(path, text, identity)
    for stage, source in imports.items():
        run_dir.import_records(stage, source)
    return run_dir


def _chat_target(run_dir: RunDir) -> int:
    indices = [id_index(r.id) for r in run_dir.load("experiences") if isinstance(r, Experience)]
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
    config: RunConfig, run_dir: RunDir, counters: RunCounters, server: ManagedServer | None
) -> None:
    async def main() -> None:
        stop = StopSignal(grace_s=config.client.shutdown_grace_s)
        with stop.installed(), LiveView(counters) as view:
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
                async with stop.guard():
                    await pipeline.run_with_view(view)
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
    """One line: records per file, tokens, and (with several models) records by model."""
    counts = {s: 0 for s in ("personas", "experiences", "conversations", "failures")}
    by_model: dict[str, dict[str, int]] = {}
    for name in counts:
        for header in run_dir.scan(name):
            counts[name] += 1
            if header.model_name:
                per = by_model.setdefault(header.model_name, {})
                per[name] = per.get(name, 0) + 1
    rate = counters.snapshot()
    line = (
        f"{run_dir.path}: {counts['personas']} personas, {counts['experiences']} experiences, "
        f"{counts['conversations']} conversations, {counts['failures']} failures; "
        f"{rate['completion_tokens']} tokens generated in {rate['elapsed_s']:.0f}s"
    )
    if len(by_model) > 1:
        parts = [
            f"{model} " + ", ".join(f"{n} {name}" for name, n in per.items())
            for model, per in sorted(by_model.items())
        ]
        line += "; by model: " + "; ".join(parts)
    return line


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
