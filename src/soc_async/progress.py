"""Run-wide counters and their live view (a rich panel on a terminal, log lines otherwise)."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable

import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from soc_async import logs


class StageCount(msgspec.Struct, kw_only=True):
    target: int = 0
    done: int = 0
    failed: int = 0
    active: int = 0


class RunCounters:
    """Counters every part of a run updates; read by the panel and the metrics lines."""

    def __init__(self) -> None:
        self.started = time.monotonic()
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
        # (time, completion tokens) samples for a moving tokens/s figure.
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)

    def on_reply(self, prompt: int, completion: int, cached: int, latency: float, queued: float):
        self.requests += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_tokens += cached
        self.latency_s += latency
        self.queue_s += queued

    def cached_share(self) -> float:
        """The share of prompt tokens served from vLLM's prefix cache, 0..1."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def tokens_per_s(self, window_s: float = 30.0) -> float:
        """Completion tokens per second over about the last ``window_s`` seconds."""
        now = time.monotonic()
        self._samples.append((now, self.completion_tokens))
        old = next(((t, n) for t, n in self._samples if now - t <= window_s), None)
        if old is None or now - old[0] < 1e-3:
            elapsed = max(now - self.started, 1e-3)
            return self.completion_tokens / elapsed
        return (self.completion_tokens - old[1]) / (now - old[0])

    def snapshot(self) -> dict[str, object]:
        """One metrics.jsonl line."""
        elapsed = time.monotonic() - self.started
        return {
            "time": time.time(),
            "elapsed_s": round(elapsed, 3),
            "requests": self.requests,
            "request_errors": self.request_errors,
            "in_flight": self.in_flight,
            "capacity": self.capacity,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "thinking_stripped": self.thinking_stripped,
            "tokens_per_s": round(self.tokens_per_s(), 2),
            "mean_latency_s": round(self.latency_s / self.requests, 4) if self.requests else 0.0,
            "mean_queue_s": round(self.queue_s / self.requests, 4) if self.requests else 0.0,
            "stages": {k: msgspec.to_builtins(v) for k, v in self.stages.items()},
        }


def render(counters: RunCounters) -> Group:
    table = Table(title="soc-async", expand=False)
    for col in ("stage", "done", "failed", "active", "target"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for name, c in counters.stages.items():
        table.add_row(name, str(c.done), str(c.failed), str(c.active), str(c.target))
    line = Text(
        f"requests {counters.requests}  in flight {counters.in_flight}/{counters.capacity}  "
        f"tokens/s {counters.tokens_per_s():.1f}  prefix-cached "
        f"{counters.cached_share() * 100:.0f}%"
    )
    return Group(table, line)


class LiveView:
    """A rich live panel on a terminal; periodic structured log lines otherwise."""

    def __init__(self, counters: RunCounters, *, enabled: bool | None = None) -> None:
        self._counters = counters
        self._tty = sys.stderr.isatty() if enabled is None else enabled
        self._live: Live | None = None
        self._last_log = 0.0
        self._log = logs.get("progress")

    def __enter__(self) -> LiveView:
        if self._tty:
            self._live = Live(
                render(self._counters), console=Console(stderr=True), refresh_per_second=2
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(render(self._counters))
            self._live.__exit__(None, None, None)

    def refresh(self, log_every_s: float = 10.0, now: Callable[[], float] = time.monotonic):
        if self._live is not None:
            self._live.update(render(self._counters))
        elif now() - self._last_log >= log_every_s:
            self._last_log = now()
            snap = self._counters.snapshot()
            self._log.info(
                "progress",
                requests=snap["requests"],
                in_flight=snap["in_flight"],
                capacity=snap["capacity"],
                tokens_per_s=snap["tokens_per_s"],
                **{k: f"{v.done}/{v.target}" for k, v in self._counters.stages.items()},
            )
