"""An independent check of a run directory's records, for the tests of whole runs.

The rules themselves live in ``soc_async.report.rules`` (promoted from this file so that
``soc-async report`` applies them to every dataset): code that re-derives each rule from
the record formats of docs/records.md and never imports the state machine, the parsers
or the clock, so a bug in the code that made a conversation cannot also hide it. This
module adds what a test of a run also wants: every line readable, no id written twice,
no item both finished and failed, and an assertion naming the first broken rule.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import msgspec

from soc_async.records import Conversation, Experience, Persona
from soc_async.report.rules import ChatChecks, check_conversation, check_experience, check_persona


def read_jsonl(path: Path) -> list[dict]:
    """Every line of ``path`` as JSON; fails on a torn or blank line."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path}: last line is torn"
    return [json.loads(line) for line in data.splitlines()]


def check_run_dir(path: Path, *, max_turns: int, gaps: dict | None = None) -> dict[str, int]:
    """Checks every record of a run directory; returns counts per file. The minimum
    turns, overtime and opening window come from the run's config.toml (read as TOML
    here, with the config's defaults); ``max_turns`` must agree with it."""
    chat = {}
    if (path / "config.toml").exists():
        chat = tomllib.loads((path / "config.toml").read_text()).get("chat", {})
    assert chat.get("max_turns", max_turns) == max_turns, (chat, max_turns)
    rules = ChatChecks(
        max_turns=max_turns,
        min_turns=chat.get("min_turns", 3),
        max_overtime_turns=chat.get("max_overtime_turns", 4),
        opening_minutes=chat.get("opening_minutes", 60),
        **({"gaps": gaps} if gaps else {}),
    )
    personas = read_jsonl(path / "personas.jsonl")
    experiences = read_jsonl(path / "experiences.jsonl")
    conversations = read_jsonl(path / "conversations.jsonl")
    failures = read_jsonl(path / "failures.jsonl")
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
    names = {p["id"]: p["meta"]["name"] for p in personas}
    starts = {e["id"]: e["start_date"] for e in experiences if e.get("start_date")}
    times = {e["id"]: e["start_time"] for e in experiences if e.get("start_time")}
    owners = {
        e["id"]: dict(zip(e["instant_events"], e["event_personas"], strict=True))
        for e in experiences
        if e.get("event_personas")
    }
    for p in personas:
        found = check_persona(msgspec.convert(p, Persona))
        assert not found, (p["id"], found)
    for e in experiences:
        found = check_experience(msgspec.convert(e, Experience), names.keys())
        assert not found, (e["id"], found)
    for c in conversations:
        found = check_conversation(
            msgspec.convert(c, Conversation),
            rules,
            persona_ids=names.keys(),
            names=names,
            start_date=starts.get(c["experience_id"]),
            start_time=times.get(c["experience_id"]),
            event_owners=owners.get(c["experience_id"]),
        )
        assert not found, (c["chat_id"], found)
        assert c["usage"]["prompt"] > 0 and c["usage"]["completion"] > 0, c["chat_id"]
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
