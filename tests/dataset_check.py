"""An independent check of a run directory's records, written apart from the package.

It re-derives every rule from the record formats of docs/records.md with its own small
code (it never imports the state machine, the parsers or the clock), so a bug in the
code that made a conversation cannot also hide it here. Tests of real and fake runs use
it on every saved record.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date
from pathlib import Path

TYPES = {"text", "image", "audio", "video", "sticker"}
SECTIONS = [
    "Basic Information",
    "Physical & Lifestyle",
    "Personality Overview",
    "Core Traits",
    "Emotional Profile",
    "Relationships",
    "Values",
    "Motivations & Fears",
    "Behavioral Patterns",
    "Communication Style",
    "Example Messages",
    "Summary",
]
DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def read_jsonl(path: Path) -> list[dict]:
    """Every line of ``path`` as JSON; fails on a torn or blank line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path}: last line is torn"
    return [json.loads(line) for line in data.splitlines()]


def _minutes(stamp_d: str, stamp_t: str, prev: int | None) -> int:
    """Minutes since an arbitrary epoch; a day-month before the previous one is next year."""
    day, month = (int(x) for x in stamp_d.split("."))
    hour, minute = (int(x) for x in stamp_t.split(":"))
    assert 1 <= month <= 12 and 1 <= day <= DAYS_IN_MONTH[month - 1], (stamp_d, stamp_t)
    assert 0 <= hour < 24 and 0 <= minute < 60, (stamp_d, stamp_t)
    day_of_year = sum(DAYS_IN_MONTH[: month - 1]) + day - 1
    value = (day_of_year * 24 + hour) * 60 + minute
    if prev is not None:
        year = 366 * 24 * 60
        while value < prev - 60 * 24:  # more than a day back: the calendar rolled over
            value += year
    return value


def expected_states(topics: list[dict], turns: int) -> list[str]:
    """The state lines a roadmap gives for ``turns`` turns: N counts down to 0 per slot."""
    lines = []
    slots = [(t["title"], t["turns"]) for t in topics] or [("free talk", 10**6)]
    for i, (title, budget) in enumerate(slots):
        nxt = slots[i + 1][0] if i + 1 < len(slots) else "end"
        for left in range(budget - 1, -1, -1):
            lines.append(f"{title}; {left} {'turn' if left == 1 else 'turns'} remaining; {nxt}")
    last_title = slots[-1][0]
    while len(lines) < turns:
        lines.append(f"{last_title}; 0 turns remaining; end")
    return lines[:turns]


def check_conversation(
    c: dict,
    persona_ids: set[str],
    max_turns: int,
    gaps: dict,
    *,
    min_turns: int = 1,
    overtime: int | None = None,
    names: dict[str, str] | None = None,
) -> None:
    """Raises AssertionError naming the first rule ``c`` breaks."""
    cid = c["chat_id"]
    turns = c["turns"]
    min_turns = min(min_turns, max_turns)
    assert min_turns <= len(turns) <= max_turns, (cid, len(turns))
    opener, other = c["persona_ids"]
    assert opener != other and {opener, other} <= persona_ids, cid
    for k, turn in enumerate(turns):
        assert turn["sender"] == (opener if k % 2 == 0 else other), (cid, k, "sender")
    norm = [" ".join(t["state"].split()).lower() for t in turns]
    expected = [" ".join(s.split()).lower() for s in expected_states(c["topics"], len(turns))]
    assert norm == expected, (cid, norm, expected)
    budget = sum(t["turns"] for t in c["topics"])
    ending = c["style"] in ("structured", "semi-structured")
    stop = max(budget + overtime, min_turns) if ending and overtime is not None else None
    if c["ended_by"] == "exhausted":
        assert ending, cid
        assert len(turns) >= budget, (cid, "ended before every slot was spent")
    elif c["ended_by"] == "overtime":
        assert ending and stop is not None, (cid, "overtime without an overtime limit")
        assert len(turns) == stop < max_turns, (cid, len(turns), stop)
    else:
        assert c["ended_by"] == "max_turns", cid
        limit = max_turns if c["style"] != "freeform" or not c["topics"] else min(max_turns, budget)
        assert len(turns) == limit, (cid, len(turns), limit)
        if stop is not None:
            assert max_turns <= stop, (cid, "should have ended as overtime", stop)
    if names:
        check_events(c, names)
    _gap_min, gap_max = gaps[c["cadence"]]
    prev = None
    for k, turn in enumerate(turns):
        assert 1 <= len(turn["messages"]) <= 3, (cid, k, "message count")
        for m in turn["messages"]:
            assert m["type"] in TYPES, (cid, k, m["type"])
            text = m["text"].strip()
            assert text, (cid, k, "empty text")
            assert not re.search(r"</?[A-Za-z]", text), (cid, k, "leftover tag")
            now = _minutes(m["d"], m["t"], prev)
            if prev is not None:
                assert now >= prev, (cid, k, "time went backwards", m)
                assert now - prev <= gap_max, (cid, k, "gap too long", m)
            prev = now
    assert c["usage"]["prompt"] > 0 and c["usage"]["completion"] > 0, cid


def _first_word(name: str) -> str:
    return name.split()[0] if name.split() else name


def _names_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w'’-]){re.escape(word)}(?![\w-])", text) is not None


def check_events(c: dict, names: dict[str, str]) -> None:
    """No turn's private event names the other person without naming the speaker (by the
    first word of their names, as the fake model writes them)."""
    opener, other = c["persona_ids"]
    for k, turn in enumerate(c["turns"]):
        event = turn["instant_event"]
        if event is None:
            continue
        speaker = turn["sender"]
        listener = other if speaker == opener else opener
        mine = _names_word(event, _first_word(names[speaker]))
        theirs = _names_word(event, _first_word(names[listener]))
        assert mine or not theirs, (c["chat_id"], k, "event of the other person", event)


def check_persona(p: dict) -> None:
    text = p["persona_text"]
    assert "<character>" in text and "</character>" in text, p["id"]
    positions = [text.find(f"**{s}**") for s in SECTIONS]
    assert all(pos >= 0 for pos in positions), (p["id"], "missing section")
    assert positions == sorted(positions), (p["id"], "sections out of order")
    assert p["meta"]["name"] in text and str(p["meta"]["age"]) in text, p["id"]


def check_experience(e: dict, persona_ids: set[str]) -> None:
    a, b = e["persona_ids"]
    assert a != b and {a, b} <= persona_ids, e["id"]
    assert e["opener"] in (a, b), e["id"]
    assert e["style"] in ("freeform", "semi-structured", "structured"), e["id"]
    assert e["cadence"] in ("realtime", "delayed", "async"), e["id"]
    assert all(t["turns"] >= 1 for t in e["topics"]), e["id"]
    if e["style"] != "freeform":
        assert sum(t["primary"] for t in e["topics"]) == 1, e["id"]
    assert 2 <= len(e["instant_events"]) <= 5, e["id"]
    owners = e.get("event_personas", [])
    assert not owners or len(owners) == len(e["instant_events"]), e["id"]
    assert all(o is None or o in (a, b) for o in owners), e["id"]
    if e.get("start_time") is not None:
        assert re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", e["start_time"]), e["id"]
        date.fromisoformat(e["start_date"])


def check_run_dir(path: Path, *, max_turns: int, gaps: dict | None = None) -> dict[str, int]:
    """Checks every record of a run directory; returns counts per file.

    The minimum turns and the overtime limit are read from the run's config.toml (TOML,
    with this module's own defaults when a key is absent), ``max_turns`` must match it.
    """
    gaps = gaps or {"realtime": [0, 45], "delayed": [0, 360], "async": [0, 4320]}
    chat = {}
    if (path / "config.toml").exists():
        chat = tomllib.loads((path / "config.toml").read_text()).get("chat", {})
    assert chat.get("max_turns", max_turns) == max_turns, (chat, max_turns)
    min_turns, overtime = chat.get("min_turns", 3), chat.get("max_overtime_turns", 4)
    personas = read_jsonl(path / "personas.jsonl")
    experiences = read_jsonl(path / "experiences.jsonl")
    conversations = read_jsonl(path / "conversations.jsonl")
    failures = read_jsonl(path / "failures.jsonl")
    persona_ids = {p["id"] for p in personas}
    names = {p["id"]: p["meta"]["name"] for p in personas}
    for records, key in (
        (personas, "id"),
        (experiences, "id"),
        (conversations, "chat_id"),
        (failures, "id"),
    ):
        ids = [r[key] for r in records]
        assert len(ids) == len(set(ids)), "an id is written twice"
    done = {r["id"] for r in personas + experiences} | {c["chat_id"] for c in conversations}
    assert not done & {f["id"] for f in failures}, "an item is both finished and failed"
    for p in personas:
        check_persona(p)
    for e in experiences:
        check_experience(e, persona_ids)
    for c in conversations:
        check_conversation(
            c, persona_ids, max_turns, gaps, min_turns=min_turns, overtime=overtime, names=names
        )
    for f in failures:
        # A chat refused before its first call (its plan is under chat.min_turns) made none.
        assert f["reason"] and f["stage"], f
        assert f["attempts"] >= (0 if f["reason"] == "too_short" else 1), f
    return {
        "personas": len(personas),
        "experiences": len(experiences),
        "conversations": len(conversations),
        "failures": len(failures),
    }
