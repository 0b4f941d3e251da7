"""``soc-async report``: the dataset of a run directory measured, as HTML and JSON.

    rules.py         the independent rule checker (shares no code with the state machine)
    lexical.py       tokens, MTLD, distinct-n
    counts.py ... drift.py    one figure each, fed record by record (pure)
    glance.py        the "at a glance" rows against the method's targets
    judge.py         the judge's sample, prompt, schema, strict reading, aggregation
    judging.py       judge.jsonl and the model calls
    build.py         the streaming passes that feed every figure, over the one
                     run-directory reader (store/rundata.py)
    plots.py, html.py, templates/   report.html; compare.py: ``--compare``
    model.py         the report's Structs (report.json)

docs/report.md explains every figure and how to read it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from soc_async.report.build import build_report
from soc_async.report.compare import compare, render
from soc_async.report.html import render_html
from soc_async.report.model import Report

__all__ = ["Report", "build_report", "compare", "render", "render_html", "write_report"]


def write_report(report: Report, *, html: Path | None, json: Path | None) -> None:
    """Writes the HTML and/or JSON files of ``report`` (directories made as needed)."""
    if json is not None:
        json.parent.mkdir(parents=True, exist_ok=True)
        json.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(report), encoding="utf-8")
