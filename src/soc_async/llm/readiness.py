"""Waiting for servers that are still starting: the endpoints file, /health, the model list.

A GPU job starts vLLM and soc-async side by side; a model takes minutes to load, so the
first request must wait until the server can answer it. An endpoint is ready when
``GET /health`` answers 200 and ``GET /v1/models`` lists a model (vLLM answers /health
once its engine runs; the model list is what ``run`` asks first). While waiting, a line
every ``report_s`` says which endpoints are still awaited and why.

When the time is up and some endpoints answer, the run starts with those and the others
are handed back as not ready (the client takes them out of service and probes them, so
they join when they come up); when none answers, it is a :class:`ServerError`.

:func:`read_endpoints_file` reads what ``soc-async serve --endpoints-file`` writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
import anyio
import msgspec

from soc_async import logs
from soc_async.errors import InputError, ServerError

__all__ = [
    "EndpointsFile",
    "ServedEngine",
    "probe_ready",
    "read_endpoints_file",
    "wait_for_endpoints_file",
    "wait_until_ready",
]

log = logs.get("readiness")


class ServedEngine(msgspec.Struct, kw_only=True):
    """One engine of an endpoints file."""

    url: str  # base URL, no /v1
    gpus: str = ""  # CUDA_VISIBLE_DEVICES of the engine ("" on CPU)
    max_num_seqs: int | None = None  # the batch size it was started with
    priority: bool = False  # started with --scheduling-policy priority


class EndpointsFile(msgspec.Struct, kw_only=True):
    """What ``soc-async serve --endpoints-file`` writes before its engines start."""

    model: str
    engines: list[ServedEngine]
    pid: int = 0  # the serve process: a file whose writer is gone is stale

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.engines]


_decode_file = msgspec.json.Decoder(EndpointsFile).decode


def read_endpoints_file(path: str | os.PathLike[str]) -> EndpointsFile | None:
    """The file's content; None while it is absent or its writer no longer runs.

    Raises InputError naming the file when it exists but is not an endpoints file.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{p}: cannot read the endpoints file ({exc.strerror})") from exc
    try:
        data = _decode_file(raw)
    except msgspec.DecodeError as exc:
        raise InputError(
            f"{p}: not an endpoints file of `soc-async serve --endpoints-file` ({exc})"
        ) from exc
    if not data.engines:
        raise InputError(f"{p}: the endpoints file lists no engine")
    if data.pid and not _running(data.pid):
        return None
    return data


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


async def wait_for_endpoints_file(
    path: str | os.PathLike[str], timeout_s: float, *, poll_s: float = 0.5, report_s: float = 10.0
) -> EndpointsFile:
    """The endpoints file once its serve process has written it; ServerError after the
    timeout (0: look once)."""
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic()
    while True:
        found = read_endpoints_file(path)
        if found is not None:
            return found
        now = time.monotonic()
        if now >= deadline:
            raise ServerError(
                f"{path}: no endpoints file from a running `soc-async serve` after "
                f"{timeout_s:g} s (start it with --endpoints-file {path}; client.ready_timeout_s)"
            )
        if now >= next_report:
            log.info("waiting for the endpoints file of soc-async serve", path=str(path))
            next_report = now + report_s
        await anyio.sleep(min(poll_s, max(0.0, deadline - now)))


async def probe_ready(session: aiohttp.ClientSession, url: str, *, timeout_s: float = 5.0) -> str:
    """ "" when ``url`` answers /health and lists a model, else why not, in a few words."""
    base = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.get(base + "/health", timeout=timeout) as resp:
            await resp.read()
            if resp.status != 200:
                return f"/health: HTTP {resp.status}"
        async with session.get(base + "/v1/models", timeout=timeout) as resp:
            payload = await resp.read()
            if resp.status != 200:
                return f"/v1/models: HTTP {resp.status}"
    except TimeoutError:
        return "no answer yet (loading?)"
    except aiohttp.ClientConnectorError as exc:
        return f"not listening ({exc.os_error.strerror or exc.__class__.__name__})"
    except aiohttp.ClientError as exc:
        return f"{exc.__class__.__name__}"
    try:
        models = msgspec.json.decode(payload)
        listed = bool(models.get("data")) if isinstance(models, dict) else False
    except msgspec.DecodeError:
        listed = False
    return "" if listed else "/v1/models: no model listed yet"


async def wait_until_ready(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    timeout_s: float,
    *,
    poll_s: float = 1.0,
    report_s: float = 10.0,
    on_wait: Callable[[dict[str, str], float], None] | None = None,
) -> list[str]:
    """Waits until every URL is ready, or ``timeout_s`` passes; returns the URLs that are
    not ready ([] when all are). Raises ServerError when none is.

    ``on_wait(waiting, elapsed)`` is called every ``report_s`` with each awaited URL and
    why it is not ready (by default, a log line). ``timeout_s`` 0 checks once.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    pending = {u: "not asked yet" for u in dict.fromkeys(urls)}
    next_report = started
    show = on_wait or _log_wait
    while True:
        async with anyio.create_task_group() as tg:

            async def check(url: str) -> None:
                pending[url] = await probe_ready(session, url)

            for url in pending:
                tg.start_soon(check, url)
        for url, why in list(pending.items()):
            if not why:
                del pending[url]
                waited = time.monotonic() - started
                if waited >= poll_s:  # said only when there was a wait
                    log.info("server ready", url=url, after_s=round(waited, 1))
        if not pending:
            return []
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= next_report:
            show(dict(pending), now - started)
            next_report = now + report_s
        await anyio.sleep(min(poll_s, max(0.0, deadline - now)))
    waited = ", ".join(f"{u} ({why})" for u, why in pending.items())
    if len(pending) == len(set(urls)):
        raise ServerError(
            f"no server ready after {timeout_s:g} s: {waited}; check that the servers are "
            "running (their logs say why one is not) or raise client.ready_timeout_s "
            "(--ready-timeout)"
        )
    log.warning(
        "starting without the servers that are not ready; they join when they answer",
        not_ready=waited,
    )
    return list(pending)


def _log_wait(waiting: dict[str, str], elapsed: float) -> None:
    log.info(
        "waiting for servers",
        elapsed_s=round(elapsed),
        waiting=", ".join(f"{u} ({why})" for u, why in waiting.items()),
    )
