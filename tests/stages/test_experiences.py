"""The experience stage against a scripted model: accept, correct and retry, fail."""

from __future__ import annotations

import re

import factories
import pytest
from xgrammar.testing import _is_grammar_accept_string

from soc_async import seeds as seed_data
from soc_async.config import RunConfig, RunFacts, from_dict
from soc_async.errors import RequestError, RetriesExhausted, ServerError
from soc_async.fewshot import FewShotRing
from soc_async.formats.experience import ParsedExperience, experience_grammar, parse_experience
from soc_async.llm.types import ChatRequest, Completion, TokenUsage
from soc_async.records import Experience, Failure, Persona
from soc_async.stages.experiences import ExperienceStage, seed_experiences
from soc_async.stages.style_monitor import StyleMonitor
from soc_async.testing.completer import Reply, ScriptedCompleter


def persona(pid: str, name: str, region: str) -> Persona:
    card = f"<character>\n**Basic Information**\n**Name:** {name}\n</character>"
    return factories.persona(pid, name=name, region=region, gender="male", text=card)


RAFAEL = persona("p-rafael", "Rafael", "South America")
INES = persona("p-ines", "Inês", "Southern Europe")
PAIR = (RAFAEL, INES)

GOOD = """<experience>
Rafael and Inês met on a volunteer translation forum where he checks Portuguese
subtitles for a documentary project and she proofreads them from Porto.

It is Monday; the project lead just moved the deadline for episode four forward by a week.

Conversation style: structured
Message cadence: async (four hours apart, replies around work)
Opens: Inês

The conversation will likely cover the following topics:
- The deadline: who takes which half of episode four (4 turns) ← PRIMARY
- Glossary: the fishing terms they keep translating differently (3 turns)

Initial state: The deadline; 4; Glossary

Possible instant events:
- Rafael's neighbour starts drilling through the wall
- Inês gets a call from the dentist to move her appointment
</experience>"""

OTHER = """<experience>
Inês sold Rafael her old road bike through a marketplace app last summer, and since
then they swap route tips now and then.

This morning the bike's rear derailleur snapped on a climb outside Niterói.

Conversation style: freeform
Message cadence: realtime (Rafael waits for a bus, Inês on her lunch break)
Opens: Rafael

Possible instant events:
- the bus arrives earlier than the timetable said
- a colleague sits down at Inês's table with a tray
</experience>"""

SEED = """<experience>
Two colleagues plan a leaving card for a third one.

Conversation style: freeform
Message cadence: realtime (both at their desks)
Opens: Rafael

Possible instant events:
- a meeting reminder pops up
- the office wifi drops
</experience>"""


def reply(text: str, finish: str = "stop", prompt: int = 100, completion: int = 50) -> Completion:
    return Completion(
        text=text,
        finish_reason=finish,
        usage=TokenUsage(prompt=prompt, completion=completion),
        model="served-model",
    )


def config(**experience: object) -> RunConfig:
    return from_dict(
        {
            "seed": 9,
            # The requests carry their seeds, so the tests can see each attempt's.
            "client": {"send_seed": True},
            "calls": {"experience": {"retries": 2, "temperature": 0.8, "top_p": 0.95}},
            "experience": {"few_shot": 1, **experience},
        }
    )


def make_stage(
    replies: list[Reply],
    cfg: RunConfig | None = None,
    monitor: StyleMonitor | None = None,
    seeds: list[str] | None = None,
) -> tuple[ExperienceStage, ScriptedCompleter, FewShotRing[str], StyleMonitor]:
    cfg = cfg or config()
    completer = ScriptedCompleter(replies)
    ring: FewShotRing[str] = FewShotRing(
        seeds or [SEED],
        capacity=cfg.experience.ring_capacity,
        reset_every=cfg.experience.reset_every,
    )
    monitor = monitor or StyleMonitor(cfg.experience.style_window, cfg.experience.style_min_pool)
    return (
        ExperienceStage(cfg, completer, ring, monitor, RunFacts(model="test-model")),
        completer,
        ring,
        monitor,
    )


def user_prompt(request: ChatRequest) -> str:
    return request.messages[-1]["content"]


async def test_valid_reply_becomes_an_experience_record() -> None:
    """A valid first reply is parsed into the record, with the opener's persona id and meta."""
    stage, completer, _, monitor = make_stage([reply(GOOD)])
    result = await stage.write(3, "e-3", PAIR, True)
    assert isinstance(result, Experience)
    assert result.id == "e-3"
    assert result.persona_ids == ["p-rafael", "p-ines"]
    assert result.opener == "p-ines"
    assert result.style == "structured" and result.cadence == "async"
    assert [(t.title, t.turns, t.primary) for t in result.topics] == [
        ("The deadline", 4, True),
        ("Glossary", 3, False),
    ]
    assert result.initial_state == "The deadline; 4; Glossary"
    assert len(result.instant_events) == 2
    assert result.experience_text == GOOD
    assert (
        result.meta.iteration == 3 and result.meta.model == "served-model"
    )  # the model that answered
    assert result.meta.region_matched is True and result.meta.style_hint is None
    assert (result.meta.prompt_tokens, result.meta.completion_tokens) == (100, 50)
    assert result.meta.time_taken >= 0
    assert repr(monitor).startswith("StyleMonitor(seen=1")
    assert len(completer.calls) == 1


async def test_request_carries_prompt_sampling_and_grammar_from_config() -> None:
    """Kind, sampling, both cards, a seed example and a grammar for these names are sent."""
    stage, completer, _, _ = make_stage([reply(GOOD)])
    await stage.write(0, "e-0", PAIR, False)
    kind, request = completer.calls[0].kind, completer.calls[0].request
    assert kind == "experience"
    assert (request.temperature, request.top_p) == (0.8, 0.95)
    assert request.max_tokens == config().call("experience").max_tokens
    assert (
        request.messages[0]["role"] == "system" and "<experience>" in request.messages[0]["content"]
    )
    user = user_prompt(request)
    assert "**Name:** Rafael" in user and "**Name:** Inês" in user
    assert "Two colleagues plan a leaving card" in user  # the seed, drawn as an example
    assert request.grammar is not None
    assert _is_grammar_accept_string(request.grammar, GOOD)
    assert not _is_grammar_accept_string(request.grammar, GOOD.replace("Opens: Inês", "Opens: Bo"))


async def test_no_grammar_when_config_disables_it() -> None:
    """With calls.experience.grammar = false the request has no grammar."""
    cfg = from_dict({"calls": {"experience": {"grammar": False}}})
    stage, completer, _, _ = make_stage([reply(GOOD)], cfg=cfg)
    assert isinstance(await stage.write(0, "e-0", PAIR, False), Experience)
    assert completer.calls[0].request.grammar is None


async def test_system_prompt_is_identical_across_calls() -> None:
    """The system message is byte-identical between items, for vLLM's prefix cache."""
    stage, completer, _, _ = make_stage([reply(GOOD), reply(OTHER)])
    await stage.write(0, "e-0", PAIR, False)
    await stage.write(1, "e-1", (INES, RAFAEL), False)
    first, second = (r.messages[0]["content"] for r in completer.requests())
    assert first == second


async def test_invalid_then_valid_is_corrected_and_accepted() -> None:
    """An invalid reply is retried with a one-line correction; tokens of both are counted."""
    bad = GOOD.replace("Opens: Inês", "Opens: Maria")
    stage, completer, _, _ = make_stage([reply(bad), reply(GOOD, prompt=120, completion=60)])
    result = await stage.write(1, "e-1", PAIR, False)
    assert isinstance(result, Experience)
    assert len(completer.calls) == 2
    assert "not accepted" not in user_prompt(completer.calls[0].request)
    correction = user_prompt(completer.calls[1].request)
    assert "not accepted" in correction and "'Opens:' must be" in correction
    assert (result.meta.prompt_tokens, result.meta.completion_tokens) == (220, 110)
    assert completer.calls[0].request.seed != completer.calls[1].request.seed


async def test_always_invalid_becomes_a_failure_with_reason_and_attempts() -> None:
    """Past the retry budget the item is a Failure naming the last reason and the attempts."""
    bad = GOOD.replace("structured", "poetic")
    stage, completer, _, monitor = make_stage([reply(bad)] * 3)
    result = await stage.write(2, "e-2", PAIR, False)
    assert isinstance(result, Failure)
    assert result.stage == "experiences" and result.id == "e-2"
    assert result.reason == "retries_exhausted:bad_style"
    assert result.attempts == 3 and len(completer.calls) == 3
    assert result.retries == {"bad_style": 3}
    assert result.detail
    assert monitor.hint() is None and repr(monitor).startswith("StyleMonitor(seen=0")


async def test_truncated_reply_is_invalid_even_if_it_parses() -> None:
    """finish_reason "length" means the reply was cut: it is retried, never accepted."""
    stage, completer, _, _ = make_stage([reply(GOOD, finish="length"), reply(GOOD)])
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Experience)
    assert "cut by max_tokens" in user_prompt(completer.calls[1].request)


async def test_near_copy_of_a_reference_is_rejected() -> None:
    """A reply too close to the example it was shown is invalid ("near_duplicate")."""
    copy = GOOD.replace("Monday", "Sunday")
    stage, _, _, _ = make_stage([reply(copy)] * 3, seeds=[GOOD])
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Failure)
    assert result.reason == "retries_exhausted:near_duplicate"


async def test_near_copy_is_accepted_when_the_threshold_allows_it() -> None:
    """The similarity threshold comes from config: at 1.0 only an exact copy could trip it."""
    copy = GOOD.replace("Monday", "Sunday")
    cfg = config(similarity_threshold=1.0)
    stage, _, _, _ = make_stage([reply(copy)], cfg=cfg, seeds=[GOOD])
    assert isinstance(await stage.write(0, "e-0", PAIR, False), Experience)


async def test_accepted_text_joins_the_ring() -> None:
    """An accepted experience is pushed into the ring, after the seeds, as a later example."""
    other = GOOD.replace("episode four", "episode nine").replace("Glossary", "Credits")
    stage, _, ring, _ = make_stage([reply(other)])
    await stage.write(0, "e-0", PAIR, False)
    assert ring.items() == [SEED, other]


async def test_style_hint_forces_the_grammar_and_is_recorded() -> None:
    """When one style dominates, the prompt asks for the least used one, the grammar
    allows only it, and the record notes the hint."""
    monitor = StyleMonitor(30, 6)
    for _ in range(6):
        monitor.observe("semi-structured")
    hinted = monitor.hint()
    assert hinted == "freeform"
    freeform = GOOD.replace("structured", "freeform")
    stage, completer, _, _ = make_stage([reply(freeform)], monitor=monitor)
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Experience)
    request = completer.calls[0].request
    assert "make this one freeform" in user_prompt(request)
    assert request.grammar is not None
    assert _is_grammar_accept_string(request.grammar, freeform)
    assert not _is_grammar_accept_string(request.grammar, GOOD)
    assert result.meta.style_hint == "freeform"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RequestError("bad request", status=400), "request:http_400"),
        (RetriesExhausted("timeout", attempts=7), "request:timeout"),
        (RequestError("no body"), "request:error"),
    ],
)
async def test_request_error_becomes_a_failure(error: RequestError, reason: str) -> None:
    """A request that failed for good ends the item as a Failure at once, without retrying."""
    stage, completer, _, _ = make_stage([error])
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Failure)
    assert result.reason == reason and result.attempts == 1
    assert len(completer.calls) == 1


async def test_request_error_after_an_invalid_reply_counts_both_attempts() -> None:
    """The failure's attempts include the invalid replies that came before the error."""
    stage, _, _, _ = make_stage([reply("nonsense"), RequestError("x", status=422)])
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Failure)
    assert (result.reason, result.attempts) == ("request:http_422", 2)
    assert result.retries == {"no_element": 1}


async def test_server_error_propagates() -> None:
    """A dead server is the run's problem: ServerError is not turned into a Failure."""
    stage, _, _, _ = make_stage([ServerError("all endpoints down")])
    with pytest.raises(ServerError):
        await stage.write(0, "e-0", PAIR, False)


# The two personas (names as in seeds/personas) each hand-written seed experience is for.
SEED_NAMES = {
    "Agnieszka Wójcik": ("Agnieszka Wójcik", "Lukas Brandt"),
    "Phạm Minh Đức": ("Phạm Minh Đức", "Haruka Sato"),
    "Kayla Brooks": ("Kayla Brooks", "Rhea Villanueva"),
    "Rohit Verma": ("Rohit Verma", "Mostafa Abdelrahman"),
}


def test_seed_experiences_parse_and_fit_the_grammar() -> None:
    """Every shipped seed is a valid experience (it is shown to the model as an example),
    there are at least three, and together they show every style."""
    seeds = seed_experiences()
    assert len(seeds) >= 3
    styles = set()
    for text in seeds:
        opener = text.split("Opens: ", 1)[1].split("\n", 1)[0]
        names = SEED_NAMES[opener]
        result = parse_experience(text, names, min_events=2, max_events=5)
        assert isinstance(result, ParsedExperience), (opener, result)
        assert result.text == text
        grammar = experience_grammar(names, min_events=2, max_events=5)
        assert _is_grammar_accept_string(grammar, text)
        styles.add(result.style)
    assert styles == {"freeform", "semi-structured", "structured"}


def test_seed_experiences_are_about_seed_personas() -> None:
    """The people of the seed experiences are hand-written seed personas, by exact name."""
    cards = seed_data.persona_cards()
    names = {
        line.removeprefix("**Name:**").strip()
        for card in cards
        for line in card.splitlines()
        if line.startswith("**Name:**")
    }
    for pair in SEED_NAMES.values():
        assert set(pair) <= names, pair


# --- start dates, event attribution, dataset-wide duplicates --------------------------------


def test_starts_spread_over_the_window_and_are_drawn_per_experience() -> None:
    """2,000 experiences start inside [start_date, start_date + start_days), on hundreds of
    distinct days and every weekday, mostly in waking hours; the same index always draws
    the same start (resume and shards)."""
    from datetime import date, timedelta

    from soc_async.stages.experiences import start_for

    chat = from_dict({"chat": {"start_date": "2025-06-01", "start_days": 365}}).chat
    starts = [start_for(chat, 9, i) for i in range(2000)]
    first, last = date(2025, 6, 1), date(2025, 6, 1) + timedelta(days=364)
    assert all(first <= s.date() <= last for s in starts)
    assert len({s.date() for s in starts}) > 300
    assert {s.weekday() for s in starts} == set(range(7))
    assert sum(7 <= s.hour <= 23 for s in starts) / len(starts) > 0.85
    assert [start_for(chat, 9, i) for i in range(0, 2000, 7)] == starts[::7]
    assert start_for(chat, 10, 0) != start_for(chat, 9, 0) or start_for(chat, 10, 1) != starts[1]


async def test_prompt_weekday_is_the_chats_weekday() -> None:
    """The experience prompt names the start's weekday, date and time; the record keeps
    them, and the chat built from the record opens on that weekday at that time."""
    from datetime import date, datetime

    from soc_async.chat.state import ChatRules, initial_state, opening_window
    from soc_async.formats.clock import parse_time
    from soc_async.stages.experiences import start_for

    for index in range(40):
        stage, completer, _, _ = make_stage([reply(GOOD)])
        result = await stage.write(index, f"e-{index}", PAIR, False)
        assert isinstance(result, Experience)
        start = start_for(stage.config.chat, stage.config.seed, index)
        user = user_prompt(completer.calls[0].request)
        weekday = re.search(r"The chat starts on (\w+), (\d+ \w+ \d{4}), at (\d\d:\d\d)", user)
        assert weekday is not None
        assert weekday.group(3) == start.strftime("%H:%M") == result.start_time
        assert result.start_date == start.date().isoformat()
        names = {"p-rafael": "Rafael", "p-ines": "Inês"}
        state = initial_state(
            result, chat_id="c", names=names, rules=ChatRules(),
            start_date=date.fromisoformat(result.start_date),
            start_time=parse_time(result.start_time),
        )  # fmt: skip
        opens, _ = opening_window(state)
        assert opens == datetime.combine(start.date(), start.time())
        assert opens.strftime("%A") == weekday.group(1)
        assert datetime.strptime(weekday.group(2), "%d %B %Y").date() == opens.date()


async def test_events_are_attributed_in_the_record() -> None:
    """Each instant event is recorded with the persona it names, or None."""
    stage, _, _, _ = make_stage([reply(GOOD)])
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Experience)
    # "Rafael's neighbour starts drilling", "Inês gets a call from the dentist"
    assert result.event_personas == ["p-rafael", "p-ines"]


async def test_a_paraphrase_of_an_accepted_experience_is_refused_dataset_wide() -> None:
    """With the run's index, a lightly reworded copy of an accepted experience is refused
    as a dataset duplicate and retried; an unrelated one passes."""
    from soc_async.neardup import NearDuplicateIndex

    copy = GOOD.replace("volunteer translation forum", "volunteer subtitling forum").replace(
        "the project lead just moved", "the project lead has just moved"
    )
    cfg = config(few_shot=0)  # no examples: only the dataset-wide index can see the copy
    completer = ScriptedCompleter([reply(GOOD), reply(copy), reply(OTHER)])
    ring: FewShotRing[str] = FewShotRing([SEED], capacity=20, reset_every=50)
    monitor = StyleMonitor(30, 6)
    index = NearDuplicateIndex(cfg.experience.dedup_threshold)
    stage = ExperienceStage(cfg, completer, ring, monitor, RunFacts(model="m"), dedup=index)
    assert isinstance(await stage.write(0, "e-0", PAIR, False), Experience)
    second = await stage.write(1, "e-1", PAIR, False)
    assert isinstance(second, Experience) and second.experience_text == OTHER
    assert len(completer.calls) == 3 and len(index) == 2
    correction = user_prompt(completer.calls[2].request)
    assert "already in the dataset (e-0)" in correction


async def test_a_freeform_plan_shorter_than_min_turns_is_corrected() -> None:
    """A freeform experience whose topics add up to fewer turns than chat.min_turns (its
    chat would end too soon) is refused as short_plan and retried with a correction."""
    short = OTHER.replace(
        "Possible instant events:",
        "The conversation will likely cover the following topics:\n"
        "- Gears: the derailleur (1 turn)\n\nInitial state: Gears; 1; end\n\n"
        "Possible instant events:",
    )
    stage, completer, _, _ = make_stage([reply(short), reply(OTHER)])
    result = await stage.write(0, "e-0", PAIR, False)
    assert isinstance(result, Experience) and result.topics == []
    assert "needs at least 3" in user_prompt(completer.calls[1].request)
