"""The bench's live display: one progress bar per phase on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from soc_async import logs

__all__ = ["BenchView", "Probe"]

# () -> (items done, output tokens so far, calls live, the current limit)
Probe = Callable[[], tuple[int, int, int, int]]


class BenchView:
    """Shows each phase while it runs; ``enabled`` None: a rich display only on a terminal."""

    def __init__(self, *, enabled: bool | None = None, refresh_s: float = 0.5) -> None:
        self._tty = sys.stderr.isatty() if enabled is None else enabled
        self._refresh_s = refresh_s
        self._progress: Progress | None = None
        self._log = logs.get("bench")

    def __enter__(self) -> BenchView:
        if self._tty:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<16}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def note(self, message: str, **fields: object) -> None:
        """One line between phases (calibration, the server starting)."""
        if self._progress is not None:
            extra = "  ".join(f"{k}={v}" for k, v in fields.items())
            self._progress.console.log(f"{message}  {extra}".rstrip())
        else:
            self._log.info(message, **fields)

    @asynccontextmanager
    async def phase(self, label: str, total: int, probe: Probe) -> AsyncIterator[None]:
        """Shows ``label`` moving towards ``total`` items while the body runs."""
        started = time.monotonic()
        task = None
        if self._progress is not None:
            task = self._progress.add_task(label, total=total, info="")
        else:
            self._log.info("phase started", phase=label, items=total)

        def update() -> None:
            done, tokens, live, limit = probe()
            rate = tokens / max(time.monotonic() - started, 1e-6)
            if self._progress is not None and task is not None:
                info = f"{rate:7.1f} tok/s  {live:>4} live  limit {limit}"
                self._progress.update(task, completed=done, info=info)

        async with anyio.create_task_group() as tg:

            async def refresh() -> None:
                while True:
                    update()
                    await anyio.sleep(self._refresh_s)

            tg.start_soon(refresh)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        update()
        if self._progress is None:
            done, tokens, _, limit = probe()
            elapsed = time.monotonic() - started
            self._log.info(
                "phase done",
                phase=label,
                items=done,
                seconds=round(elapsed, 1),
                tokens_per_s=round(tokens / max(elapsed, 1e-6), 1),
                limit=limit,
            )
