"""The dataset's records: what each JSONL line of a run directory holds.

Every record is a msgspec Struct tagged by kind (the ``kind`` field of its JSON line), so
one decoder reads any line of any file. New fields go last with defaults; an existing
field is never retyped, so old run directories stay readable (docs/records.md).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

Style = Literal["freeform", "semi-structured", "structured"]
Cadence = Literal["realtime", "delayed", "async"]
MessageType = Literal["text", "image", "audio", "video", "sticker"]
EndedBy = Literal["exhausted", "max_turns", "overtime"]
Stage = Literal["personas", "experiences", "chats"]

STYLES: tuple[str, ...] = ("freeform", "semi-structured", "structured")
CADENCES: tuple[str, ...] = ("realtime", "delayed", "async")
MESSAGE_TYPES: tuple[str, ...] = ("text", "image", "audio", "video", "sticker")
STAGES: tuple[str, ...] = ("personas", "experiences", "chats")

_ID_PREFIX = {"personas": "p", "experiences": "e", "chats": "c"}


def make_id(seed: int, stage: str, index: int) -> str:
    """The id of the ``index``-th item of ``stage`` in a run seeded with ``seed``.

    Deterministic so that a resumed run, or shard ``i/n`` of a job array, names the same
    item the same way and never writes it twice.
    """
    digest = hashlib.blake2b(f"{seed}:{stage}:{index}".encode(), digest_size=8).hexdigest()
    return f"{_ID_PREFIX[stage]}-{index:07d}-{digest}"


def id_index(item_id: str) -> int:
    """The index encoded in an id made by :func:`make_id`."""
    return int(item_id.split("-")[1])


class Usage(msgspec.Struct, kw_only=True):
    """Token counts summed over every call an item took, retries included."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0  # prompt tokens served from vLLM's prefix cache, when it reports them

    def add(self, other: Usage) -> None:
        self.prompt += other.prompt
        self.completion += other.completion
        self.cached += other.cached


class PersonaSample(msgspec.Struct, kw_only=True, frozen=True):
    """The facts a persona card must state; the prompt, grammar and validator use them."""

    region: str  # "East Asia"
    country: str  # "China"
    subregion: str  # "Wuhan, Hubei, China": the card's Location, word for word
    gender: str  # "female" | "male"
    first_name: str  # given name
    last_name: str  # family name
    name: str  # display name, in the order the country writes it in English
    age: int
    locale: str  # the place's locale tag, e.g. "zh_CN"
    occupation: str = ""  # a job from the locale's list (Faker), or "student"
    band: str = ""  # life circumstance / socioeconomic band, a key of persona.bands
    temperament: str = ""  # a row of archetypes.temperaments ("" when not drawn)
    coping: str = ""  # how they handle stress: a row of archetypes.coping


class PersonaMeta(msgspec.Struct, kw_only=True):
    iteration: int
    model: str
    region: str
    subregion: str
    name: str
    gender: str
    age: int
    time_taken: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    occupation: str = ""  # as sampled and given to the prompt ("" in older runs)
    band: str = ""  # life circumstance / socioeconomic band as sampled ("" in older runs)
    temperament: str = ""  # as drawn and given to the prompt ("" in older runs)
    coping: str = ""  # way of coping with stress, as drawn and given to the prompt
    archetype_hint: str = ""  # the coping style the monitor warned off, if it did


class Persona(msgspec.Struct, kw_only=True, tag="persona", tag_field="kind"):
    """A `<character>` card and the sample it was written from."""

    id: str
    persona_text: str
    meta: PersonaMeta


class TopicSlot(msgspec.Struct, kw_only=True):
    """One topic of an experience's roadmap and its turn budget."""

    title: str
    turns: int
    primary: bool = False
    description: str = ""


class ExperienceMeta(msgspec.Struct, kw_only=True):
    iteration: int
    model: str
    time_taken: float
    region_matched: bool = False
    style_hint: str | None = None  # the style the monitor asked for, if it asked
    prompt_tokens: int = 0
    completion_tokens: int = 0
    initial_state_derived: bool = False  # the model's state line disagreed; derived instead


class Experience(msgspec.Struct, kw_only=True, tag="experience", tag_field="kind"):
    """Why two personas talk today, parsed from an `<experience>` text."""

    id: str
    persona_ids: list[str]  # [first, second] as paired; ``opener`` says who speaks first
    experience_text: str
    style: Style
    cadence: Cadence
    topics: list[TopicSlot]
    initial_state: str
    instant_events: list[str]
    opener: str  # persona id of the one who sends the first turn
    meta: ExperienceMeta
    start_date: str | None = None  # ISO date the chat starts on; None: the config's
    start_time: str | None = None  # "HH:MM" the chat opens at; None: any time that day
    # Who each instant event happens to, in order: a persona id, or None when the event
    # names neither (or both) of them and may go to either speaker.
    event_personas: list[str | None] = []


def experience_start(e: Experience) -> str | None:
    """When the chat of ``e`` starts, as ISO: ``2026-03-15T09:30`` with its time, the
    date alone without one, None for a record that set neither (the config's date)."""
    if e.start_date and e.start_time:
        return f"{e.start_date}T{e.start_time}"
    return e.start_date


class Message(msgspec.Struct, kw_only=True):
    t: str  # "HH:MM"
    d: str  # "DD.MM"
    type: MessageType
    text: str


class Turn(msgspec.Struct, kw_only=True):
    sender: str  # persona id
    state: str  # "topic; N turns remaining; next"
    messages: list[Message]
    instant_event: str | None = None


class Conversation(msgspec.Struct, kw_only=True, tag="conversation", tag_field="kind"):
    """A finished chat: every turn passed the state machine's rules."""

    chat_id: str
    experience_id: str
    persona_ids: list[str]  # [opener, other]
    style: Style
    cadence: Cadence
    topics: list[TopicSlot]
    turns: list[Turn]
    summary: str
    ended_by: EndedBy
    model: str
    usage: Usage
    retries: dict[str, int] = {}  # rule violations corrected along the way, by reason


class Failure(msgspec.Struct, kw_only=True, tag="failure", tag_field="kind"):
    """An item that could not be finished, with why; never written as if complete."""

    id: str
    stage: Stage
    reason: str  # a short stable code: "retries_exhausted:clock_backwards", "http_400", ...
    attempts: int
    detail: str = ""
    retries: dict[str, int] = {}


Record = Persona | Experience | Conversation | Failure

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Record] = msgspec.json.Decoder(Record)


def encode_line(record: Record) -> bytes:
    """One JSONL line, newline included."""
    return _encoder.encode(record) + b"\n"


def decode_line(line: bytes | str) -> Record:
    """The record on one JSONL line; raises ``msgspec.DecodeError`` or ``ValidationError``."""
    return _decoder.decode(line)


def record_id(record: Record) -> str:
    """The id a record is known by in its file."""
    return record.chat_id if isinstance(record, Conversation) else record.id
