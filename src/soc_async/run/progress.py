"""Run-wide counters, their live view, and the periodic metrics line.

:class:`RunCounters` is what every part of a run updates (the gateway per request, the
pipeline per item). :meth:`RunCounters.snapshot` turns it into a
:class:`~soc_async.monitor.snapshot.Snapshot`, the one shape every reader uses:
:class:`LiveView` draws it (a rich panel on a terminal, a JSON log line every 10 s
otherwise), :class:`Reporter` appends it to metrics.jsonl and hands it to the Prometheus
endpoint, and ``soc-async status`` reads it back.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable

import anyio
from rich.console import Console
from rich.live import Live

from soc_async import logs
from soc_async.monitor.panel import RunPanel, duration
from soc_async.monitor.rates import RateWindow, eta_s
from soc_async.monitor.snapshot import (
    ControllerFigures,
    EngineFigures,
    Snapshot,
    StageFigures,
)
from soc_async.records import Conversation, Failure, Record

__all__ = ["LiveView", "Reporter", "RunCounters", "StageCount"]

# The stage counters the pipeline updates in place (target/done/failed/active/skipped).
StageCount = StageFigures


class RunCounters:
    """Counters every part of a run updates; read through :meth:`snapshot`.

    ``engines`` and ``controller`` are set by the gateway to functions that describe the
    servers and the concurrency limit at the moment of a snapshot.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self.started = clock()
        self.stages: dict[str, StageCount] = {
            s: StageCount() for s in ("personas", "experiences", "chats")
        }
        self.requests = 0
        self.request_errors = 0
        self.in_flight = 0
        self.capacity = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.queue_s = 0.0
        self.latency_s = 0.0
        self.thinking_stripped = 0  # <think> parts removed from replies before parsing
        self.rejections: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.engines: Callable[[], list[EngineFigures]] = list
        self.controller: Callable[[], ControllerFigures | None] = lambda: None
        self._window = RateWindow()
        self._pid = os.getpid()
        self._host = socket.gethostname()

    def on_reply(self, prompt: int, completion: int, cached: int, latency: float, queued: float):
        self.requests += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_tokens += cached
        self.latency_s += latency
        self.queue_s += queued

    def on_record(self, record: Record) -> None:
        """Count the content rejections a finished record carries, and a failure's reason."""
        if isinstance(record, Conversation | Failure):
            self.rejections.update(record.retries)
        if isinstance(record, Failure):
            self.failures[record.reason] += 1

    def snapshot(self, *, finished: bool = False, outcome: str = "") -> Snapshot:
        """The figures now, with rates over the recent window (each call adds a sample)."""
        now = self._clock()
        elapsed = max(now - self.started, 1e-9)
        stages = {name: StageFigures(**_fields(c)) for name, c in self.stages.items()}
        sample: dict[str, float] = {
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }
        sample.update({f"stage:{name}": s.settled for name, s in stages.items()})
        self._window.add(now, sample)
        for name, s in stages.items():
            rate = self._window.rate(f"stage:{name}")
            s.rate = round(rate, 4) if rate is not None else 0.0
            left = eta_s(s.target - s.settled, rate)
            s.eta_s = round(left, 1) if left is not None else None
        engines = self.engines()
        faults: Counter[str] = Counter()
        for engine in engines:
            faults.update(engine.faults)
        window_tps = self._window.rate("completion_tokens")
        window_rps = self._window.rate("requests")
        return Snapshot(
            time=self._wall(),
            elapsed_s=round(elapsed, 3),
            requests=self.requests,
            request_errors=self.request_errors,
            in_flight=self.in_flight,
            capacity=self.capacity,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            thinking_stripped=self.thinking_stripped,
            tokens_per_s=round(
                window_tps if window_tps is not None else self.completion_tokens / elapsed, 2
            ),
            mean_latency_s=round(self.latency_s / self.requests, 4) if self.requests else 0.0,
            mean_queue_s=round(self.queue_s / self.requests, 4) if self.requests else 0.0,
            stages=stages,
            tokens_per_s_overall=round(self.completion_tokens / elapsed, 2),
            requests_per_s=round(
                window_rps if window_rps is not None else self.requests / elapsed, 3
            ),
            faults=dict(sorted(faults.items())),
            rejections=dict(self.rejections.most_common()),
            failures=dict(self.failures.most_common()),
            controller=self.controller(),
            engines=engines,
            finished=finished,
            outcome=outcome,
            pid=self._pid,
            host=self._host,
        )


def _fields(stage: StageCount) -> dict[str, int]:
    return {
        "target": stage.target,
        "done": stage.done,
        "failed": stage.failed,
        "active": stage.active,
        "skipped": stage.skipped,
    }


class LiveView:
    """A rich live panel on a terminal; a structured log line every ``log_every_s``
    otherwise (a batch job's output file)."""

    def __init__(
        self,
        counters: RunCounters,
        *,
        title: str = "",
        enabled: bool | None = None,
        console: Console | None = None,
        log_every_s: float = 10.0,
    ) -> None:
        self._counters = counters
        self._title = title
        self._tty = sys.stderr.isatty() if enabled is None else enabled
        self._console = console
        self._live: Live | None = None
        self._log_every_s = log_every_s
        self._last_log: float | None = None
        self._log = logs.get("progress")

    def __enter__(self) -> LiveView:
        if self._tty:
            self._live = Live(
                self._panel(),
                console=self._console or Console(stderr=True),
                # One frame a second: a frame costs ~30 ms of CPU at 160 columns with 8
                # engines (docs/observability.md), taken from the event loop's GIL.
                refresh_per_second=1,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._panel())
            self._live.__exit__(None, None, None)

    def _panel(self, snapshot: Snapshot | None = None) -> RunPanel:
        return RunPanel(snapshot or self._counters.snapshot(), title=self._title)

    def refresh(self, now: Callable[[], float] = time.monotonic) -> None:
        """Redraw the panel, or log a progress line when one is due."""
        if self._live is not None:
            self._live.update(self._panel())
            return
        t = now()
        if self._last_log is not None and t - self._last_log < self._log_every_s:
            return
        self._last_log = t
        snap = self._counters.snapshot()
        c = snap.controller
        self._log.info(
            "progress",
            requests=snap.requests,
            in_flight=snap.in_flight,
            capacity=snap.capacity,
            tokens_per_s=snap.tokens_per_s,
            limit_reason=c.moved_reason if c is not None else "",
            faults=snap.faults,
            failed_for_good=snap.request_errors,
            rejections=sum(snap.rejections.values()),
            **{
                name: f"{s.done}/{s.target}" + (f" eta {duration(s.eta_s)}" if s.eta_s else "")
                for name, s in snap.stages.items()
            },
        )

    async def run(self, every_s: float = 1.0) -> None:
        """Refresh until cancelled."""
        while True:
            self.refresh()
            await anyio.sleep(every_s)


class Reporter:
    """A metrics.jsonl line every ``interval_s`` (and one at once), each also handed to
    ``publish`` (the Prometheus endpoint); :meth:`final` writes the last line."""

    def __init__(
        self,
        counters: RunCounters,
        write: Callable[[Snapshot], None],
        *,
        interval_s: float = 5.0,
        publish: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self._counters = counters
        self._write = write
        self._publish = publish
        self.interval_s = interval_s

    def report(self, *, finished: bool = False, outcome: str = "") -> Snapshot:
        snap = self._counters.snapshot(finished=finished, outcome=outcome)
        self._write(snap)
        if self._publish is not None:
            self._publish(snap)
        return snap

    async def run(self) -> None:
        """Report now, then every ``interval_s`` until cancelled."""
        while True:
            self.report()
            await anyio.sleep(self.interval_s)

    def final(self, outcome: str) -> Snapshot:
        """The run's last line: ``finished: true`` and how it ended."""
        return self.report(finished=True, outcome=outcome)
