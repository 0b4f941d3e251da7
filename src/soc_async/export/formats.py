"""Records into rows: one builder per export format (pure; no files).

``soc-2602``, ``soc-2508`` and ``messages`` rows are built per conversation from the
conversation and what it references (its experience, its two personas, looked up by
id in a :class:`Lookup`); ``spb`` rows per persona. The builders never see a dict with
free keys: their output types (rows.py) fix the schema.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Protocol

from soc_async.export.extract import experience_fields, persona_fields
from soc_async.export.messages import MessagesOptions, conversation_samples
from soc_async.export.rows import (
    ChatPart,
    CountRow,
    Experience2508,
    ExperienceMetaRow,
    ExperienceRow,
    MessageRow,
    MessagesRow,
    Persona2508,
    PersonaMetaRow,
    PersonaRow,
    Soc2508Row,
    Soc2602Row,
    SpbRow,
    TopicRow,
    TurnRow,
    UsageRow,
)
from soc_async.formats.clock import minutes_between, parse_stamp
from soc_async.formats.turn import ENDING_TAG
from soc_async.records import Conversation, Experience, Persona, TopicSlot, Turn, experience_start

__all__ = [
    "CONVERSATION_FORMATS",
    "DELAY_MIN_MINUTES",
    "FORMATS",
    "Lookup",
    "persona_row",
    "render_turns",
    "soc2508_row",
    "soc2602_row",
    "spb_row",
]

FORMATS = ("soc-2602", "soc-2508", "spb", "messages")
CONVERSATION_FORMATS = ("soc-2602", "soc-2508", "messages")
DELAY_MIN_MINUTES = 5  # soc-2508: a gap this long before a turn becomes <delay minutes="N"/>
_EPOCH = datetime(2001, 1, 1)  # the year a chat's first stamp is read in (only gaps matter)


class Lookup(Protocol):
    """What a conversation references, by id (RunData satisfies it)."""

    personas: dict[str, Persona]
    experiences: Mapping[str, Experience]


class MissingReference(LookupError):
    """A conversation names a persona or experience the run directory does not hold."""


def _persona(lookup: Lookup, pid: str, chat_id: str) -> Persona:
    try:
        return lookup.personas[pid]
    except KeyError:
        raise MissingReference(f"{chat_id}: persona {pid} is not in personas.jsonl") from None


def _experience(lookup: Lookup, eid: str, chat_id: str) -> Experience:
    try:
        return lookup.experiences[eid]
    except KeyError:
        raise MissingReference(f"{chat_id}: experience {eid} not in experiences.jsonl") from None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def persona_meta_row(p: Persona) -> PersonaMetaRow:
    m = p.meta
    return PersonaMetaRow(
        iteration=m.iteration,
        model=m.model,
        region=m.region,
        subregion=m.subregion,
        name=m.name,
        gender=m.gender,
        age=m.age,
        time_taken=float(m.time_taken),
        prompt_tokens=m.prompt_tokens,
        completion_tokens=m.completion_tokens,
        occupation=m.occupation or persona_fields(p).occupation,
        band=m.band or None,
    )


def persona_row(p: Persona) -> PersonaRow:
    return PersonaRow(id=p.id, persona_text=p.persona_text, meta=persona_meta_row(p))


def _topics(topics: list[TopicSlot]) -> list[TopicRow]:
    return [
        TopicRow(title=t.title, turns=t.turns, primary=t.primary, description=t.description)
        for t in topics
    ]


def experience_row(e: Experience) -> ExperienceRow:
    m = e.meta
    return ExperienceRow(
        id=e.id,
        persona_ids=list(e.persona_ids),
        experience_text=e.experience_text,
        style=e.style,
        cadence=e.cadence,
        topics=_topics(e.topics),
        initial_state=e.initial_state,
        instant_events=list(e.instant_events),
        opener=e.opener,
        start_date=e.start_date,
        start=experience_start(e),
        meta=ExperienceMetaRow(
            iteration=m.iteration,
            model=m.model,
            time_taken=float(m.time_taken),
            region_matched=m.region_matched,
            style_hint=m.style_hint,
            prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens,
            initial_state_derived=m.initial_state_derived,
        ),
    )


def render_turns(turns: list[Turn], ended_by: str) -> str:
    """The turns as the method writes them: ``<turn><state>..</state><message t d type>
    ..</message></turn>``, the ending tag in the last turn's state when the topics were
    exhausted. Message text is written literally, as the model wrote it."""
    out = []
    for k, turn in enumerate(turns):
        lines = ["<turn>", "<state>", turn.state]
        if ended_by == "exhausted" and k == len(turns) - 1:
            lines.append(f"<{ENDING_TAG}/>")
        lines.append("</state>")
        lines += [
            f'<message t="{m.t}" d="{m.d}" type="{m.type}">{m.text}</message>'
            for m in turn.messages
        ]
        lines.append("</turn>")
        out.append("\n".join(lines))
    return "\n".join(out)


def soc2602_row(c: Conversation, lookup: Lookup) -> Soc2602Row:
    personas = [_persona(lookup, pid, c.chat_id) for pid in c.persona_ids]
    names = {p.id: p.meta.name for p in personas}
    return Soc2602Row(
        chat_id=c.chat_id,
        model=c.model,
        style=c.style,
        cadence=c.cadence,
        ended_by=c.ended_by,
        persona_ids=list(c.persona_ids),
        personas=[persona_row(p) for p in personas],
        experience=experience_row(_experience(lookup, c.experience_id, c.chat_id)),
        topics=_topics(c.topics),
        turns=[
            TurnRow(
                sender=t.sender,
                sender_name=names.get(t.sender, ""),
                state=t.state,
                messages=[MessageRow(t=m.t, d=m.d, type=m.type, text=m.text) for m in t.messages],
                instant_event=t.instant_event,
            )
            for t in c.turns
        ],
        summary=c.summary,
        text=render_turns(c.turns, c.ended_by),
        usage=UsageRow(prompt=c.usage.prompt, completion=c.usage.completion, cached=c.usage.cached),
        retries=[CountRow(reason=k, count=v) for k, v in sorted(c.retries.items())],
    )


def persona2508(p: Persona) -> Persona2508:
    f = persona_fields(p)
    return Persona2508(
        name=f.name,
        username=f.username,
        age=f.age,
        traits=list(f.traits),
        background=f.background,
        chatting_style=f.chatting_style,
        model=p.meta.model,
        id=p.id,
    )


def _media(type_: str, text: str) -> str:
    return text if type_ == "text" else f"<{type_}>{text}</{type_}>"


def chat_parts(turns: list[Turn], ended_by: str) -> list[ChatPart]:
    """SOC-2508 chat parts: a turn's messages as strings, media as ``<type>..</type>``,
    a gap of DELAY_MIN_MINUTES or more before a turn as a leading ``<delay minutes="N"/>``,
    and ``<end/>`` after the last message of a chat whose topics were exhausted."""
    parts = []
    clock: datetime | None = None
    for turn in turns:
        messages = []
        for k, m in enumerate(turn.messages):
            stamp = parse_stamp(m.t, m.d, clock or _EPOCH)
            if stamp is not None:
                if k == 0 and clock is not None:
                    gap = minutes_between(clock, stamp)
                    if gap >= DELAY_MIN_MINUTES:
                        messages.append(f'<delay minutes="{gap}"/>')
                clock = stamp
            messages.append(_media(m.type, m.text))
        parts.append(ChatPart(sender=turn.sender, messages=messages))
    if parts and ended_by == "exhausted":
        parts[-1].messages.append("<end/>")
    return parts


def soc2508_row(
    c: Conversation, lookup: Lookup, cache: dict[str, Persona2508] | None = None
) -> Soc2508Row:
    """The SOC-2508 row of ``c``; ``cache`` keeps each persona's extracted fields."""
    exp = _experience(lookup, c.experience_id, c.chat_id)
    cache = {} if cache is None else cache
    first, second = (
        cache.get(pid) or cache.setdefault(pid, persona2508(_persona(lookup, pid, c.chat_id)))
        for pid in exp.persona_ids
    )
    relationship, situation, topic = experience_fields(exp)
    return Soc2508Row(
        chat_id=c.chat_id,
        experience=Experience2508(
            persona1=first,
            persona2=second,
            relationship=relationship,
            situation=situation,
            topic=topic,
            id=exp.id,
        ),
        chat_parts=chat_parts(c.turns, c.ended_by),
        model=c.model,
    )


def spb_row(p: Persona) -> SpbRow:
    f = persona_fields(p)
    return SpbRow(
        id=p.id,
        name=f.name,
        username=f.username,
        age=f.age,
        traits=list(f.traits),
        background=f.background,
        chatting_style=f.chatting_style,
        occupation=f.occupation,
        model=p.meta.model,
        persona_text=p.persona_text,
        meta=persona_meta_row(p),
    )


def conversation_rows(
    fmt: str, lookup: Lookup, messages: MessagesOptions
) -> Callable[[Conversation], Iterator[object]]:
    """The function turning one conversation into its rows in format ``fmt``."""
    if fmt == "soc-2602":
        return lambda c: iter((soc2602_row(c, lookup),))
    if fmt == "soc-2508":
        cache: dict[str, Persona2508] = {}
        return lambda c: iter((soc2508_row(c, lookup, cache),))
    if fmt == "messages":
        render = conversation_samples(messages)

        def samples(c: Conversation) -> Iterator[MessagesRow]:
            exp = _experience(lookup, c.experience_id, c.chat_id)
            personas = [_persona(lookup, pid, c.chat_id) for pid in c.persona_ids]
            return iter(render(c, exp, personas))

        return samples
    raise ValueError(f"{fmt} is not a conversation format")
