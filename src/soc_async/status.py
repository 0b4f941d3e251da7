"""``soc-async status DIR``: what a run directory holds, read without disturbing it.

:func:`collect` reads counts per stage, failures and retries by reason, the items the
journal still holds, the last throughput snapshot and the targets of config.toml; it
never writes, so it is safe on a directory another process is still filling.
:func:`render` turns the result into a rich table for the terminal.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import msgspec
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from soc_async.records import STAGES
from soc_async.store import CONFIG, FAILURES, STAGE_FILES, RunDir

__all__ = ["RunStatus", "StageStatus", "collect", "render"]


class StageStatus(msgspec.Struct, kw_only=True):
    stage: str
    finished: int  # records in the stage's file
    failed: int  # failures recorded for the stage
    target: int | None = None  # from config.toml; None when it cannot be read
    models: dict[str, int] = {}  # finished records by the model that wrote them


class RunStatus(msgspec.Struct, kw_only=True):
    path: str
    seed: int
    shard: str
    created: str
    stages: list[StageStatus]
    failures: dict[str, int]  # by reason, every stage
    retries: dict[str, int]  # corrected rule violations by reason, summed over items
    in_progress: int  # items the journal holds that are neither done nor finished
    metrics: dict[str, Any] | None = None  # the last snapshot of metrics.jsonl


def collect(path: str | os.PathLike[str]) -> RunStatus:
    """Read a run directory; raises ``RunDirError`` if it is not one."""
    run = RunDir.open(path, repair=False)
    targets = _targets(run)
    failures: Counter[str] = Counter()
    failed_by_stage: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    finished_ids: set[str] = set()
    for header in run.scan(FAILURES):
        failures[header.reason or "unknown"] += 1
        failed_by_stage[header.stage or "unknown"] += 1
        retries.update(header.retries)
        finished_ids.add(header.item_id)
    stages = []
    for stage in STAGES:
        finished = 0
        models: Counter[str] = Counter()
        for header in run.scan(STAGE_FILES[stage]):
            finished += 1
            retries.update(header.retries)
            finished_ids.add(header.item_id)
            models[header.model_name or "unknown"] += 1
        stages.append(
            StageStatus(
                stage=stage,
                finished=finished,
                failed=failed_by_stage[stage],
                target=targets.get(stage),
                models=dict(models.most_common()),
            )
        )
    return RunStatus(
        path=str(run.path),
        seed=run.identity.seed,
        shard=run.identity.shard,
        created=run.identity.created,
        stages=stages,
        failures=dict(failures.most_common()),
        retries=dict(retries.most_common()),
        in_progress=len(run.journaled_ids() - finished_ids),
        metrics=run.last_metrics(),
    )


def _targets(run: RunDir) -> dict[str, int]:
    try:
        data = msgspec.toml.decode(run.file(CONFIG).read_bytes())
    except (OSError, msgspec.DecodeError):
        return {}
    targets = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(targets, dict):
        return {}
    return {k: v for k, v in targets.items() if isinstance(v, int)}


def render(status: RunStatus) -> RenderableType:
    """The status as rich renderables: stages, failures, retries, throughput."""
    title = f"{status.path}  (seed {status.seed}, shard {status.shard}, since {status.created})"
    stages = Table()
    stages.add_column("stage")
    stages.add_column("finished", justify="right")
    stages.add_column("target", justify="right")
    stages.add_column("failed", justify="right")
    for s in status.stages:
        target = "-" if s.target is None else str(s.target)
        stages.add_row(s.stage, str(s.finished), target, str(s.failed))
    parts: list[RenderableType] = [Text(title, style="bold"), stages]
    if any(s.models for s in status.stages):
        parts.append(_models(status.stages))
    parts.append(Text(f"in progress (journal): {status.in_progress}"))
    if status.failures:
        parts.append(_counts("failure reason", status.failures))
    if status.retries:
        parts.append(_counts("retried for", status.retries))
    parts.append(_metrics(status.metrics))
    return Group(*parts)


def _models(stages: list[StageStatus]) -> Table:
    """Finished records by model, one column per stage, with each model's share."""
    table = Table()
    table.add_column("model")
    names = list(dict.fromkeys(m for s in stages for m in s.models))
    for s in stages:
        table.add_column(s.stage, justify="right")
    for name in names:
        cells = []
        for s in stages:
            n = s.models.get(name, 0)
            cells.append(f"{n} ({n / s.finished:.0%})" if s.finished else "-")
        table.add_row(name, *cells)
    return table


def _counts(label: str, counts: dict[str, int]) -> Table:
    table = Table()
    table.add_column(label)
    table.add_column("count", justify="right")
    for reason, n in counts.items():
        table.add_row(reason, str(n))
    return table


def _metrics(metrics: dict[str, Any] | None) -> RenderableType:
    if not metrics:
        return Text("throughput: no metrics recorded yet")
    table = Table(title="last metrics", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key == "time" and isinstance(value, int | float):
            ago = time.time() - value
            shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
            table.add_row("time", f"{shown} ({ago:.0f} s ago)")
        elif isinstance(value, float):
            table.add_row(key, f"{value:,.1f}")
        else:
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table
