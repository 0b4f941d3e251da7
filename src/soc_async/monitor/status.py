"""``soc-async status DIR``: what a run directory holds, read without disturbing it.

:func:`collect` reads the directory once through a
:class:`~soc_async.monitor.follow.Follower` (no lock, nothing written, so it is safe on a
directory another process is filling) into a :class:`RunStatus`: records and failures
per stage, failures and content rejections by reason, items in progress, transport
faults by cause and endpoint, whether the run has ended, and the newest metrics line.
:func:`render` draws it for the terminal; ``status --json`` prints it as JSON, whose
shape is :data:`SCHEMA_VERSION` and docs/status-schema.json (a test keeps them equal).
:func:`watch` follows a running directory until its run ends.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

import msgspec
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from soc_async.monitor.follow import Follower
from soc_async.monitor.panel import RunPanel, ago, counts, short_url
from soc_async.monitor.snapshot import Snapshot
from soc_async.records import STAGES
from soc_async.timestamps import utc_stamp

__all__ = [
    "SCHEMA_VERSION",
    "RunStatus",
    "StageStatus",
    "collect",
    "encode",
    "render",
    "schema",
    "watch",
]

# The version of the JSON of ``status --json``. Fields are only ever added (last, with a
# default); removing or retyping one is a new version.
SCHEMA_VERSION = 1

State = Literal["waiting", "running", "finished", "gone"]


class StageStatus(msgspec.Struct, kw_only=True):
    stage: str
    done: int  # records in the stage's file
    failed: int  # failure records of the stage
    target: int | None = None  # from config.toml (the whole run); None when unreadable
    models: dict[str, int] = {}  # records by the model that wrote them ("unknown": none named)


class RunStatus(msgspec.Struct, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    path: str
    seed: int
    shard: str
    created: str
    # waiting: no metrics line yet; running; finished: its last line says so; gone: its
    # process is no longer on this host and wrote no last line (killed).
    state: State
    outcome: str  # when finished: "done" | "interrupted" | "failed"; else ""
    updated_s_ago: float | None  # age of the newest metrics line
    stages: list[StageStatus]
    in_progress: int  # items the journal holds that are not finished
    failures: dict[str, int]  # failure records by reason
    rejections: dict[str, int]  # content rejections by reason (records' retries)
    faults: dict[str, int]  # failed transport attempts by cause, every process of the run
    faults_by_endpoint: dict[str, dict[str, int]]
    metrics: Snapshot | None = None  # the newest metrics.jsonl line


def collect(path: str | os.PathLike[str]) -> RunStatus:
    """Read a run directory once; raises ``RunDirError`` if it is not one."""
    follower = Follower(path)
    follower.poll()
    return status_of(follower)


def status_of(follower: Follower) -> RunStatus:
    """What ``follower`` has read so far, as a :class:`RunStatus`."""
    run = follower.run
    by_endpoint = follower.faults_by_endpoint()
    faults: Counter[str] = Counter()
    for per_cause in by_endpoint.values():
        faults.update(per_cause)
    latest = follower.latest
    if latest is None:
        state: State = "waiting"
    elif latest.finished:
        state = "finished"
    elif follower.gone:
        state = "gone"
    else:
        state = "running"
    age = follower.age_s()
    return RunStatus(
        path=str(run.path),
        seed=run.identity.seed,
        shard=run.identity.shard,
        created=run.identity.created,
        state=state,
        outcome=latest.outcome if latest is not None and latest.finished else "",
        updated_s_ago=round(age, 1) if age is not None else None,
        stages=[
            StageStatus(
                stage=s,
                done=follower.done[s],
                failed=follower.failed[s],
                target=follower.targets.get(s),
                models=dict(follower.models[s].most_common()),
            )
            for s in STAGES
        ],
        in_progress=follower.in_progress,
        failures=dict(follower.failures.most_common()),
        rejections=dict(follower.rejections.most_common()),
        faults=dict(sorted(faults.items())),
        faults_by_endpoint=by_endpoint,
        metrics=latest,
    )


_encoder = msgspec.json.Encoder()


def encode(status: RunStatus) -> bytes:
    """``status --json``: one JSON object, no newline."""
    return _encoder.encode(status)


def schema() -> dict[str, object]:
    """The JSON Schema of ``status --json`` (docs/status-schema.json)."""
    return msgspec.json.schema(RunStatus)


# --- the one-shot view ------------------------------------------------------------------


def render(status: RunStatus) -> RenderableType:
    """The status as rich renderables: stages, failures, faults, throughput."""
    title = f"{status.path}  (seed {status.seed}, shard {status.shard}, since {status.created})"
    stages = Table()
    stages.add_column("stage")
    stages.add_column("done", justify="right")
    stages.add_column("target", justify="right")
    stages.add_column("failed", justify="right")
    for s in status.stages:
        target = "-" if s.target is None else str(s.target)
        stages.add_row(s.stage, str(s.done), target, str(s.failed))
    parts: list[RenderableType] = [Text(title, style="bold"), _state_line(status), stages]
    if any(s.models for s in status.stages):
        parts.append(_models(status.stages))
    parts.append(Text(f"in progress (journal): {status.in_progress}"))
    if status.failures:
        parts.append(_counts("failure reason", status.failures))
    if status.rejections:
        parts.append(_counts("rejected for", status.rejections))
    parts.append(_faults(status))
    parts.append(_metrics(status.metrics))
    return Group(*parts)


def _models(stages: list[StageStatus]) -> Table:
    """Records by model, one column per stage, with each model's share of the stage."""
    table = Table()
    table.add_column("model")
    names = list(dict.fromkeys(m for s in stages for m in s.models))
    for s in stages:
        table.add_column(s.stage, justify="right")
    for name in names:
        cells = []
        for s in stages:
            n = s.models.get(name, 0)
            cells.append(f"{n} ({n / s.done:.0%})" if s.done else "-")
        table.add_row(name, *cells)
    return table


def _state_line(status: RunStatus) -> Text:
    text = Text("state: ")
    if status.state == "finished":
        text.append(f"finished ({status.outcome or 'done'})", style="bold green")
    elif status.state == "gone":
        text.append("gone: its process ended without a last line (killed?)", style="bold red")
    elif status.state == "waiting":
        text.append("no metrics line yet", style="yellow")
    else:
        text.append("running", style="bold")
    if status.updated_s_ago is not None:
        text.append(f"; figures from {ago(status.updated_s_ago)} ago")
    return text


def _counts(label: str, values: dict[str, int]) -> Table:
    table = Table()
    table.add_column(label)
    table.add_column("count", justify="right")
    for reason, n in values.items():
        table.add_row(reason, str(n))
    return table


def _faults(status: RunStatus) -> RenderableType:
    if not status.faults:
        return Text("transport faults: none")
    causes = list(status.faults)
    table = Table(title="transport faults (failed attempts)", title_justify="left")
    table.add_column("endpoint")
    for cause in causes:
        table.add_column(cause, justify="right")
    for url, per_cause in status.faults_by_endpoint.items():
        table.add_row(short_url(url), *(str(per_cause.get(c, 0)) for c in causes))
    return table


def _metrics(metrics: Snapshot | None) -> RenderableType:
    if metrics is None:
        return Text("throughput: no metrics recorded yet")
    table = Table(title="last metrics", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    shown = utc_stamp(metrics.time)
    table.add_row("time", f"{shown} ({time.time() - metrics.time:.0f} s ago)")
    rows: list[tuple[str, float | int]] = [
        ("elapsed_s", metrics.elapsed_s),
        ("requests", metrics.requests),
        ("request_errors", metrics.request_errors),
        ("in_flight", metrics.in_flight),
        ("capacity", metrics.capacity),
        ("completion_tokens", metrics.completion_tokens),
        ("tokens_per_s", metrics.tokens_per_s),
        ("tokens_per_s_overall", metrics.tokens_per_s_overall),
        ("requests_per_s", metrics.requests_per_s),
        ("mean_latency_s", metrics.mean_latency_s),
        ("mean_queue_s", metrics.mean_queue_s),
    ]
    for key, value in rows:
        table.add_row(key, f"{value:,.1f}" if isinstance(value, float) else f"{value:,}")
    table.add_row("prefix-cached", f"{metrics.cached_share * 100:.0f}%")
    table.add_row("faults (this process)", counts(metrics.faults))
    return table


# --- following a run --------------------------------------------------------------------


def _note(follower: Follower, status: RunStatus) -> str:
    if status.state == "waiting":
        return "waiting for the first metrics line"
    if status.state == "gone":
        pid = follower.latest.pid if follower.latest else 0
        return f"process {pid} is gone without a last line (killed?)"
    if status.state == "running" and status.updated_s_ago is not None:
        return f"updated {ago(status.updated_s_ago)} ago"
    return ""


def watch(
    path: str | os.PathLike[str],
    *,
    console: Console,
    interval_s: float = 2.0,
    as_json: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Follow a run directory until its run ends (finished, or gone from this host).

    On a terminal (and without ``as_json``) the live panel is redrawn every
    ``interval_s``; otherwise a ``status --json`` line is printed whenever something
    changed. Returns the last status.
    """
    follower = Follower(path)
    title = str(follower.run.path)
    if as_json or not console.is_terminal:
        return _watch_json(follower, interval_s, sleep)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            follower.poll()
            status = status_of(follower)
            panel = RunPanel(follower.snapshot(), title=title, note=_note(follower, status))
            live.update(panel, refresh=True)
            if status.state in ("finished", "gone"):
                return status
            sleep(interval_s)


def _watch_json(follower: Follower, interval_s: float, sleep: Callable[[float], None]) -> RunStatus:
    first = True
    while True:
        changed = follower.poll()
        status = status_of(follower)
        ended = status.state in ("finished", "gone")
        if changed or first or ended:
            sys.stdout.buffer.write(encode(status) + b"\n")
            sys.stdout.flush()
        first = False
        if ended:
            return status
        sleep(interval_s)
