"""A run directory built straight from records, no server: for viewer, export and scale tests.

:func:`write_run` writes what ``soc-async run`` against the fake server writes (personas,
experiences, conversations, failures, run.json, config.toml) in seconds, at any size,
with the variety a viewer and an exporter must handle: every style and cadence, two
models, all message types, multi-message turns, chats that cross midnight and days,
instant events, folded summaries, both endings, failures at every stage, and text that
needs escaping (``<3``, ``&``, a ``<script>`` tag in a card). Conversations obey the
chat rules (state lines count down per slot, clocks only move forward, speakers
alternate from the opener), so what is exported reads back through the project's parsers.

Deterministic in ``seed``.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path

import msgspec

from soc_async import config as config_mod
from soc_async.formats.character import SECTIONS
from soc_async.records import (
    Conversation,
    Experience,
    ExperienceMeta,
    Failure,
    Message,
    Persona,
    PersonaMeta,
    TopicSlot,
    Turn,
    Usage,
    encode_line,
    make_id,
)

__all__ = ["RunCounts", "write_run"]

_PEOPLE = (
    ("Amara", "Okafor", "female", "Lagos, Lagos State, Nigeria", "West Africa"),
    ("Tomasz", "Nowak", "male", "Kraków, Lesser Poland, Poland", "Eastern Europe"),
    ("Mei", "Lin", "female", "Taichung, Taiwan", "East Asia"),
    ("Rafael", "Souza", "male", "Recife, Pernambuco, Brazil", "South America"),
    ("Priya", "Nair", "female", "Kochi, Kerala, India", "South Asia"),
    ("Jonas", "Berg", "male", "Bergen, Vestland, Norway", "Northern Europe"),
    ("Leila", "Haddad", "female", "Beirut, Lebanon", "Middle East"),
    ("Kwame", "Mensah", "male", "Kumasi, Ashanti, Ghana", "West Africa"),
    ("Yuki", "Tanaka", "female", "Sendai, Miyagi, Japan", "East Asia"),
    ("Diego", "Rojas", "male", "Valparaíso, Chile", "South America"),
)
_JOBS = ("nurse", "bus driver", "bakery owner", "accountant", "student", "electrician")
_TRAITS = ("Patient", "Stubborn", "Curious", "Dry humour", "Anxious", "Generous", "Blunt")
_WORDS = (
    "bus", "kitchen", "market", "shift", "cousin", "rent", "garden", "notebook", "tea",
    "radio", "laundry", "neighbour", "exam", "harbour", "bakery", "football", "library",
    "balcony", "train", "festival", "grandmother", "podcast", "recipe", "umbrella", "rain",
)  # fmt: skip
_CHAT = (
    "ok wait", "haha no way", "did you see it", "i'm still at work", "send me the address",
    "that's so typical", "tell me tomorrow", "how much was it <3", "fine fine", "lol",
    "R&D meeting ran over again", "wait really?", "same here honestly", "omg",
)  # fmt: skip
_TOPICS = ("Plans", "Money", "Family news", "The trip", "Work", "Music", "The exam")
_STYLES = ("freeform", "semi-structured", "structured")
_CADENCES = ("realtime", "delayed", "async")
_MEDIA = ("image", "audio", "video", "sticker")
_GAPS = {"realtime": (0, 20), "delayed": (0, 240), "async": (30, 2880)}
_MODELS = ("fake-model-a", "fake-model-b")


class RunCounts(msgspec.Struct, kw_only=True):
    """What :func:`write_run` wrote."""

    personas: int
    experiences: int
    conversations: int
    failures: dict[str, int]  # by stage


def _sentence(rng: random.Random) -> str:
    a, b, c = rng.sample(_WORDS, 3)
    return f"The {a} and the {b} are on their mind again, like the {c} last week."


def _card(
    rng: random.Random, name: str, age: int, location: str, job: str, i: int, pronouns: str
) -> str:
    traits = rng.sample(_TRAITS, 4)
    body = {
        "Basic Information": "\n".join(
            [
                f"**Name:** {name}",
                f"**Age:** {age}",
                f"**Location:** {location}",
                f"**Pronouns:** {pronouns}",
                f"**Occupation:** {job}",
            ]
        ),
        "Core Traits": "\n".join(f"- {t}: {_sentence(rng)}" for t in traits),
        "Communication Style": f"Writes short lowercase bursts and sends voice notes. "
        f"{_sentence(rng)}",
        "Example Messages": '- "omg the bus again"\n- "ok ok <3 see you"',
        "Summary": f"{name} is a {age}-year-old {job} in {location.split(',')[0]}. "
        f"{_sentence(rng)} {_sentence(rng)}",
    }
    parts = []
    for header in SECTIONS:
        text = body.get(header) or " ".join(_sentence(rng) for _ in range(3))
        if header == "Values" and i == 0:
            text += " She once typed <script>alert(1)</script> into a form & laughed."
        parts.append(f"**{header}**\n{text}")
    return "<character>\n" + "\n\n".join(parts) + "\n</character>"


def _persona(rng: random.Random, seed: int, i: int) -> Persona:
    first, last, gender, location, region = _PEOPLE[i % len(_PEOPLE)]
    name = f"{first} {last}" if i < len(_PEOPLE) else f"{first} {last} {i}"
    age = 19 + (i * 7) % 30
    job = _JOBS[i % len(_JOBS)]
    return Persona(
        id=make_id(seed, "personas", i),
        persona_text=_card(
            rng, name, age, location, job, i, "she/her" if gender == "female" else "he/him"
        ),
        meta=PersonaMeta(
            iteration=i,
            model=_MODELS[i % 2],
            region=region,
            subregion=location,
            name=name,
            gender=gender,
            age=age,
            time_taken=round(rng.uniform(2, 20), 3),
            prompt_tokens=2500,
            completion_tokens=rng.randint(600, 900),
        ),
    )


def _experience(rng: random.Random, seed: int, j: int, a: Persona, b: Persona) -> Experience:
    style = _STYLES[j % 3]
    cadence = _CADENCES[(j // 3) % 3]
    titles = rng.sample(_TOPICS, rng.randint(2, 3))
    topics = [
        TopicSlot(
            title=t, turns=rng.randint(1, 6), primary=k == 0 and style != "freeform",
            description=_sentence(rng),
        )
        for k, t in enumerate(titles)
    ]  # fmt: skip
    opener = a if j % 2 == 0 else b
    nxt = topics[1].title if len(topics) > 1 else "end"
    initial = f"{topics[0].title}; {topics[0].turns}; {nxt}"
    events = [_sentence(rng) for _ in range(rng.randint(2, 4))]
    lines = [
        "<experience>",
        f"{a.meta.name} and {b.meta.name} met at the {rng.choice(_WORDS)} club two years ago "
        "and have chatted on and off since.",
        "",
        f"It is a weekday evening. {_sentence(rng)} {_sentence(rng)}",
        "",
        f"Conversation style: {style}",
        f"Message cadence: {cadence} (replies come as life allows)",
        f"Opens: {opener.meta.name}",
        "",
        "The conversation will likely cover the following topics:",
        *(
            f"- {t.title}: {t.description} ({t.turns} {'turn' if t.turns == 1 else 'turns'})"
            + (" ← PRIMARY" if t.primary else "")
            for t in topics
        ),
        "",
        f"Initial state: {initial}",
        "",
        "Possible instant events:",
        *(f"- {e}" for e in events),
        "</experience>",
    ]
    return Experience(
        id=make_id(seed, "experiences", j),
        persona_ids=[a.id, b.id],
        experience_text="\n".join(lines),
        style=style,  # type: ignore[arg-type]
        cadence=cadence,  # type: ignore[arg-type]
        topics=topics,
        initial_state=initial,
        instant_events=events,
        opener=opener.id,
        meta=ExperienceMeta(
            iteration=j,
            model=_MODELS[j % 2],
            time_taken=round(rng.uniform(3, 30), 3),
            region_matched=a.meta.region == b.meta.region,
            prompt_tokens=3200,
            completion_tokens=rng.randint(200, 400),
        ),
    )


def _conversation(
    rng: random.Random, seed: int, j: int, exp: Experience, max_turns: int
) -> Conversation:
    other = next(p for p in exp.persona_ids if p != exp.opener)
    speakers = (exp.opener, other)
    # The state lines: N counts down within each slot, 0 on its last turn.
    plan: list[str] = []
    for k, slot in enumerate(exp.topics):
        nxt = exp.topics[k + 1].title if k + 1 < len(exp.topics) else "end"
        for n in range(slot.turns - 1, -1, -1):
            plan.append(f"{slot.title}; {n} {'turn' if n == 1 else 'turns'} remaining; {nxt}")
    # Freeform runs to its limit (the roadmap's budget, at most max_turns); the others end
    # once every slot is spent, unless max_turns comes first.
    n_turns = min(len(plan), max_turns)
    exhausted = exp.style != "freeform" and n_turns == len(plan)
    clock = datetime.combine(date(2026, 3, 15), datetime.min.time()) + timedelta(
        hours=rng.randint(7, 23), minutes=rng.randint(0, 59)
    )
    lo, hi = _GAPS[exp.cadence]
    turns = []
    for k in range(n_turns):
        messages = []
        for m in range(rng.randint(1, 3)):
            clock += timedelta(minutes=rng.randint(lo, hi) if m == 0 else rng.randint(0, 3))
            kind = "text" if rng.random() < 0.8 else rng.choice(_MEDIA)
            text = rng.choice(_CHAT) if kind == "text" else f"[{rng.choice(_WORDS)} {kind}]"
            messages.append(Message(t=f"{clock:%H:%M}", d=f"{clock:%d.%m}", type=kind, text=text))  # type: ignore[arg-type]
        event = rng.choice(exp.instant_events) if rng.random() < 0.08 else None
        turns.append(
            Turn(sender=speakers[k % 2], state=plan[k], messages=messages, instant_event=event)
        )
    summary = " ".join(_sentence(rng) for _ in range(3)) if n_turns > 8 else ""
    return Conversation(
        chat_id=make_id(seed, "chats", j),
        experience_id=exp.id,
        persona_ids=list(speakers),
        style=exp.style,
        cadence=exp.cadence,
        topics=exp.topics,
        turns=turns,
        summary=summary,
        ended_by="exhausted" if exhausted else "max_turns",
        model=_MODELS[j % 2],
        usage=Usage(prompt=2600 * n_turns, completion=40 * n_turns, cached=2000 * n_turns),
        retries={"state_mismatch": 1} if j % 7 == 3 else {},
    )


def write_run(
    path: str | Path,
    *,
    personas: int = 12,
    conversations: int = 30,
    seed: int = 0,
    fail_every: int = 10,
    max_turns: int = 12,
) -> RunCounts:
    """Write a run directory at ``path``: ``conversations`` experiences, every
    ``fail_every``-th chat a failure (0: none) and the rest conversations, plus one
    failed persona and one failed experience when ``fail_every`` is set."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    cards = [_persona(rng, seed, i) for i in range(personas)]
    failures: list[Failure] = []
    counts = {"personas": 0, "experiences": 0, "chats": 0}
    n_conv = 0
    with (
        (out / "personas.jsonl").open("wb") as fp,
        (out / "experiences.jsonl").open("wb") as fe,
        (out / "conversations.jsonl").open("wb") as fc,
    ):
        fp.writelines(encode_line(p) for p in cards)
        for j in range(conversations):
            # Half the pairs from one region (persona i's region is i % 10), as the stage
            # pairs them; the other half at random.
            ia = rng.randrange(personas)
            ib = (ia + rng.randint(1, personas - 1)) % personas
            if personas > 10 and rng.random() < 0.5:
                ib = (ia + 10 * rng.randint(1, (personas - 1) // 10)) % personas
            a, b = cards[ia], cards[ib]
            exp = _experience(rng, seed, j, a, b)
            fe.write(encode_line(exp))
            if fail_every and j % fail_every == fail_every - 1:
                failures.append(
                    Failure(
                        id=make_id(seed, "chats", j), stage="chats",
                        reason="retries_exhausted:clock_backwards", attempts=4,
                        detail="turn 3: 14:02 on 15.03 is before the last message (14:10)",
                        retries={"clock_backwards": 3},
                    )
                )  # fmt: skip
                continue
            fc.write(encode_line(_conversation(rng, seed, j, exp, max_turns)))
            n_conv += 1
    if fail_every:
        failures.append(
            Failure(
                id=make_id(seed, "personas", personas), stage="personas",
                reason="retries_exhausted:missing_section:Values", attempts=4,
                detail="the card has no **Values** section",
            )
        )  # fmt: skip
        failures.append(
            Failure(
                id=make_id(seed, "experiences", conversations), stage="experiences",
                reason="request:http_400", attempts=1, detail="400 Bad Request",
            )
        )  # fmt: skip
    with (out / "failures.jsonl").open("wb") as ff:
        ff.writelines(encode_line(f) for f in failures)
    for f in failures:
        counts[f.stage] += 1
    config = config_mod.RunConfig(seed=seed, out=str(out))
    config.chat.max_turns = max_turns
    config.targets.personas = personas
    config.targets.experiences = conversations
    config.targets.chats = conversations
    (out / "config.toml").write_text(config_mod.dump(config))
    identity = {"seed": seed, "shard": "0/1", "key": "synthetic", "created": "2026-03-15T00:00:00"}
    (out / "run.json").write_bytes(msgspec.json.encode(identity))
    return RunCounts(
        personas=personas, experiences=conversations, conversations=n_conv, failures=counts
    )
