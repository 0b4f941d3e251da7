"""``soc-async status DIR --plot out.png``: when and why a run slowed, from metrics.jsonl.

Five panels over wall-clock minutes since the first line: completion tokens/s (the
run's window, and vLLM's generation rate summed over engines); requests in flight
against the limit; each engine's running and waiting requests; each engine's KV-cache
usage; failed transport attempts per minute by cause. A dotted line marks where a new
process took over the directory (a resume). :func:`series` is the pure part.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import msgspec

from soc_async.errors import InputError
from soc_async.monitor.panel import short_url
from soc_async.monitor.snapshot import Snapshot, decode_snapshot
from soc_async.store import METRICS, RunDir
from soc_async.store.files import CHECKS, good_lines

__all__ = ["Series", "plot_run", "read_snapshots", "series"]


class Series(msgspec.Struct, kw_only=True):
    """The columns the plot draws; times in minutes since the first line."""

    minutes: list[float] = []
    tokens_per_s: list[float] = []
    engine_tokens_per_s: list[float | None] = []  # vLLM's rate summed over engines
    in_flight: list[int] = []
    limit: list[int] = []
    running: dict[str, list[float | None]] = {}  # by endpoint
    waiting: dict[str, list[float | None]] = {}
    kv_cache_usage: dict[str, list[float | None]] = {}
    # Failed attempts per minute by cause, between a line and the one before (same process).
    faults_per_min: dict[str, list[float]] = {}
    restarts: list[float] = []  # minutes where another process began writing


def read_snapshots(path: str | os.PathLike[str]) -> list[Snapshot]:
    """Every readable metrics.jsonl line of a run directory, oldest first."""
    run = RunDir.open(path, repair=False)
    out = []
    for _, line in good_lines(run.file(METRICS), CHECKS[METRICS]):
        try:
            out.append(decode_snapshot(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


def series(snaps: list[Snapshot]) -> Series:
    """The plotted columns of ``snaps`` (pure)."""
    s = Series()
    if not snaps:
        return s
    t0 = snaps[0].time
    urls: list[str] = []
    for snap in snaps:
        for e in snap.engines:
            if e.url not in urls:
                urls.append(e.url)
    causes = sorted({c for snap in snaps for c in snap.faults})
    running: dict[str, list[float | None]] = defaultdict(list)
    waiting: dict[str, list[float | None]] = defaultdict(list)
    kv: dict[str, list[float | None]] = defaultdict(list)
    faults: dict[str, list[float]] = defaultdict(list)
    prev: Snapshot | None = None
    for snap in snaps:
        minute = (snap.time - t0) / 60
        new_process = prev is not None and (
            (snap.pid, snap.host) != (prev.pid, prev.host) or snap.elapsed_s < prev.elapsed_s
        )
        if new_process:
            s.restarts.append(minute)
        s.minutes.append(minute)
        s.tokens_per_s.append(snap.tokens_per_s)
        rates = [e.tokens_per_s for e in snap.engines if e.tokens_per_s is not None]
        s.engine_tokens_per_s.append(sum(rates) if rates else None)
        s.in_flight.append(snap.in_flight)
        s.limit.append(snap.controller.limit if snap.controller else snap.capacity)
        by_url = {e.url: e for e in snap.engines}
        for url in urls:
            e = by_url.get(url)
            running[url].append(e.running if e else None)
            waiting[url].append(e.waiting if e else None)
            kv[url].append(e.kv_cache_usage if e else None)
        dt = (snap.time - prev.time) / 60 if prev is not None else 0.0
        for cause in causes:
            if prev is None or new_process or dt <= 0:
                faults[cause].append(0.0)
            else:
                grew = snap.faults.get(cause, 0) - prev.faults.get(cause, 0)
                faults[cause].append(max(0, grew) / dt)
        prev = snap
    s.running, s.waiting, s.kv_cache_usage = dict(running), dict(waiting), dict(kv)
    s.faults_per_min = dict(faults)
    return s


def plot_run(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Draw the run directory's metrics into the PNG ``out``; returns its path."""
    snaps = read_snapshots(path)
    if not snaps:
        raise InputError(f"{Path(path) / METRICS}: no metrics lines to plot yet")
    return draw(series(snaps), Path(out), title=str(path))


def draw(s: Series, out: Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 1, figsize=(10, 13), sharex=True, constrained_layout=True)
    tps, load, engines, kv, faults = axes
    tps.plot(s.minutes, s.tokens_per_s, label="completion tokens/s (run, window)")
    if any(v is not None for v in s.engine_tokens_per_s):
        tps.plot(s.minutes, _nan(s.engine_tokens_per_s), "--", label="vLLM generation tokens/s")
    tps.set_ylabel("tokens/s")
    load.step(s.minutes, s.in_flight, where="post", label="in flight")
    load.step(s.minutes, s.limit, where="post", label="limit")
    load.set_ylabel("requests")
    for url in s.running:
        line = engines.plot(s.minutes, _nan(s.running[url]), label=f"{short_url(url)} running")
        engines.plot(
            s.minutes,
            _nan(s.waiting[url]),
            ":",
            color=line[0].get_color(),
            label=f"{short_url(url)} waiting",
        )
        kv.plot(s.minutes, [None if v is None else v * 100 for v in s.kv_cache_usage[url]])
    engines.set_ylabel("per engine")
    kv.set_ylabel("KV cache %")
    kv.set_ylim(0, 105)
    for cause, values in s.faults_per_min.items():
        faults.step(s.minutes, values, where="pre", label=cause)  # the rate up to each line
    faults.set_ylabel("faults / min")
    faults.set_xlabel("minutes since the first metrics line")
    for ax in axes:
        for minute in s.restarts:
            ax.axvline(minute, linestyle=":", color="grey")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
