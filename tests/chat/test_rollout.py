"""The chat rollout in the test's own event loop, against a scripted completer.

Every reply that is not scripted on purpose comes from ScriptedWriter, which writes a
valid turn read off the prompt, so each test changes one thing: a fold, a refused turn,
a journal to resume from, a cancellation, a failure while a summary is in flight.
"""

from __future__ import annotations

import asyncio
import re

import anyio
import factories
import pytest

from soc_async.calls import prompts
from soc_async.chat.rollout import (
    ChatEvent,
    ChatStage,
    FoldEvent,
    StartEvent,
    TurnEvent,
    decode_event,
    encode_event,
    render_turn,
)
from soc_async.config import RunConfig, RunFacts, from_dict
from soc_async.errors import RequestError
from soc_async.llm.types import ChatRequest
from soc_async.records import (
    Conversation,
    Experience,
    ExperienceMeta,
    Failure,
    Persona,
    TopicSlot,
    Usage,
)
from soc_async.testing.completer import Gate, Reply, ReplyFn, ScriptedCompleter, writer_replies
from soc_async.testing.scripted import ScriptedWriter

CHAT_ID = "c-0000001-bb"
NAMES = {"p-mia": "Mia Chen", "p-tom": "Tomás Rivera"}
# Freeform: the chat runs exactly the roadmap's 10 turns and never ends early, whatever
# the writer does, so every count below is exact.
ROADMAP = [("Flat viewing", 4), ("Deposit money", 3), ("Moving day", 3)]
TURNS = 10


def persona(pid: str) -> Persona:
    name = NAMES[pid]
    card = f"<character>\n**Name:** {name}\n</character>"
    return factories.persona(pid, name=name, region="Southern Europe", text=card)


PERSONAS = {pid: persona(pid) for pid in NAMES}
EXPERIENCE = Experience(
    id="e-0000001-aa",
    persona_ids=["p-mia", "p-tom"],
    experience_text="Mia and Tomás are about to share a flat and sort out the move.",
    style="freeform",
    cadence="realtime",
    topics=[TopicSlot(title=t, turns=n) for t, n in ROADMAP],
    initial_state="",
    instant_events=["the landlord calls", "the bus arrives", "the kettle boils over"],
    opener="p-tom",
    meta=ExperienceMeta(iteration=0, model="m", time_taken=0.0),
)


def config(**chat: object) -> RunConfig:
    return from_dict({"seed": 5, "chat": {"instant_event_p": 0.0, **chat}})


def make_stage(cfg: RunConfig, completer: ScriptedCompleter) -> tuple[ChatStage, list[ChatEvent]]:
    """A stage whose journal keeps each event as the store would read it back."""
    journal: list[ChatEvent] = []

    async def append(chat_id: str, event: ChatEvent) -> None:
        assert chat_id == CHAT_ID
        journal.append(decode_event(encode_event(event)))

    return ChatStage(cfg, completer, facts=RunFacts(model="served"), journal=append), journal


def summaries(writer: ScriptedWriter) -> ReplyFn:
    """The writer's replies, but each summary says which call wrote it."""
    write = writer_replies(writer)

    def reply(kind: str, request: ChatRequest, n: int) -> Reply:
        return f"Summary written by call {n}." if kind == "summary" else write(kind, request, n)

    return reply


def turn_events(journal: list[ChatEvent]) -> list[TurnEvent]:
    return [e for e in journal if isinstance(e, TurnEvent)]


def state_line(prompt: str) -> str:
    match = re.search(r"^State line: (.+)$", prompt, re.MULTILINE)
    assert match is not None
    return match.group(1)


async def test_rollout_with_a_fold() -> None:
    """Once the window overflows, the oldest turns are summarised beside the next turns;
    the summary lands in the journal and the later prompts, and is the conversation's."""
    completer = ScriptedCompleter(summaries(ScriptedWriter(seed=1)))
    stage, journal = make_stage(config(active_window=6, fold=3), completer)
    result = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert isinstance(result, Conversation)
    assert len(result.turns) == TURNS and result.ended_by == "max_turns"

    (call,) = completer.of_kind("summary")  # due once 7 turns are unfolded
    summary = f"Summary written by call {completer.calls.index(call)}."
    folded = [render_turn(t, NAMES) for t in result.turns[:3]]
    assert all(text in call.user for text in folded)
    assert render_turn(result.turns[3], NAMES) not in call.user
    assert call.affinity == CHAT_ID

    assert isinstance(journal[0], StartEvent)
    folds = [e for e in journal if isinstance(e, FoldEvent)]
    assert [(f.summary, f.count) for f in folds] == [(summary, 3)]
    assert folds[0].usage == Usage(prompt=100, completion=50)  # what the summary call cost
    assert result.summary == summary
    assert [e.turn for e in turn_events(journal)] == result.turns

    # Turn prompts asked after the fold landed show the summary instead of the turns.
    landed = journal.index(folds[0]) - 1  # turns accepted before the fold was applied
    turns = completer.of_kind("turn")
    for before in turns[:landed]:
        assert "Summary of the earlier part" not in before.user
    assert landed < TURNS
    for after in turns[landed:]:
        assert f"Summary of the earlier part: {summary}" in after.user
        assert not any(text in after.user for text in folded)
    assert result.usage.prompt == 100 * len(completer.calls)  # the summary call counts too


def broken_state(text: str) -> str:
    """A valid turn's reply with its state line moved on to the last topic."""
    return re.sub(r"<state>\n.*\n", "<state>\nMoving day; 1 turn remaining; end\n", text)


async def test_every_turn_prompt_is_the_rendered_templates() -> None:
    """The prompt a turn sends, spliced from parts kept encoded, reads exactly as the
    templates render it: the fixed part, the summary and the unfolded turns, the tail."""
    completer = ScriptedCompleter(summaries(ScriptedWriter(seed=1)))
    stage, _ = make_stage(config(active_window=6, fold=3), completer)
    result = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert isinstance(result, Conversation)
    turns = completer.of_kind("turn")
    assert len(turns) == TURNS
    people = [
        {"name": NAMES[pid], "card": PERSONAS[pid].persona_text} for pid in ("p-tom", "p-mia")
    ]
    fixed = prompts.render(
        "chat_fixed.j2", people=people, experience_text=EXPERIENCE.experience_text
    )
    summary = ""
    folded = 0
    for n, call in enumerate(turns):
        if result.summary in call.user:  # the fold has landed
            summary, folded = result.summary, 3
        transcript = "\n\n".join(render_turn(t, NAMES) for t in result.turns[folded:n])
        user = prompts.render("chat_user.j2", summary=summary, transcript=transcript)
        assert call.user.startswith(fixed + user + "\n## Next turn\n")
    assert folded == 3  # the last turns were asked with the summary


async def test_a_refused_turn_is_asked_again_with_its_correction() -> None:
    """A turn that breaks the rules is not journaled; the next prompt for the same turn is
    the same plus one correction line, and the conversation counts the retry by reason."""
    write = writer_replies(ScriptedWriter(seed=2))

    def reply(kind: str, request: ChatRequest, n: int) -> Reply:
        text = write(kind, request, n)
        return broken_state(str(text)) if n == 1 else text

    completer = ScriptedCompleter(reply)
    stage, journal = make_stage(config(), completer)
    result = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert isinstance(result, Conversation)
    assert result.retries == {"state_mismatch": 1}
    assert len(completer.calls) == TURNS + 1
    refused, retried = completer.calls[1].user, completer.calls[2].user
    assert "rejected" not in refused
    lines = [line for line in retried.splitlines() if "rejected" in line]
    assert len(lines) == 1
    assert "expected state 'Flat viewing; 2 turns remaining; Deposit money'" in lines[0]
    assert "'Moving day; 1 turn remaining; end'" in lines[0]
    assert lines[0].endswith("Write the turn again following the rules.")
    assert retried.replace(lines[0] + "\n", "") == refused
    assert [e.turn for e in turn_events(journal)] == result.turns
    assert result.turns[1].state == "Flat viewing; 2 turns remaining; Deposit money"
    assert result.usage.prompt == 100 * (TURNS + 1)  # the refused attempt cost tokens too


async def test_a_turn_never_valid_fails_the_chat() -> None:
    """Past the retry budget the chat is a Failure naming the reason, with every attempt
    counted; the refused turn is never journaled."""
    write = writer_replies(ScriptedWriter(seed=2))

    def reply(kind: str, request: ChatRequest, n: int) -> Reply:
        text = write(kind, request, n)
        return broken_state(str(text)) if n >= 1 else text

    completer = ScriptedCompleter(reply)
    cfg = from_dict({"seed": 5, "calls": {"turn": {"retries": 2}}})
    stage, journal = make_stage(cfg, completer)
    result = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert isinstance(result, Failure)
    assert (result.id, result.stage) == (CHAT_ID, "chats")
    assert result.reason == "retries_exhausted:state_mismatch"
    assert result.attempts == 4 == len(completer.calls)
    assert result.retries == {"state_mismatch": 3}
    assert len(turn_events(journal)) == 1


async def test_resume_continues_mid_conversation() -> None:
    """A rollout given the journal of an interrupted one keeps its turns and its fold,
    asks only for the remaining turns, starting with the next speaker, and draws the same
    instant events as the uninterrupted rollout."""
    cfg = config(active_window=3, fold=2, instant_event_p=0.5)
    first = ScriptedCompleter(summaries(ScriptedWriter(seed=3)))
    stage, journal = make_stage(cfg, first)
    whole = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert isinstance(whole, Conversation)
    events = [t.instant_event for t in whole.turns]
    fold = next(i for i, e in enumerate(journal) if isinstance(e, FoldEvent))
    cut = journal[: fold + 2]  # the start, some turns, the fold and one more turn
    kept = [e.turn for e in turn_events(cut)]
    k = len(kept)
    assert 2 < k < TURNS - 1
    assert any(events[k:]), "the remaining turns should draw an instant event"

    again = ScriptedCompleter(summaries(ScriptedWriter(seed=4)))  # other words, same rules
    stage, rest = make_stage(cfg, again)
    resumed = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS, cut)
    assert isinstance(resumed, Conversation)
    assert resumed.turns[:k] == kept
    assert [t.instant_event for t in resumed.turns] == events
    assert [t.state for t in resumed.turns] == [t.state for t in whole.turns]
    # The pacing draw too: each turn holds the count journaled for it, resumed or not.
    counts = [len(t.messages) for t in whole.turns]
    assert [len(t.messages) for t in resumed.turns] == counts
    assert [e.messages for e in turn_events(journal)] == counts

    asked = again.of_kind("turn")
    assert len(asked) == TURNS - k
    speaker = NAMES[whole.persona_ids[k % 2]]
    assert f"Speaker: {speaker} " in asked[0].user
    assert state_line(asked[0].user) == whole.turns[k].state
    summary = cut[fold]
    assert isinstance(summary, FoldEvent)
    assert f"Summary of the earlier part: {summary.summary}" in asked[0].user
    assert render_turn(kept[0], NAMES) not in asked[0].user  # folded before the cut
    assert render_turn(kept[-1], NAMES) in asked[0].user
    for call, event in zip(asked, events[k:], strict=True):
        assert ("Private event for" in call.user) == (event is not None)
        assert event is None or event in call.user

    assert not any(isinstance(e, StartEvent) for e in rest)
    assert [e.turn for e in turn_events(rest)] == resumed.turns[k:]
    # The usage journaled before the cut is kept: the resumed record counts all the work.
    assert resumed.usage == whole.usage


async def test_cancelled_mid_turn_leaves_no_task_and_journals_nothing_of_it() -> None:
    """Cancelling the scope while a turn call and a summary call are held ends both calls;
    the turn in flight is not journaled and no task outlives the rollout."""
    turn_gate, summary_gate = Gate(after=4), Gate()
    completer = ScriptedCompleter.from_writer(
        ScriptedWriter(seed=5), gates={"turn": turn_gate, "summary": summary_gate}
    )
    stage, journal = make_stage(config(active_window=3, fold=2), completer)
    before = asyncio.all_tasks()
    finished: list[object] = []

    async def roll_out() -> None:
        finished.append(await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS))

    async with anyio.create_task_group() as tg:
        tg.start_soon(roll_out)
        await turn_gate.reached()
        await summary_gate.reached()
        tg.cancel_scope.cancel()

    assert asyncio.all_tasks() == before
    assert finished == []
    held = completer.of_kind("turn")[4], completer.of_kind("summary")[0]
    assert [c.outcome for c in held] == ["cancelled", "cancelled"]
    assert (turn_gate.held, summary_gate.held) == (0, 0)
    assert isinstance(journal[0], StartEvent)
    assert len(turn_events(journal)) == 4 == len(journal) - 1  # no fold, no fifth turn


async def test_failed_turn_cancels_the_summary_in_flight() -> None:
    """A turn that fails for good while a summary call is held ends the rollout with the
    Failure at once; the summary call is cancelled and no task is left behind."""
    write = writer_replies(ScriptedWriter(seed=6))
    turns = 0

    def reply(kind: str, request: ChatRequest, n: int) -> Reply:
        nonlocal turns
        if kind == "turn":
            turns += 1
            if turns == 5:
                return RequestError("bad request", status=400)
        return write(kind, request, n)

    summary_gate = Gate()
    completer = ScriptedCompleter(reply, gates={"summary": summary_gate})
    stage, journal = make_stage(config(active_window=3, fold=2), completer)
    before = asyncio.all_tasks()
    result = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert asyncio.all_tasks() == before
    assert isinstance(result, Failure)
    assert (result.reason, result.attempts) == ("request:http_400", 5)
    (summary,) = completer.of_kind("summary")
    assert summary.outcome == "cancelled" and summary_gate.held == 0
    assert len(turn_events(journal)) == 4
    assert not any(isinstance(e, FoldEvent) for e in journal)


async def test_failed_summary_cancels_the_turn_in_flight() -> None:
    """A summary call that fails for good ends the rollout as a Failure with its reason;
    the turn call held meanwhile is cancelled and no task is left behind."""
    turn_gate = Gate(after=4)
    write = writer_replies(ScriptedWriter(seed=7))

    def reply(kind: str, request: ChatRequest, n: int) -> Reply:
        if kind == "summary":
            return RequestError("server said no", status=422)
        return write(kind, request, n)

    completer = ScriptedCompleter(reply, gates={"turn": turn_gate})
    stage, journal = make_stage(config(active_window=3, fold=2), completer)
    before = asyncio.all_tasks()
    result = await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    assert asyncio.all_tasks() == before
    assert isinstance(result, Failure)
    assert result.reason == "request:http_422"
    assert completer.of_kind("turn")[4].outcome == "cancelled"
    assert completer.of_kind("summary")[0].outcome == "raised"
    assert len(turn_events(journal)) == 4


@pytest.mark.parametrize("kind", ["turn", "summary"])
async def test_every_call_carries_the_chat_as_affinity(kind: str) -> None:
    """Turn and summary calls name the chat, so a router keeps it on one server; a turn's
    priority is the number of turns left, so chats close to done go first."""
    completer = ScriptedCompleter.from_writer(ScriptedWriter(seed=8))
    stage, _ = make_stage(config(active_window=3, fold=2), completer)
    await stage.roll_out(CHAT_ID, EXPERIENCE, PERSONAS)
    calls = completer.of_kind(kind)
    assert calls and all(c.affinity == CHAT_ID for c in calls)
    if kind == "turn":
        assert [c.priority for c in calls] == list(range(TURNS, 0, -1))
