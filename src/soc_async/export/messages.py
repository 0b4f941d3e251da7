"""The ``messages`` format: chat-format training samples, one per conversation and side.

For each side of a conversation the persona of that side is the ``assistant`` and the
other one the ``user``; the ``system`` message is a Jinja2 template rendered over the
side's persona card and the experience (templates/messages_system.j2, or the user's own
with ``--system-template``). Each turn becomes one message whose content is the turn's
messages, one per line, rendered by :class:`MessagesOptions`:

- ``timestamps``: ``none`` (the text alone), ``prefix`` (``[15.03 16:39] text``, the
  default) or ``xml`` (``<message t="16:39" d="15.03" type="image">text</message>``,
  which states the media type itself);
- ``media`` (ignored with ``xml``): ``tag`` (``<image>text</image>``, the default),
  ``label`` (``[image] text``) or ``text`` (the text alone);
- ``events``: whether the speaker's private instant event goes into the sample, as a
  line ``(event: ...)`` opening that assistant turn's content (default: left out; it is
  a prompt-time nudge, not something the persona typed).

When a side's persona opened the chat, its first non-system message is an ``assistant``
one; chat templates that insist on a user message first need a filler added by the user.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jinja2
import msgspec

from soc_async.errors import InputError
from soc_async.export.extract import experience_fields, persona_fields
from soc_async.export.rows import ChatMessage, MessagesRow
from soc_async.records import Conversation, Experience, Message, Persona

__all__ = ["MEDIA", "TIMESTAMPS", "MessagesOptions", "conversation_samples", "render_message"]

TIMESTAMPS = ("none", "prefix", "xml")
MEDIA = ("tag", "label", "text")


class MessagesOptions(msgspec.Struct, kw_only=True, frozen=True):
    timestamps: Literal["none", "prefix", "xml"] = "prefix"
    media: Literal["tag", "label", "text"] = "tag"
    events: bool = False
    system_template: str | None = None  # a Jinja2 file; None: the packaged one


def render_message(m: Message, options: MessagesOptions) -> str:
    """One message as a line of a turn's content."""
    if options.timestamps == "xml":
        return f'<message t="{m.t}" d="{m.d}" type="{m.type}">{m.text}</message>'
    if m.type == "text" or options.media == "text":
        body = m.text
    elif options.media == "tag":
        body = f"<{m.type}>{m.text}</{m.type}>"
    else:
        body = f"[{m.type}] {m.text}"
    return f"[{m.d} {m.t}] {body}" if options.timestamps == "prefix" else body


def _environment(path: str | None) -> jinja2.Template:
    env_args: dict[str, Any] = {
        "undefined": jinja2.StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "autoescape": False,
    }
    if path is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("soc_async.export", "templates"), **env_args
        )
        return env.get_template("messages_system.j2")
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read the system template ({exc.strerror})") from exc
    try:
        return jinja2.Environment(**env_args).from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"{p}:{exc.lineno}: not a Jinja2 template ({exc.message})") from exc


def _persona_vars(p: Persona) -> dict[str, Any]:
    f = persona_fields(p)
    return {
        "id": p.id,
        "name": p.meta.name,
        "card": p.persona_text,
        "age": p.meta.age,
        "region": p.meta.region,
        "subregion": p.meta.subregion,
        "occupation": f.occupation,
        "traits": list(f.traits),
        "background": f.background,
        "chatting_style": f.chatting_style,
    }


def conversation_samples(
    options: MessagesOptions,
) -> Callable[[Conversation, Experience, list[Persona]], list[MessagesRow]]:
    """The function writing a conversation's two samples (opener's side first)."""
    template = _environment(options.system_template)

    def system_prompt(me: Persona, other: Persona, exp: Experience) -> str:
        relationship, situation, topic = experience_fields(exp)
        try:
            return template.render(
                persona=_persona_vars(me),
                other=_persona_vars(other),
                experience={
                    "id": exp.id,
                    "text": exp.experience_text,
                    "style": exp.style,
                    "cadence": exp.cadence,
                    "topics": [msgspec.to_builtins(t) for t in exp.topics],
                    "relationship": relationship,
                    "situation": situation,
                    "topic": topic,
                },
                timestamps=options.timestamps,
                media=options.media,
            ).strip()
        except jinja2.TemplateError as exc:
            where = options.system_template or "messages_system.j2"
            raise InputError(f"{where}: the system template failed: {exc}") from exc

    def samples(c: Conversation, exp: Experience, personas: list[Persona]) -> list[MessagesRow]:
        rows = []
        for side, me in zip(("opener", "other"), personas, strict=True):
            other = personas[1] if me is personas[0] else personas[0]
            messages = [ChatMessage(role="system", content=system_prompt(me, other, exp))]
            for turn in c.turns:
                lines = [render_message(m, options) for m in turn.messages]
                mine = turn.sender == me.id
                if mine and options.events and turn.instant_event:
                    lines.insert(0, f"(event: {turn.instant_event})")
                role = "assistant" if mine else "user"
                messages.append(ChatMessage(role=role, content="\n".join(lines)))
            rows.append(
                MessagesRow(
                    id=f"{c.chat_id}:{side}",
                    chat_id=c.chat_id,
                    side=side,
                    persona_id=me.id,
                    persona_name=me.meta.name,
                    model=c.model,
                    messages=messages,
                )
            )
        return rows

    return samples
