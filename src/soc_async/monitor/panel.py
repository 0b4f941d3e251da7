"""The live panel: one :class:`~soc_async.monitor.snapshot.Snapshot` drawn with rich.

The same renderable serves the run's own terminal and ``soc-async status --watch``. It
fits the console it is drawn on: every line is cut with an ellipsis rather than wrapped,
and from :data:`WIDE` columns on the tables show more (per-engine faults by cause, the
per-engine limit, requests). Sketch at 80 columns::

    soc-async  elapsed 0:12:34  runs/x
    tokens/s 1,234 now · 1,100 overall  requests 12,345 · 41.2/s  in flight 87/96
    limit 96 adaptive · moved 12 s ago: queue empty, KV 45%: up 77->96
    prefix-cached 78% · latency 1.20 s · queue 0.10 s
     stage          progress       done/target  failed  active    /s      ETA
     personas     ━━━━━━━━━━━━━━       200/200       0       0     -     done
     ...
    faults  5xx 12 · 429 3 · reset 2 · timeout 1 · bad_json 4 · failed for good 0
    rejected  bad_state 14 · clock_backwards 3
     engine          state  in fl  run/wait   KV  preempt  prefix  tok/s  faults
     127.0.0.1:8000  up        44      40/4  62%        0     81%    640       5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from soc_async.monitor.snapshot import EngineFigures, Snapshot, StageFigures

__all__ = ["WIDE", "RunPanel", "ago", "counts", "duration", "short_url"]

# From this many columns on, the tables add their wide-only columns (the engine table
# then needs about 130 with every fault cause shown).
WIDE = 140


def duration(seconds: float | None) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour); ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def ago(seconds: float | None) -> str:
    """``12 s`` under a minute, else :func:`duration`."""
    if seconds is not None and seconds < 60:
        return f"{max(0, seconds):.0f} s"
    return duration(seconds)


def short_url(url: str) -> str:
    """An endpoint as ``host:port`` (the scheme and a trailing slash dropped)."""
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/")


def counts(values: Mapping[str, int], *, none: str = "none", sep: str = " · ") -> str:
    """``a 3 · b 1`` in the mapping's order, zeros left out."""
    parts = [f"{k} {v:,}" for k, v in values.items() if v]
    return sep.join(parts) if parts else none


def _line(*parts: tuple[str, str] | str) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        else:
            text.append(*part)
    return text


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


class RunPanel:
    """A snapshot as rich renderables; ``title`` names the run, ``note`` is shown beside
    it (``status --watch`` says how old the figures are, or that the run finished)."""

    def __init__(self, snapshot: Snapshot, *, title: str = "", note: str = "") -> None:
        self.snapshot = snapshot
        self.title = title
        self.note = note

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        wide = width >= WIDE
        s = self.snapshot
        yield self._header()
        yield _line(
            ("tokens/s ", "dim"),
            (f"{s.tokens_per_s:,.0f}", "bold"),
            f" now · {s.tokens_per_s_overall:,.0f} overall  ",
            ("requests ", "dim"),
            f"{s.requests:,} · {s.requests_per_s:,.1f}/s  ",
            ("in flight ", "dim"),
            f"{s.in_flight:,}/{s.capacity:,}",
        )
        yield self._limit()
        yield _line(
            ("prefix-cached ", "dim"),
            f"{s.cached_share * 100:.0f}%",
            ("  latency ", "dim"),
            f"{s.mean_latency_s:.2f} s",
            ("  queue ", "dim"),
            f"{s.mean_queue_s:.2f} s",
        )
        yield _stages(s.stages, width, wide)
        yield _line(
            ("faults ", "bold"),
            (counts(s.faults), "red" if s.faults_total else ""),
            ("  failed for good ", "dim"),
            (f"{s.request_errors:,}", "red" if s.request_errors else ""),
        )
        yield _line(("rejected ", "bold"), counts(s.rejections))
        if s.engines:
            yield _engines(s.engines, width, wide)

    def _header(self) -> Text:
        # The run's name last: a long path is what gets cut, never the state.
        s = self.snapshot
        text = _line(("soc-async", "bold"), f"  elapsed {duration(s.elapsed_s)}")
        if s.finished:
            text.append(f"  finished: {s.outcome or 'done'}", style="bold green")
        if self.note:
            text.append(f"  {self.note}", style="yellow")
        if self.title:
            text.append(f"  {self.title}")
        return text

    def _limit(self) -> Text:
        c = self.snapshot.controller
        if c is None:
            return _line(("limit ", "dim"), f"{self.snapshot.capacity:,}")
        if not c.adaptive:
            return _line(("limit ", "dim"), (f"{c.limit:,}", "bold"), " fixed")
        text = _line(("limit ", "dim"), (f"{c.limit:,}", "bold"), " adaptive")
        if c.moved_reason:
            text.append(f" · moved {ago(c.moved_ago_s)} ago: {c.moved_reason}")
        elif c.reason:
            text.append(f" · {c.reason}")
        return text


def _table(
    *columns: str, left: tuple[str, ...] = (), widths: dict[str, int] | None = None
) -> Table:
    """A borderless table with a rule under its header, two spaces between columns; the
    first column and ``left`` ones are left-aligned; ``widths`` fixes some columns'
    widths (their cells are cut with an ellipsis)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        expand=False,
        padding=(0, 0, 0, 1),
    )
    for i, col in enumerate(columns):
        table.add_column(
            col,
            justify="left" if i == 0 or col in left else "right",
            no_wrap=True,
            overflow="ellipsis",
            width=(widths or {}).get(col),
        )
    return table


def _stages(stages: Mapping[str, StageFigures], width: int, wide: bool) -> Table:
    # Everything but the bar takes about 55 columns (65 wide): the bar gets the rest.
    bar_width = max(8, min(50, width - (66 if wide else 56)))
    cols = ["stage", "progress", "done/target", "failed", "active", "/s", "ETA"]
    if wide:
        cols.insert(2, "%")
    table = _table(*cols, left=("progress",), widths={"progress": bar_width})
    for name, st in stages.items():
        total = max(st.target, 1)
        bar = ProgressBar(total=total, completed=min(st.settled, total), width=bar_width)
        if st.target and st.settled >= st.target:
            eta = "done"
        elif st.target == 0:
            eta = "-"
        else:
            eta = duration(st.eta_s)
        row: list[Text | ProgressBar | str] = [
            name,
            bar,
            f"{st.done:,}/{st.target:,}",
            f"{st.failed + st.skipped:,}",
            f"{st.active:,}",
            f"{st.rate:.2f}" if st.rate else "-",
            eta,
        ]
        if wide:
            row.insert(2, f"{100 * st.settled / total:.0f}%" if st.target else "-")
        table.add_row(*row)
    return table


_COLUMN_GAP = 2  # characters between two columns of a table


def _engines(engines: Iterable[EngineFigures], width: int, wide: bool) -> Table:
    """One row per engine. The figures keep their natural widths; the engine name and
    (wide) the faults breakdown share what is left, so a row never outgrows ``width``."""
    cols = ["engine", "state", "in fl", "run/wait", "KV", "preempt", "prefix", "tok/s", "faults"]
    if wide:
        cols[3:3] = ["limit", "requests"]
    rows: list[list[str]] = []
    states: list[Text] = []
    for e in engines:
        state = Text("up", style="green") if e.up else Text("down", style="bold red")
        if e.up and e.metrics_error:
            state = Text("up?", style="yellow")  # answers requests, /metrics unreadable
        states.append(state)
        faults = sum(e.faults.values())
        row = [
            short_url(e.url),
            state.plain,
            f"{e.in_flight:,}",
            "-" if e.running is None else f"{_num(e.running)}/{_num(e.waiting)}",
            _pct(e.kv_cache_usage),
            _num(e.preemptions),
            _pct(e.prefix_hit_rate),
            _num(e.tokens_per_s),
            counts(e.faults, none="0", sep=" ") if wide else f"{faults:,}",
        ]
        if wide:
            row[3:3] = ["-" if e.limit is None else f"{e.limit:,}", f"{e.requests:,}"]
        rows.append(row)
    natural = {c: max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)}
    flex = ["engine", "faults"] if wide else ["engine"]
    fixed = sum(w for c, w in natural.items() if c not in flex)
    room = width - fixed - _COLUMN_GAP * (len(cols) - 1)
    widths: dict[str, int] = {}
    if room < sum(natural[c] for c in flex):
        engine = min(natural["engine"], max(8, room // 2 if wide else room))
        widths["engine"] = engine
        if wide:
            widths["faults"] = max(6, room - engine)
    table = _table(*cols, widths=widths)
    for row, state in zip(rows, states, strict=True):
        cells: list[str | Text] = list(row)
        cells[1] = state
        fault_col = cols.index("faults")
        if row[fault_col] not in ("0", ""):
            cells[fault_col] = Text(row[fault_col], style="red")
        table.add_row(*cells)
    return table
