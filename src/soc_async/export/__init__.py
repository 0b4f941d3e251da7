"""``soc-async export``: a run directory as a dataset users train on.

    rows.py      the row Struct of each format: the one statement of its schema
    schema.py    row Struct -> the card's `datasets` features, and the Parquet schema
    extract.py   SOC-2508 / SPB-2508 fields out of free text (documented rules)
    formats.py   records -> rows, per format (pure)
    messages.py  the chat-format samples and their options
    split.py     held-out splits grouped by persona (pure, seeded)
    write.py     JSONL per split; Parquet converted from it
    human.py     people's ratings (soc-async annotate) as columns of the conversations
    card.py      README.md with the YAML front matter `datasets` reads

:func:`export_run` wires them: read the run (rundata.py), plan the split, stream the
conversations into rows, write the files and the card. docs/export.md is the user's
description of every format.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from soc_async.annotate.records import Rating
from soc_async.errors import InputError
from soc_async.export.card import CardFacts, read_report, render_card
from soc_async.export.formats import (
    CONVERSATION_FORMATS,
    FORMATS,
    MissingReference,
    conversation_rows,
    spb_row,
)
from soc_async.export.human import rated_row_type, ratings_by_chat, with_ratings
from soc_async.export.messages import MessagesOptions
from soc_async.export.rows import MessagesRow, Soc2508Row, Soc2602Row, SpbRow
from soc_async.export.schema import arrow_schema
from soc_async.export.split import TRAIN, SplitPlan, plan_split
from soc_async.export.write import DATA_DIR, SplitWriter, jsonl_to_parquet
from soc_async.records import Conversation
from soc_async.store.rundata import RunData

__all__ = ["FORMATS", "ROW_TYPES", "ExportSummary", "MessagesOptions", "export_run"]

ROW_TYPES: dict[str, type[msgspec.Struct]] = {
    "soc-2602": Soc2602Row,
    "soc-2508": Soc2508Row,
    "spb": SpbRow,
    "messages": MessagesRow,
}
CARD = "README.md"


class ExportSummary(msgspec.Struct, kw_only=True):
    format: str
    out: str
    rows: dict[str, int]  # per split
    dropped: int  # conversations a grouped split left out
    files: list[str]  # relative to out
    seconds: float
    parquet_seconds: float


class _Tally:
    """What the card counts, gathered while the rows are written."""

    def __init__(self) -> None:
        self.models: dict[str, Counter[str]] = {
            "conversations": Counter(),
            "personas": Counter(),
            "experiences": Counter(),
        }
        self.styles: Counter[str] = Counter()
        self.ended_by: Counter[str] = Counter()
        self.conversations = self.turns = self.messages = 0

    def add(self, c: Conversation) -> None:
        self.conversations += 1
        self.models["conversations"][c.model] += 1
        self.styles[c.style] += 1
        self.ended_by[c.ended_by] += 1
        self.turns += len(c.turns)
        self.messages += sum(len(t.messages) for t in c.turns)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    fmt: str,
    splits: dict[str, float] | None = None,
    seed: int = 0,
    parquet: bool = False,
    messages: MessagesOptions | None = None,
    license: str | None = None,
) -> ExportSummary:
    """Export the run directory ``run_dir`` in format ``fmt`` into the directory ``out``.

    ``splits`` ({name: fraction of the conversations}) are held out grouped by persona
    with ``seed``; the rest is ``train``. Raises InputError for an unknown format, an
    output directory that is not empty, or a conversation whose references are missing.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    splits = dict(splits or {})
    messages = messages or MessagesOptions()
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: exists and is not empty (choose a new --out)")
    data = RunData(run_dir)
    rated = ratings_by_chat(data.path)  # people's ratings: columns only where there are any
    row_type = rated_row_type(ROW_TYPES[fmt]) if rated else ROW_TYPES[fmt]
    plan = None
    if splits:
        edges = [(c.chat_id, c.persona_ids[0], c.persona_ids[1]) for c in data.conversations()]
        plan = plan_split(edges, data.personas, splits, seed)
        del edges
    order = [TRAIN, *splits]
    tally = _Tally()
    writer = SplitWriter(out_dir)
    counts = _write_rows(data, fmt, plan, writer, order, messages, tally, (rated, row_type))
    stages = Counter(f.stage for f in data.failures)
    from_run: dict[str, Any] = {
        "records": {
            "personas": len(data.personas),
            "experiences": len(data.experiences),
            "conversations": tally.conversations,
        },
        "failures": {s: stages[s] for s in ("personas", "experiences", "chats") if stages[s]},
        "failure_reasons": dict(Counter(f.reason for f in data.failures)),
        "config": data.config_data(),
        "report": read_report(data.path),
        "source": str(data.path),
    }
    dropped = plan.dropped if plan and fmt in CONVERSATION_FORMATS else 0
    del data, plan  # Parquet needs none of the records: free them first
    rows = {name: counts.get(name, 0) for name in order}
    files = {"jsonl": {s: f"{DATA_DIR}/{s}.jsonl" for s in order}}
    parquet_started = time.perf_counter()
    if parquet:
        schema = arrow_schema(row_type)
        files["parquet"] = {s: f"{DATA_DIR}/{s}.parquet" for s in order}
        for s in order:
            jsonl, target = out_dir / files["jsonl"][s], out_dir / files["parquet"][s]
            jsonl_to_parquet(jsonl, target, schema, writer.longest.get(s, 0))
    parquet_seconds = time.perf_counter() - parquet_started if parquet else 0.0
    card = CardFacts(
        format=fmt,
        row_type=row_type,
        splits=rows,
        files=files,
        sizes={p: (out_dir / p).stat().st_size for kind in files.values() for p in kind.values()},
        models={k: dict(v) for k, v in tally.models.items()},
        turns=tally.turns,
        messages=tally.messages,
        styles=dict(tally.styles),
        ended_by=dict(tally.ended_by),
        dropped=dropped,
        split_spec=splits,
        split_seed=seed,
        options=msgspec.to_builtins(messages) if fmt == "messages" else {},
        license=license,
        **from_run,
    )
    (out_dir / CARD).write_text(render_card(card), encoding="utf-8")
    listed = [CARD, *(p for kind in files.values() for p in kind.values())]
    return ExportSummary(
        format=fmt,
        out=str(out_dir),
        rows=rows,
        dropped=dropped,
        files=listed,
        seconds=time.perf_counter() - started,
        parquet_seconds=parquet_seconds,
    )


def _write_rows(
    data: RunData,
    fmt: str,
    plan: SplitPlan | None,
    writer: SplitWriter,
    order: list[str],
    messages: MessagesOptions,
    tally: _Tally,
    human: tuple[dict[str, list[Rating]], type[msgspec.Struct]] = ({}, msgspec.Struct),
) -> dict[str, int]:
    """Stream the rows of ``fmt`` into one JSONL file per split; rows per split."""
    for name in order:
        writer.ensure(name)
    for p in data.personas.values():
        tally.models["personas"][p.meta.model] += 1
        if fmt == "spb":
            writer.write(plan.personas.get(p.id, TRAIN) if plan else TRAIN, spb_row(p))
    for eid in data.experiences:
        tally.models["experiences"][data.experiences[eid].meta.model] += 1
    rows_of = conversation_rows(fmt, data, messages) if fmt in CONVERSATION_FORMATS else None
    if rows_of is not None and human[0]:
        rows_of = with_ratings(rows_of, *human)
    for c in data.conversations():
        tally.add(c)
        if rows_of is None:
            continue
        split = plan.chats.get(c.chat_id) if plan else TRAIN
        if split is None:
            continue  # between two sides of the split: left out
        try:
            for row in rows_of(c):
                writer.write(split, row)  # type: ignore[arg-type]
        except MissingReference as exc:
            raise InputError(f"{data.path}: {exc}") from None
    return writer.close()
