"""A scripted stand-in for the model: valid replies for every call kind, read off the prompt.

The fake server answers with it (``--reply soc_async.testing.scripted:reply``) so a whole
run — personas, experiences, chats, summaries — goes through real HTTP, the real stages
and the real validators without a language model. It reads what the prompts state (the
sampled person, the two names, the state line, the clock) and writes a reply that obeys
them, drawing its words from a seeded RNG so cards do not look alike.

``ScriptedWriter(error_rate=...)`` also writes a broken reply now and then (a wrong state
line, time running backwards, a missing section) so tests can watch the retries work.
"""

from __future__ import annotations

import json
import random
import re
from datetime import date, datetime, timedelta
from typing import Any

from soc_async.formats.character import SECTIONS

_SECTIONS = SECTIONS[1:]  # Basic Information is written field by field
_WORDS = (
    "bus", "kitchen", "market", "shift", "cousin", "rent", "garden", "notebook",
    "bicycle", "tea", "radio", "laundry", "neighbour", "exam", "harbour", "bakery",
    "football", "evening", "library", "cat", "spreadsheet", "balcony", "train",
    "festival", "grandmother", "sister", "overtime", "podcast", "recipe", "umbrella",
    "scooter", "rain", "weekend", "phone", "queue", "lesson", "guitar", "workshop",
    "invoice", "clinic", "ferry", "village", "coffee",
)  # fmt: skip
_VERBS = (
    "fixes", "worries about", "saves for", "argues over", "forgets", "keeps", "avoids",
    "plans", "counts on", "laughs at", "hides", "misses", "complains about", "repairs",
)  # fmt: skip
_CHAT = (
    "ok wait",
    "haha no way",
    "did you see it",
    "i'm still at work",
    "send me the address",
    "that's so typical",
    "tell me tomorrow",
    "how much was it",
    "fine fine",
    "lol",
    "i can't today",
    "wait really?",
    "same here honestly",
    "omg",
)


def _sentence(rng: random.Random) -> str:
    words = rng.sample(_WORDS, 4)
    return (
        f"{words[0].capitalize()} {rng.choice(_VERBS)} the {words[1]} and the {words[2]} "
        f"near the {words[3]}."
    )


def _field(prompt: str, label: str) -> str:
    match = re.search(rf"^{label}: (.+)$", prompt, re.MULTILINE)
    return match.group(1).strip() if match else ""


class ScriptedWriter:
    """Callable as the fake server's reply function: ``model(body) -> text``."""

    def __init__(self, *, seed: int = 0, error_rate: float = 0.0) -> None:
        self._rng = random.Random(seed)
        self.error_rate = error_rate

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        system = messages[0].get("content", "") if messages else ""
        user = messages[-1].get("content", "") if messages else ""
        broken = self._rng.random() < self.error_rate
        schema = (body.get("structured_outputs") or {}).get("json")
        if isinstance(schema, dict):
            return self.json_reply(schema, broken)
        if "Write the <character> card for" in user:
            return self.persona(user, broken)
        if "Write the <experience> for" in user:
            return self.experience(user, broken)
        if "running summary" in system:
            return "They caught up on the plans so far and agreed to talk again soon."
        if "State line:" in user:
            return self.turn(user, broken)
        return "ok"

    def json_reply(self, schema: dict[str, Any], broken: bool) -> str:
        """An object that follows a flat JSON schema (the report's judge asks for one):
        integers drawn within their bounds, strings one short line. Broken: an integer
        past its maximum."""
        rng = self._rng
        out: dict[str, Any] = {}
        for name, spec in (schema.get("properties") or {}).items():
            kind = spec.get("type")
            if kind == "integer":
                lo, hi = int(spec.get("minimum", 0)), int(spec.get("maximum", 10))
                out[name] = rng.randint(max(lo, hi - 3), hi)
            elif kind == "string":
                out[name] = f"the {rng.choice(_WORDS)} part feels {rng.choice(_VERBS)} it"
            else:
                out[name] = None
        if broken:
            numbers = [k for k, v in out.items() if isinstance(v, int)]
            if numbers:
                name = rng.choice(numbers)
                out[name] = int(schema["properties"][name].get("maximum", 10)) + 2
        return json.dumps(out)

    def persona(self, prompt: str, broken: bool) -> str:
        rng = self._rng
        lines = [
            "<character>",
            "**Basic Information**",
            f"**Name:** {_field(prompt, 'Name')}",
            f"**Age:** {_field(prompt, 'Age')}",
            f"**Location:** {_field(prompt, 'Location')}",
            f"**Occupation:** works at the {rng.choice(_WORDS)} {rng.choice(_WORDS)}",
            "",
        ]
        sections = list(_SECTIONS)
        if broken:
            sections.remove(rng.choice(sections))
        for section in sections:
            lines.append(f"**{section}**")
            lines.append(" ".join(_sentence(rng) for _ in range(rng.randint(3, 6))))
            lines.append("")
        lines.append("</character>")
        return "\n".join(lines)

    def experience(self, prompt: str, broken: bool) -> str:
        rng = self._rng
        match = re.search(r"Write the <experience> for (.+?) and (.+?)\.\s", prompt)
        a, b = (match.group(1), match.group(2)) if match else ("A", "B")
        hint = re.search(r"make this one (freeform|semi-structured|structured)", prompt)
        style = hint.group(1) if hint else rng.choice(["structured", "semi-structured"])
        cadence = rng.choice(["realtime", "delayed", "async"])
        n_topics = rng.randint(2, 3)
        titles = rng.sample(
            ["Plans", "Money", "Family news", "The trip", "Work", "Music"], n_topics
        )
        budgets = [rng.randint(1, 3) for _ in titles]
        topics = [
            f"- {t}: {_sentence(rng)} ({n} {'turn' if n == 1 else 'turns'})"
            + (" ← PRIMARY" if i == 0 else "")
            for i, (t, n) in enumerate(zip(titles, budgets, strict=True))
        ]
        nxt = titles[1] if len(titles) > 1 else "end"
        initial = f"{titles[0]}; {budgets[0]}; {nxt}"
        if broken:
            initial = f"{titles[-1]}; 9; end"
        events = [f"- {_sentence(rng)}" for _ in range(rng.randint(2, 4))]
        return "\n".join(
            [
                "<experience>",
                f"{a} and {b} know each other from the {rng.choice(_WORDS)} group. "
                + " ".join(_sentence(rng) for _ in range(3)),
                "",
                f"Conversation style: {style}",
                f"Message cadence: {cadence} (as it happens)",
                f"Opens: {rng.choice([a, b])}",
                "",
                "The conversation will likely cover the following topics:",
                *topics,
                "",
                f"Initial state: {initial}",
                "",
                "Possible instant events:",
                *events,
                "</experience>",
            ]
        )

    def turn(self, prompt: str, broken: bool) -> str:
        rng = self._rng
        state = _field(prompt, "State line")
        last = re.search(r"The last message was at (\d\d:\d\d) on (\d\d\.\d\d)\.", prompt)
        start = re.search(r"The chat starts on (\d\d\.\d\d)", prompt)
        if last:
            clock = _stamp(last.group(1), last.group(2))
        else:
            day = start.group(1) if start else "01.01"
            clock = _stamp(f"{rng.randint(7, 20):02d}:{rng.randint(0, 59):02d}", day)
        ending = "Every topic is spent" in prompt and rng.random() < 0.7
        if broken:
            kind = rng.choice(["state", "clock", "type"])
            if kind == "state":
                state = "something else; 4 turns remaining; end"
            elif kind == "clock":
                clock -= timedelta(minutes=90)
        out = ["<turn>", "<state>", state]
        if ending:
            out.append("<predefined_topics_exhausted/>")
        out.append("</state>")
        for _ in range(rng.randint(1, 3)):
            clock += timedelta(minutes=rng.randint(0, 4))
            kind = "text" if rng.random() < 0.85 else rng.choice(["image", "sticker", "audio"])
            if broken and rng.random() < 0.3:
                kind = "gif"
            text = rng.choice(_CHAT) if kind == "text" else f"[{rng.choice(_WORDS)} {kind}]"
            out.append(
                f'<message t="{clock:%H:%M}" d="{clock:%d.%m}" type="{kind}">{text}</message>'
            )
        out.append("</turn>")
        return "\n".join(out)


def _stamp(t: str, d: str) -> datetime:
    # The year does not matter for the reply: only HH:MM and DD.MM are written back.
    day, month = (int(x) for x in d.split("."))
    hour, minute = (int(x) for x in t.split(":"))
    year = 2024 if (day, month) == (29, 2) else 2026
    return datetime.combine(date(year, month, day), datetime.min.time()).replace(
        hour=hour, minute=minute
    )


reply = ScriptedWriter()
"""The default instance for ``--reply soc_async.testing.scripted:reply``: never broken."""

flaky = ScriptedWriter(seed=7, error_rate=0.1)
"""Breaks about one reply in ten, for tests of the retries: ``scripted:flaky``."""
