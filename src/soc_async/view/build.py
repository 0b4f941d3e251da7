"""The viewer's data: a run directory as small JavaScript files the static page loads.

The page (static/) opens from file://, where a browser refuses ``fetch``; so every data
file is a script that hands its payload to ``SOC_DATA(kind, number, payload)``, loaded
with a ``<script>`` tag on demand. Nothing is one huge file:

    data/meta.js         the run: counts, the value lists the filters offer, chunk counts,
                         the first sort key of each index chunk (for deep links)
    data/i/NNNNN.js      the list: INDEX_CHUNK rows each, sorted by chat index; a row is
                         a compact array (see ROW_FIELDS), strings of the filters as
                         numbers into meta's value lists
    data/c/NNNNN.js      CONV_CHUNK conversations (file order) and their experiences, the
                         card rendered to HTML; failed chats too, with their reason
    data/p/NNNNN.js      PERSONA_CHUNK personas with their cards rendered to HTML
    data/f/NNNNN.js      the failures of every stage

A page of the list needs meta.js and the first index chunk; a conversation one
conversation chunk and one or two persona chunks. Memory while building is the index
rows, the personas and experiences, and one chunk.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from soc_async.errors import InputError
from soc_async.records import Conversation, Experience, Failure, Persona, experience_start, id_index
from soc_async.store.rundata import RunData
from soc_async.timestamps import utc_now
from soc_async.view.render import card_html, experience_html

__all__ = [
    "CONV_CHUNK",
    "INDEX_CHUNK",
    "PERSONA_CHUNK",
    "ROW_FIELDS",
    "SiteSummary",
    "build_site",
]

INDEX_CHUNK = 5000
CONV_CHUNK = 50
PERSONA_CHUNK = 200
FAILURE_CHUNK = 5000
ASSETS = ("index.html", "app.js", "app.css")
# The fields of an index row, in order (static/app.js reads them by these positions).
ROW_FIELDS = (
    "id", "chunk", "slot", "failed", "style", "cadence", "model", "ended", "region_a",
    "region_b", "name_a", "name_b", "turns", "messages", "day", "search", "reason", "key",
)  # fmt: skip
_CHUNK, _SLOT, _KEY = (ROW_FIELDS.index(f) for f in ("chunk", "slot", "key"))
_SEARCH_CHARS = 400  # first messages kept in a row's search text


class SiteSummary(msgspec.Struct, kw_only=True):
    out: str
    conversations: int
    failed_chats: int
    personas: int
    files: int
    bytes: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.out}/index.html: {self.conversations:,} conversations, "
            f"{self.failed_chats:,} failed chats, {self.personas:,} personas in "
            f"{self.files:,} files ({self.bytes / 1e6:,.1f} MB) in {self.seconds:.1f}s"
        )


class _Values:
    """A filter's value list: each distinct string gets the next number."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, value: str | None) -> int:
        key = value or ""
        if key not in self.index:
            self.index[key] = len(self.index)
        return self.index[key]

    def values(self) -> list[str]:
        return list(self.index)


class _Writer:
    """Writes ``data/<kind>/NNNNN.js`` files and counts them."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.files = 0
        self.bytes = 0
        self._encoder = msgspec.json.Encoder()

    def write(self, kind: str, number: int | None, payload: Any) -> None:
        body = self._encoder.encode(payload).decode()
        # U+2028/9 end a line inside a JS string literal in older engines; escape them.
        body = body.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        name = f"{kind}.js" if number is None else f"{kind}/{number:05d}.js"
        text = f"SOC_DATA({self._encoder.encode(kind).decode()},{number or 0},{body});\n"
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.files += 1
        self.bytes += len(text.encode())


def _sort_key(chat_id: str) -> int:
    try:
        return id_index(chat_id)
    except (IndexError, ValueError):
        return -1


def _persona_entry(p: Persona) -> dict[str, Any]:
    m = p.meta
    return {
        "name": m.name,
        "age": m.age,
        "gender": m.gender,
        "region": m.region,
        "subregion": m.subregion,
        "occupation": m.occupation or None,
        "band": m.band or None,
        "model": m.model,
        "html": card_html(p.persona_text),
    }


def _experience_entry(e: Experience) -> dict[str, Any]:
    return {
        "html": experience_html(e.experience_text),
        "style": e.style,
        "cadence": e.cadence,
        "opener": e.opener,
        "persona_ids": e.persona_ids,
        "initial_state": e.initial_state,
        "events": e.instant_events,
        "region_matched": e.meta.region_matched,
        "style_hint": e.meta.style_hint,
        "model": e.meta.model,
        "start": experience_start(e),
    }


def _failure_entry(f: Failure) -> dict[str, Any]:
    return {
        "reason": f.reason,
        "detail": f.detail,
        "attempts": f.attempts,
        "retries": f.retries,
        "stage": f.stage,
    }


class _Site:
    """The state of one build: value lists, persona chunk numbers, the open chunk."""

    def __init__(self, data: RunData, writer: _Writer) -> None:
        self.data = data
        self.writer = writer
        self.values = {
            k: _Values() for k in ("style", "cadence", "model", "ended", "region", "reason")
        }
        self.persona_chunk: dict[str, int] = {}
        self.rows: list[list[Any]] = []
        self.chunk: list[dict[str, Any]] = []
        self.chunk_exps: dict[str, dict[str, Any]] = {}
        self.chunks = 0

    def personas(self) -> None:
        batch: dict[str, Any] = {}
        for k, p in enumerate(self.data.personas.values()):
            self.persona_chunk[p.id] = k // PERSONA_CHUNK
            batch[p.id] = _persona_entry(p)
            if len(batch) == PERSONA_CHUNK:
                self.writer.write("p", k // PERSONA_CHUNK, batch)
                batch = {}
        if batch:
            self.writer.write("p", len(self.data.personas) // PERSONA_CHUNK, batch)

    def _person(self, pid: str) -> tuple[str, str]:
        p = self.data.personas.get(pid)
        return (p.meta.name, p.meta.region) if p else (pid, "")

    def add(self, entry: dict[str, Any], row: list[Any], exp: Experience | None) -> None:
        if exp is not None and exp.id not in self.chunk_exps:
            self.chunk_exps[exp.id] = _experience_entry(exp)
        row[_CHUNK], row[_SLOT] = self.chunks, len(self.chunk)
        self.chunk.append(entry)
        self.rows.append(row)
        if len(self.chunk) == CONV_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.chunk:
            self.writer.write("c", self.chunks, {"convs": self.chunk, "exps": self.chunk_exps})
            self.chunks += 1
            self.chunk, self.chunk_exps = [], {}

    def _row(
        self, chat_id: str, pids: list[str], failed: bool, style: str, cadence: str, model: str,
        ended: str, turns: int, messages: int, day: str, text: str, reason: str,
    ) -> list[Any]:  # fmt: skip
        """An index row: the fields of ROW_FIELDS, in that order."""
        (name_a, region_a), (name_b, region_b) = (self._person(p) for p in (*pids, "", "")[:2])
        v = self.values
        fields = {
            "id": chat_id,
            "chunk": 0,  # set by add()
            "slot": 0,
            "failed": int(failed),
            "style": v["style"](style),
            "cadence": v["cadence"](cadence),
            "model": v["model"](model),
            "ended": v["ended"](ended),
            "region_a": v["region"](region_a),
            "region_b": v["region"](region_b),
            "name_a": name_a,
            "name_b": name_b,
            "turns": turns,
            "messages": messages,
            "day": day,
            "search": " ".join((chat_id, name_a, name_b, text)).lower(),
            "reason": v["reason"](reason),
            "key": _sort_key(chat_id),
        }
        return [fields[f] for f in ROW_FIELDS]

    def conversation(self, c: Conversation) -> None:
        exp = self.data.experiences.get(c.experience_id)
        side = {pid: k for k, pid in enumerate(c.persona_ids)}
        turns = [
            [
                side.get(t.sender, 0),
                t.state,
                t.instant_event,
                [[m.t, m.d, m.type, m.text] for m in t.messages],
            ]
            for t in c.turns
        ]
        entry = {
            "id": c.chat_id,
            "exp": c.experience_id,
            "p": [[pid, self.persona_chunk.get(pid, -1)] for pid in c.persona_ids],
            "style": c.style,
            "cadence": c.cadence,
            "model": c.model,
            "ended_by": c.ended_by,
            "summary": c.summary,
            "topics": [[t.title, t.turns, t.primary] for t in c.topics],
            "turns": turns,
            "usage": [c.usage.prompt, c.usage.completion, c.usage.cached],
            "retries": c.retries,
            "fail": None,
        }
        topics = " ".join(t.title for t in c.topics)
        first = " ".join(m.text for t in c.turns[:3] for m in t.messages)[:_SEARCH_CHARS]
        day = c.turns[0].messages[0].d if c.turns and c.turns[0].messages else ""
        messages = sum(len(t.messages) for t in c.turns)
        row = self._row(
            c.chat_id, c.persona_ids, False, c.style, c.cadence, c.model, c.ended_by,
            len(c.turns), messages, day, f"{topics} {first}", "",
        )  # fmt: skip
        self.add(entry, row, exp)

    def failed_chat(self, f: Failure) -> None:
        exp = self.data.experience_of_chat(f.id)
        pids = []
        if exp is not None:
            pids = [exp.opener, *(p for p in exp.persona_ids if p != exp.opener)]
        entry = {
            "id": f.id,
            "exp": exp.id if exp else None,
            "p": [[pid, self.persona_chunk.get(pid, -1)] for pid in pids],
            "style": exp.style if exp else "",
            "cadence": exp.cadence if exp else "",
            "model": exp.meta.model if exp else "",
            "ended_by": "",
            "summary": "",
            "topics": [[t.title, t.turns, t.primary] for t in exp.topics] if exp else [],
            "turns": [],
            "usage": [0, 0, 0],
            "retries": f.retries,
            "fail": _failure_entry(f),
        }
        topics = " ".join(t.title for t in exp.topics) if exp else ""
        row = self._row(
            f.id, pids, True, entry["style"], entry["cadence"], entry["model"], "failed",
            0, 0, "", f"{topics} {f.reason} {f.detail}", f.reason,
        )  # fmt: skip
        self.add(entry, row, exp)


def _assets(out: Path) -> None:
    static = resources.files("soc_async.view") / "static"
    for name in ASSETS:
        (out / name).write_bytes((static / name).read_bytes())


def build_site(
    run_dir: str | Path, out: str | Path, *, on_progress: Callable[[int], None] | None = None
) -> SiteSummary:
    """Write the viewer of ``run_dir`` into ``out`` (its ``data/`` is replaced).

    Raises RunDirError for a directory that is not a run, InputError for an ``out`` that
    is a file.
    """
    started = time.perf_counter()
    data = RunData(run_dir)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory (--out wants a directory)")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "data", ignore_errors=True)
    _assets(out_dir)
    writer = _Writer(out_dir / "data")
    site = _Site(data, writer)
    site.personas()
    n = 0
    for c in data.conversations():
        site.conversation(c)
        n += 1
        if on_progress is not None and n % 10_000 == 0:
            on_progress(n)
    chat_failures = data.chat_failures()
    for f in chat_failures:
        site.failed_chat(f)
    site.flush()
    rows = sorted(site.rows, key=lambda r: (r[_KEY], r[0]))
    for k in range(0, len(rows), INDEX_CHUNK):
        writer.write("i", k // INDEX_CHUNK, rows[k : k + INDEX_CHUNK])
    failures = [[f.id, f.stage, f.reason, f.attempts, f.detail] for f in data.failures]
    for k in range(0, len(failures), FAILURE_CHUNK):
        writer.write("f", k // FAILURE_CHUNK, failures[k : k + FAILURE_CHUNK])
    stages = {s: 0 for s in ("personas", "experiences", "chats")}
    for f in data.failures:
        stages[f.stage] = stages.get(f.stage, 0) + 1
    meta = {
        "run": data.path.resolve().name,
        "path": str(data.path),
        "seed": data.seed,
        "counts": {
            "conversations": n,
            "failed_chats": len(chat_failures),
            "personas": len(data.personas),
            "experiences": len(data.experiences),
            "failures": stages,
        },
        "rows": len(rows),
        "fields": ROW_FIELDS,
        "values": {k: v.values() for k, v in site.values.items()},
        "index_chunks": (len(rows) + INDEX_CHUNK - 1) // INDEX_CHUNK,
        "index_first": [rows[k][_KEY] for k in range(0, len(rows), INDEX_CHUNK)],
        "conv_chunks": site.chunks,
        "failure_chunks": (len(failures) + FAILURE_CHUNK - 1) // FAILURE_CHUNK,
        "failures": len(failures),
        "built": utc_now(),
    }
    writer.write("meta", None, meta)
    return SiteSummary(
        out=str(out_dir),
        conversations=n,
        failed_chats=len(chat_failures),
        personas=len(data.personas),
        files=writer.files + len(ASSETS),
        bytes=writer.bytes,
        seconds=time.perf_counter() - started,
    )
