"""A conversation as the rating page draws it: the viewer's shapes, blind where asked.

The page draws turns as the viewer does (messages with their times and dates, the state
line hidden until asked for) and the experience and persona cards rendered to HTML by
the viewer's renderer (model text shown as text, never run). What could tell a rater
which run or model wrote a conversation is left out: the model, token usage and, in
A/B mode, the chat and persona ids (their digests differ from run to run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from soc_async.records import Conversation, Experience, Persona, experience_start
from soc_async.view.render import card_html, experience_html

__all__ = ["conversation_payload"]


def _persona(p: Persona | None, pid: str, blind: bool) -> dict[str, Any]:
    if p is None:
        return {"id": "" if blind else pid, "name": "?", "html": "", "facts": []}
    m = p.meta
    facts = [m.age, m.gender, m.subregion or m.region, m.occupation]
    return {
        "id": "" if blind else p.id,
        "name": m.name,
        "facts": [str(f) for f in facts if f not in (None, "")],
        "html": card_html(p.persona_text),
    }


def _experience(e: Experience | None, names: dict[str, str]) -> dict[str, Any] | None:
    if e is None:
        return None
    start = experience_start(e)
    return {
        "html": experience_html(e.experience_text),
        "style": e.style,
        "cadence": e.cadence,
        "opener": names.get(e.opener, ""),
        "start": start or "",
        "events": list(e.instant_events),
    }


def conversation_payload(
    c: Conversation,
    experience: Experience | None,
    personas: Mapping[str, Persona],
    *,
    blind: bool,
) -> dict[str, Any]:
    """What the page needs to draw ``c``: turns as [side, state, event, [[t, d, type,
    text]...]], both persona cards, the experience; no model, no usage."""
    side = {pid: k for k, pid in enumerate(c.persona_ids)}
    people = [_persona(personas.get(pid), pid, blind) for pid in c.persona_ids]
    names = {pid: p["name"] for pid, p in zip(c.persona_ids, people, strict=False)}
    return {
        "id": "" if blind else c.chat_id,
        "style": c.style,
        "cadence": c.cadence,
        "ended_by": c.ended_by,
        "topics": [[t.title, t.turns] for t in c.topics],
        "turns": [
            [
                side.get(t.sender, 0),
                t.state,
                t.instant_event,
                [[m.t, m.d, m.type, m.text] for m in t.messages],
            ]
            for t in c.turns
        ],
        "personas": people,
        "experience": _experience(experience, names),
    }
