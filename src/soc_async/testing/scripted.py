"""A scripted stand-in for the model: valid replies for every call kind, read off the prompt.

The fake server answers with it (``--reply soc_async.testing.scripted:reply``) so a whole
run — personas, experiences, chats, summaries — goes through real HTTP, the real stages
and the real validators without a language model. It reads what the prompts state (the
sampled person, the two names, the state line, the clock) and writes a reply that obeys
them, drawing its words from a seeded RNG so cards do not look alike.

``ScriptedWriter(error_rate=...)`` also writes a broken reply now and then (a wrong state
line, time running backwards, a missing section) so tests can watch the retries work.
``ScriptedWriter(rich=True)`` writes cards and experiences as long as the hand-written
seeds (sections of several sentences, three to five traits and example messages, a
two-paragraph narrative), the way a real model does, for figures of a default run.

Experiences follow the prompt's start (the weekday and time are written into the
narrative) and name the people their instant events happen to: by first name, full name
or possessive, some events naming neither and a few naming both, so runs can check that
an event never reaches the persona it does not name. The first turn opens inside the
window the prompt gives.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from soc_async.formats.character import SECTIONS
from soc_async.llm.types import text_of

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


_SYLLABLES = (
    "ba", "ko", "ri", "ta", "mu", "le", "so", "vi", "na", "de", "po", "ka", "lu", "mi",
    "ro", "sa", "te", "vo", "ni", "da", "pe", "ku", "li", "mo", "ra", "si", "to", "ve",
)  # fmt: skip


def _pseudo(rng: random.Random) -> str:
    """A made-up proper name ("Korima"): sentences built around two of them share few
    word 3-grams, so scripted cards are not near-duplicates of each other."""
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _sentence(rng: random.Random) -> str:
    words = rng.sample(_WORDS, 2)
    return f"{_pseudo(rng)} {rng.choice(_VERBS)} the {words[0]} near {_pseudo(rng)} {words[1]}."


def _first(name: str) -> str:
    return name.split()[0] if name.split() else name


# Instant events by whom they name: {a}/{b} a first name, {A}/{B} a full name.
_EVENTS_ONE = (
    "{a}'s phone battery drops to five percent",
    "A delivery arrives for {A} and needs a signature",
    "{a}'s neighbour starts drilling through the wall",
    "Someone knocks on {a}'s door to borrow a ladder",
    "{a} gets a call from the dentist about moving an appointment",
    "The bus {a} is on goes into a tunnel and the signal drops",
    "{A}'s manager asks for a quick hand with a spreadsheet",
    "A friend sends {a} a meme in another chat",
)
_EVENTS_NONE = (
    "The wifi drops for a minute",
    "A loud thunderstorm starts outside",
    "The power flickers and comes back",
)
_EVENTS_BOTH = ("{a} and {b} both get the same group chat notification",)


def _field(prompt: str, label: str) -> str:
    match = re.search(rf"^{label}: (.+)$", prompt, re.MULTILINE)
    return match.group(1).strip() if match else ""


class ScriptedWriter:
    """Callable as the fake server's reply function: ``model(body) -> text``."""

    def __init__(
        self, *, seed: int = 0, error_rate: float = 0.0, rich: bool = False, drift: float = 0.0
    ) -> None:
        self._rng = random.Random(seed)
        self.error_rate = error_rate
        self.rich = rich
        # A share of cards whose coping the writer replaces with the one it has written
        # most so far, unless the prompt warns it off: how a model converges on an
        # archetype, and how the monitor's hint pulls it back.
        self.drift = drift
        self._copings: Counter[str] = Counter()

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        system = text_of(messages[0].get("content", "")) if messages else ""
        user = text_of(messages[-1].get("content", "")) if messages else ""
        broken = self._rng.random() < self.error_rate
        schema = (body.get("structured_outputs") or {}).get("json")
        if isinstance(schema, dict) and "character card" in system and "coping" in system:
            return self.archetype_reading(system, user, schema, broken)
        if isinstance(schema, dict):
            return self.json_reply(schema, broken)
        if "Write the <character> card for" in user:
            return self.persona(user, broken)
        if "Write the <experience> for" in user:
            return self.experience(user, broken)
        if "running summary" in system:
            return "They caught up on the plans so far and agreed to talk again soon."
        if "State line:" in user:
            grammar = (body.get("structured_outputs") or {}).get("grammar") or ""
            return self.turn(user, broken, grammar)
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
            elif kind == "string" and spec.get("enum"):
                out[name] = rng.choice(spec["enum"])
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

    def archetype_reading(
        self, system: str, user: str, schema: dict[str, Any], broken: bool
    ) -> str:
        """The report's archetype call: for each list of the system prompt ("- label:
        description"), the row whose description the card repeats (the scripted cards
        write theirs word for word), else the first row whose label the card names, else
        one at random. Broken: a label that is on no list."""
        rng = self._rng
        card = user.lower()
        out: dict[str, str] = {}
        for name, spec in (schema.get("properties") or {}).items():
            labels = list(spec.get("enum") or [])
            rows = dict(re.findall(r"^- (.+?): (.+)$", system, re.MULTILINE))
            said = [lab for lab in labels if rows.get(lab, "\0").lower() in card]
            named = [lab for lab in labels if lab.lower() in card]
            out[name] = (said or named or [rng.choice(labels) if labels else ""])[0]
        if broken and out:
            out[rng.choice(list(out))] = "something else"
        return json.dumps(out)

    def _inner(self, prompt: str) -> tuple[str, str]:
        """The temperament and coping the persona prompt asks for ("" when it does not),
        or, for a drifting writer, the coping it has come to prefer."""
        temperament = _field(prompt, "Temperament")
        coping = _field(prompt, "Under stress")
        if coping and self.drift:
            warned = "do not slip into that one" in prompt
            favourite = self._copings.most_common(1)[0][0] if self._copings else ""
            if favourite and not warned and self._rng.random() < self.drift:
                coping = favourite
        if coping:
            self._copings[coping] += 1
        return temperament, coping

    def persona(self, prompt: str, broken: bool) -> str:
        rng = self._rng
        occupation = _field(prompt, "Occupation") or f"works at the {rng.choice(_WORDS)}"
        lines = [
            "<character>",
            "**Basic Information**",
            f"**Name:** {_field(prompt, 'Name')}",
            f"**Age:** {_field(prompt, 'Age')}",
            f"**Location:** {_field(prompt, 'Location')}",
        ]
        if self.rich:
            lines.append(f"**Pronouns:** {rng.choice(['she/her', 'he/him'])}")
        lines += [f"**Occupation:** {occupation}", ""]
        sections = list(_SECTIONS)
        if broken:
            sections.remove(rng.choice(sections))
        temperament, coping = self._inner(prompt)
        for section in sections:
            lines.append(f"**{section}**")
            text = self._section_text(section)
            if section == "Core Traits" and temperament:
                text = f"- By temperament {temperament}.\n" + (
                    text if text.startswith("- ") else f"- {text}"
                )
            elif section == "Emotional Profile" and coping:
                text += f" Under stress this person {coping}."
            lines.append(text)
            lines.append("")
        lines[-1] = "</character>"  # the last section closes the card, as the grammar has it
        return "\n".join(lines)

    def _section_text(self, section: str) -> str:
        rng = self._rng
        if not self.rich:
            return " ".join(_sentence(rng) for _ in range(rng.randint(3, 6)))
        if section == "Core Traits":
            return "\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(3, 5)))
        if section == "Example Messages":
            lines = (", ".join(rng.sample(_CHAT, 3)) for _ in range(rng.randint(3, 5)))
            return "\n".join(f'- "{line}"' for line in lines)
        low, high = (8, 11) if section == "Physical & Lifestyle" else (4, 6)
        return " ".join(_sentence(rng) for _ in range(rng.randint(low, high)))

    def experience(self, prompt: str, broken: bool) -> str:
        rng = self._rng
        match = re.search(r"Write the <experience> for (.+?) and (.+?)\.\s", prompt)
        a, b = (match.group(1), match.group(2)) if match else ("A", "B")
        when = re.search(r"The chat starts on (\w+), (.+?), at (\d\d:\d\d)", prompt)
        weekday, day, at = when.groups() if when else ("Monday", "a day", "12:00")
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
        events = [f"- {self._event(a, b)}" for _ in range(rng.randint(2, 4))]
        sentences = (7, 11) if self.rich else (3, 3)
        narrative = [
            f"{a} and {b} know each other from the {rng.choice(_WORDS)} group. "
            + " ".join(_sentence(rng) for _ in range(rng.randint(*sentences)))
        ]
        today = f"It is {weekday}, {day}, and the clock shows {at} for whoever writes first."
        if self.rich:
            narrative.append(
                today + " " + " ".join(_sentence(rng) for _ in range(rng.randint(3, 5)))
            )
        else:
            narrative[0] += " " + today
        opener = rng.choice([a, b])
        opens = rng.choice([f"Opens: {opener}", f"Opens: {_first(opener)}", None])
        if opens and _first(a) == _first(b):
            opens = f"Opens: {opener}"
        return "\n".join(
            [
                "<experience>",
                "\n\n".join(narrative),
                "",
                f"Conversation style: {style}",
                f"Message cadence: {cadence} (as it happens)",
                *([opens] if opens else []),
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

    def _event(self, a: str, b: str) -> str:
        """An instant event naming one of the two (four times in five), neither or both."""
        rng = self._rng
        draw = rng.random()
        if draw < 0.8:
            who, other = (a, b) if rng.random() < 0.5 else (b, a)
            template = rng.choice(_EVENTS_ONE)
            return template.format(a=_first(who), A=who, b=_first(other), B=other)
        template = rng.choice(_EVENTS_NONE if draw < 0.95 else _EVENTS_BOTH)
        return template.format(a=_first(a), A=a, b=_first(b), B=b)

    def turn(self, prompt: str, broken: bool, grammar: str = "") -> str:
        rng = self._rng
        low, high = _message_count(grammar, prompt)
        state = _field(prompt, "State line")
        last = re.search(r"The last message was at (\d\d:\d\d) on (\d\d\.\d\d)\.", prompt)
        opening = re.search(
            r"falls between (\d\d:\d\d) on (\d\d\.\d\d) and (\d\d:\d\d) on (\d\d\.\d\d)",
            prompt,
        )
        first: datetime | None = None  # the first message's stamp, on the chat's first turn
        if last:
            clock = _stamp(last.group(1), last.group(2))
        elif opening:
            opens, closes = _stamp(*opening.group(1, 2)), _stamp(*opening.group(3, 4))
            if closes < opens:  # across new year
                closes = closes.replace(year=closes.year + 1)
            span = int((closes - opens).total_seconds() // 60)
            first = clock = opens + timedelta(minutes=rng.randint(0, min(10, span)))
        else:
            clock = _stamp(f"{rng.randint(7, 20):02d}:{rng.randint(0, 59):02d}", "01.01")
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
        for k in range(rng.randint(low, high)):
            if not (k == 0 and first is not None):
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


_GRAMMAR_COUNT = re.compile(r"^messages ::= first_message(?: message\{(\d+),(\d+)\})?$", re.M)
_PROMPT_COUNT = re.compile(r"^Messages in this turn: exactly (\d+)\.$", re.M)


def _message_count(grammar: str, prompt: str) -> tuple[int, int]:
    """The bounds on the turn's message count: the grammar's (the turn grammar's
    ``messages`` rule), else the prompt's, else 1 to 3, as a model would read them."""
    rule = _GRAMMAR_COUNT.search(grammar)
    if rule:
        if rule.group(1) is None:
            return 1, 1
        return 1 + int(rule.group(1)), 1 + int(rule.group(2))
    asked = _PROMPT_COUNT.search(prompt)
    if asked:
        return int(asked.group(1)), int(asked.group(1))
    return 1, 3


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

rich = ScriptedWriter(seed=11, rich=True)
"""Seed-length cards and experiences, never broken: ``scripted:rich``."""


class GrammarChecked:
    """A reply function that answers as ``writer`` does, and refuses (HTTP 422) any reply
    the request's grammar would not have allowed.

    A real vLLM server cannot return such a reply: its grammar shapes every token. The
    fake server can, so a run against this wrapper shows whether the grammars a config
    sends would cut or forbid what a model writes (``request:http_422`` failures, or
    none). Checking costs a grammar compile per request (about 20 ms for a turn).
    """

    def __init__(self, writer: ScriptedWriter) -> None:
        self.writer = writer
        self.checked = 0
        self.refused = 0

    def __call__(self, body: dict[str, Any]) -> str:
        from xgrammar.testing import _is_grammar_accept_string

        from soc_async.testing.fake_model import ReplyError

        text = self.writer(body)
        grammar = (body.get("structured_outputs") or {}).get("grammar")
        if grammar:
            self.checked += 1
            if not _is_grammar_accept_string(grammar, text):
                self.refused += 1
                raise ReplyError(422, "the reply is not accepted by the request's grammar")
        return text


rich_checked = GrammarChecked(rich)
"""``scripted:rich`` under its requests' grammars: ``scripted:rich_checked``."""

drifting = ScriptedWriter(seed=13, rich=True, drift=0.3)
"""Seed-length cards whose coping style converges on one, three in ten, unless the
prompt's archetype hint warns it off: ``scripted:drifting``."""

flaky = ScriptedWriter(seed=7, error_rate=0.1)
"""Breaks about one reply in ten, for tests of the retries: ``scripted:flaky``."""
