"""A small run directory written by hand, whose every figure is known.

Four personas, three experiences, three conversations and two failures, written as the
run's own records (msgspec Structs) with the run's config and run.json. The test modules
state the right answers next to their checks; the comments here say where each comes
from.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path

import msgspec

from soc_async import config as config_mod
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
)
from soc_async.store.runinfo import RunIdentity

SEED = 5
CONFIG = {
    "seed": SEED,
    "targets": {"personas": 4, "experiences": 3, "chats": 4},
    # min_turns 1: the two-turn freeform chat below was valid before chat.min_turns.
    "chat": {"max_turns": 6, "active_window": 4, "fold": 2, "min_turns": 1},
}

P = [f"p-000000{i}-aaaa" for i in range(4)]
E = [f"e-000000{i}-bbbb" for i in range(3)]
C = [f"c-000000{i}-cccc" for i in range(3)]
NAMES = ["Ana Costa", "Louis Martin", "Li Wei", "Tunde Bello"]

# 55 distinct made-up words (letters only, none an English word used elsewhere here).
LONG_WORDS = [
    "".join(p) for p in itertools.islice(itertools.product("qxz", string.ascii_lowercase, "jv"), 55)
]
LONG_MESSAGE = " ".join(LONG_WORDS)

SHARED_BODY = (
    "Works nights at a bakery and studies bookkeeping by day. Keeps a tin of buttons from "
    "her grandmother on the shelf above the bed and mends everything herself. Talks fast, "
    "laughs louder than she means to, and remembers every birthday in the family. Saves "
    "coins in a jar for a trip to the coast she has planned for three years. Distrusts "
    "banks, trusts neighbours, and argues about football with anyone who will listen. "
    "Grows tomatoes on a narrow balcony, names every plant, and gives the harvest away to "
    "the old man downstairs who taught her to play chess on rainy Sunday afternoons."
)


def card(name: str, age: int, location: str, body: str, traits: str, emotional: str) -> str:
    sections = {
        "Physical & Lifestyle": body,
        "Personality Overview": body,
        "Core Traits": traits,
        "Emotional Profile": emotional,
        "Relationships": "A brother in the next town.",
        "Values": "Honesty.",
        "Motivations & Fears": "Wants a flat of her own.",
        "Behavioral Patterns": "Answers late at night.",
        "Communication Style": "Short messages.",
        "Example Messages": '- "ok see you"',
        "Summary": "A busy person.",
    }
    lines = [
        "<character>",
        "**Basic Information**",
        f"**Name:** {name}",
        f"**Age:** {age}",
        f"**Location:** {location}",
        "",
    ]
    for title, text in sections.items():
        lines += [f"**{title}**", text, ""]
    lines.append("</character>")
    return "\n".join(lines)


def personas() -> list[Persona]:
    # (region, subregion, gender, age, model, prompt, completion)
    rows = [
        ("Europe", "Porto, Portugal", "female", 20, "m-a", 100, 50),
        ("Europe", "Lyon, France", "male", 30, "m-a", 110, 60),
        ("East Asia", "Wuhan, Hubei, China", "female", 25, "m-b", 120, 70),
        ("Africa", "Lagos, Nigeria", "male", 25, "m-a", 130, 80),
    ]
    bodies = [
        "Drives a taxi across the river every morning and collects postcards of lighthouses.",
        "Repairs violins in a workshop under the railway arches and feeds the pigeons there.",
        SHARED_BODY,
        SHARED_BODY,  # p3's card is a near-copy of p2's: one near-duplicate card
    ]
    traits = [
        "- patient with children\n- stubborn about money",
        "- curious about machines\n- stubborn about politics",
        "- loyal to friends\n- patient with elders",
        "- loyal to friends\n- patient with elders",
    ]
    emotional = [
        "Gets anxious before exams. When stressed she goes running by the river.",
        "Rarely shows anger. He copes with pressure by cooking for everybody.",
        "Cries at films. Under stress she cleans the kitchen at midnight.",
        "Cries at films. Under stress she cleans the kitchen at midnight.",
    ]
    out = []
    for i, (region, sub, gender, age, model, prompt, completion) in enumerate(rows):
        out.append(
            Persona(
                id=P[i],
                persona_text=card(NAMES[i], age, sub, bodies[i], traits[i], emotional[i]),
                meta=PersonaMeta(
                    iteration=i,
                    model=model,
                    region=region,
                    subregion=sub,
                    name=NAMES[i],
                    gender=gender,
                    age=age,
                    time_taken=1.0,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                ),
            )
        )
    return out


def _experience(
    i: int,
    pair: tuple[int, int],
    opener: int,
    style: str,
    cadence: str,
    topics: list[tuple[str, int, bool]],
    events: int,
    *,
    matched: bool,
    hint: str | None = None,
    start: str | None = None,
) -> Experience:
    return Experience(
        id=E[i],
        persona_ids=[P[pair[0]], P[pair[1]]],
        experience_text=f"Experience {i}: the two of them plan something about {style} {cadence}.",
        style=style,  # type: ignore[arg-type]
        cadence=cadence,  # type: ignore[arg-type]
        topics=[TopicSlot(title=t, turns=n, primary=p) for t, n, p in topics],
        initial_state=f"{topics[0][0]}; {topics[0][1]}; end",
        instant_events=[f"event {k}" for k in range(events)],
        opener=P[opener],
        meta=ExperienceMeta(
            iteration=i,
            model="m-a",
            time_taken=1.0,
            region_matched=matched,
            style_hint=hint,
            prompt_tokens=10 * (i + 1),
            completion_tokens=5 * (i + 1),
        ),
        start_date=start,
    )


def experiences() -> list[Experience]:
    return [
        # e0: Europe + Europe, flagged region-matched.
        _experience(
            0,
            (0, 1),
            0,
            "structured",
            "realtime",
            [("Plans", 2, True), ("Money", 1, False)],
            2,
            matched=True,
        ),
        # e1: East Asia + Africa; the style monitor asked for freeform; starts 2 April.
        _experience(
            1,
            (2, 3),
            2,
            "freeform",
            "delayed",
            [("Music", 2, False)],
            3,
            matched=False,
            hint="freeform",
            start="2026-04-02",
        ),
        # e2: Europe + East Asia.
        _experience(
            2,
            (0, 2),
            2,
            "semi-structured",
            "async",
            [("Work", 1, True), ("Trip", 1, False)],
            5,
            matched=False,
        ),
    ]


def msg(d: str, t: str, text: str, kind: str = "text") -> Message:
    return Message(t=t, d=d, type=kind, text=text)  # type: ignore[arg-type]


def conversations() -> list[Conversation]:
    # c0 (e0): structured, realtime, 3 turns = the whole roadmap, ended on the tag.
    # Its 66 words are all distinct: "see you soon", "where are we meeting", "ok", "fine",
    # the 55 long words and "bye now"; p0's side has 64 of them.
    c0 = Conversation(
        chat_id=C[0],
        experience_id=E[0],
        persona_ids=[P[0], P[1]],
        style="structured",
        cadence="realtime",
        topics=[TopicSlot(title="Plans", turns=2, primary=True), TopicSlot(title="Money", turns=1)],
        turns=[
            Turn(
                sender=P[0],
                state="Plans; 1 turn remaining; Money",
                messages=[
                    msg("15.03", "10:00", "see you soon"),
                    msg("15.03", "10:02", "where are we meeting"),
                ],
            ),
            Turn(
                sender=P[1],
                state="Plans; 0 turns remaining; Money",
                messages=[
                    msg("15.03", "10:05", "ok"),
                    msg("15.03", "10:05", "[photo of the menu]", "image"),
                    msg("15.03", "10:10", "fine"),
                ],
                instant_event="the bus is late",
            ),
            Turn(
                sender=P[0],
                state="Money; 0 turns remaining; end",
                messages=[msg("15.03", "10:40", LONG_MESSAGE), msg("15.03", "10:40", "bye now")],
            ),
        ],
        summary="",
        ended_by="exhausted",
        model="m-a",
        usage=Usage(prompt=1000, completion=100, cached=400),
        retries={"state_mismatch": 1},
    )
    # c1 (e1): freeform, delayed, runs to its roadmap's 2 turns; starts on e1's 02.04.
    c1 = Conversation(
        chat_id=C[1],
        experience_id=E[1],
        persona_ids=[P[2], P[3]],
        style="freeform",
        cadence="delayed",
        topics=[TopicSlot(title="Music", turns=2)],
        turns=[
            Turn(
                sender=P[2],
                state="Music; 1 turn remaining; end",
                messages=[msg("02.04", "09:00", "heard the new album")],
            ),
            Turn(
                sender=P[3],
                state="Music; 0 turns remaining; end",
                messages=[msg("02.04", "13:00", "not yet")],
            ),
        ],
        summary="",
        ended_by="max_turns",
        model="m-a",
        usage=Usage(prompt=500, completion=50),
    )
    # c2 (e2): semi-structured, async, never ends on the tag: 6 turns (max_turns), one a
    # day; longer than the active window (4), so it has a summary. Its opening is c0's.
    days = ["15.03", "16.03", "17.03", "18.03", "19.03", "20.03"]
    states = ["Work; 0 turns remaining; Trip"] + ["Trip; 0 turns remaining; end"] * 5
    texts = ["(replaced below)", "sure", "maybe", "yes", "no", "later"]
    c2 = Conversation(
        chat_id=C[2],
        experience_id=E[2],
        persona_ids=[P[2], P[0]],
        style="semi-structured",
        cadence="async",
        topics=[TopicSlot(title="Work", turns=1, primary=True), TopicSlot(title="Trip", turns=1)],
        turns=[
            Turn(sender=P[2] if k % 2 == 0 else P[0], state=s, messages=[msg(d, "08:00", t)])
            for k, (d, s, t) in enumerate(zip(days, states, texts, strict=True))
        ],
        summary="They talked about work and a trip.",
        ended_by="max_turns",
        model="m-b",
        usage=Usage(prompt=700, completion=70, cached=100),
    )
    # c2's opening is c0's, word for word: one near-duplicate opening.
    c2.turns[0].messages = [
        msg("15.03", "08:00", "see you soon"),
        msg("15.03", "08:00", "where are we meeting"),
    ]
    return [c0, c1, c2]


def failures() -> list[Failure]:
    return [
        Failure(
            id="p-0000004-dddd",
            stage="personas",
            reason="retries_exhausted:card_sections",
            attempts=4,
        ),
        Failure(
            id="c-0000003-eeee",
            stage="chats",
            reason="request:timeout",
            attempts=1,
            retries={"gap_too_long": 2},
        ),
    ]


def write_jsonl(path: Path, records: list) -> None:
    path.write_bytes(b"".join(encode_line(r) for r in records))


def write_run(path: Path) -> Path:
    """The run directory at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.from_dict(CONFIG, "handmade")
    (path / "config.toml").write_text(config_mod.dump(cfg))
    (path / "run.json").write_bytes(msgspec.json.encode(RunIdentity.new(SEED)) + b"\n")
    write_jsonl(path / "personas.jsonl", personas())
    write_jsonl(path / "experiences.jsonl", experiences())
    write_jsonl(path / "conversations.jsonl", conversations())
    write_jsonl(path / "failures.jsonl", failures())
    return path
