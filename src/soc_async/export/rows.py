"""The row of each export format, as a msgspec Struct: the one statement of its schema.

Every field has a fixed type, optional ones are null rather than absent, and what the
records keep in free-key dicts (``retries``) becomes a list of ``{reason, count}``, so
every row of every file has the same keys (docs/export.md describes each field).
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ChatMessage",
    "ChatPart",
    "CountRow",
    "Experience2508",
    "ExperienceMetaRow",
    "ExperienceRow",
    "MessageRow",
    "MessagesRow",
    "Persona2508",
    "PersonaMetaRow",
    "PersonaRow",
    "Soc2508Row",
    "Soc2602Row",
    "SpbRow",
    "TopicRow",
    "TurnRow",
    "UsageRow",
]


class _Row(msgspec.Struct, kw_only=True):
    pass


# ---- shared parts -------------------------------------------------------------------


class PersonaMetaRow(_Row):
    iteration: int
    model: str
    region: str
    subregion: str
    name: str
    gender: str
    age: int
    time_taken: float
    prompt_tokens: int
    completion_tokens: int
    occupation: str | None  # meta.occupation where the run recorded it, else the card's
    band: str | None  # meta.band where the run recorded it


class PersonaRow(_Row):
    id: str
    persona_text: str
    meta: PersonaMetaRow


class TopicRow(_Row):
    title: str
    turns: int
    primary: bool
    description: str


class ExperienceMetaRow(_Row):
    iteration: int
    model: str
    time_taken: float
    region_matched: bool
    style_hint: str | None
    prompt_tokens: int
    completion_tokens: int
    initial_state_derived: bool


class ExperienceRow(_Row):
    id: str
    persona_ids: list[str]
    experience_text: str
    style: str
    cadence: str
    topics: list[TopicRow]
    initial_state: str
    instant_events: list[str]
    opener: str
    start_date: str | None
    start: str | None  # ISO datetime the chat starts at, where the run recorded one
    meta: ExperienceMetaRow


class MessageRow(_Row):
    t: str
    d: str
    type: str
    text: str


class TurnRow(_Row):
    sender: str
    sender_name: str
    state: str
    messages: list[MessageRow]
    instant_event: str | None


class UsageRow(_Row):
    prompt: int
    completion: int
    cached: int


class CountRow(_Row):
    reason: str
    count: int


# ---- soc-2602 -----------------------------------------------------------------------


class Soc2602Row(_Row):
    chat_id: str
    model: str
    style: str
    cadence: str
    ended_by: str
    persona_ids: list[str]  # [opener, other]
    personas: list[PersonaRow]  # the two personas, in persona_ids order
    experience: ExperienceRow
    topics: list[TopicRow]
    turns: list[TurnRow]
    summary: str
    text: str  # the turns as <turn><state>...</state><message t d type>...</message></turn>
    usage: UsageRow
    retries: list[CountRow]


# ---- soc-2508 -----------------------------------------------------------------------


class Persona2508(_Row):
    name: str
    username: str | None
    age: int
    traits: list[str]
    background: str
    chatting_style: str
    model: str
    id: str


class Experience2508(_Row):
    persona1: Persona2508
    persona2: Persona2508
    relationship: str
    situation: str
    topic: str
    id: str


class ChatPart(_Row):
    sender: str
    messages: list[str]


class Soc2508Row(_Row):
    chat_id: str
    experience: Experience2508
    chat_parts: list[ChatPart]
    model: str


# ---- spb ----------------------------------------------------------------------------


class SpbRow(_Row):
    id: str
    name: str
    username: str | None
    age: int
    traits: list[str]
    background: str
    chatting_style: str
    occupation: str | None
    model: str
    persona_text: str
    meta: PersonaMetaRow


# ---- messages -----------------------------------------------------------------------


class ChatMessage(_Row):
    role: str  # "system" | "user" | "assistant"
    content: str


class MessagesRow(_Row):
    id: str  # "<chat_id>:<side>"
    chat_id: str
    side: str  # "opener" | "other": which persona is the assistant
    persona_id: str
    persona_name: str
    model: str
    messages: list[ChatMessage]
