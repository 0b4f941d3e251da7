"""The pipeline in the test's own event loop: a real run directory, a scripted completer.

tests/test_run_fake.py runs whole runs in child processes over HTTP; these tests drive
:class:`~soc_async.run.pipeline.Pipeline` directly, so they can stop it at an exact call and
look at what each run asked the model for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import anyio

from soc_async import config as config_mod
from soc_async.chat.rollout import StartEvent, TurnEvent, decode_event
from soc_async.config import RunConfig, RunFacts, from_dict
from soc_async.records import Conversation, Experience, Persona, id_index, make_id
from soc_async.run.pipeline import Pipeline
from soc_async.run.progress import RunCounters
from soc_async.scheduler.runner import StopSignal
from soc_async.store import DATA_FILES, RunDir, read_records, run_identity
from soc_async.testing.completer import Gate, ScriptedCompleter
from soc_async.testing.scripted import ScriptedWriter

PERSONAS, EXPERIENCES, CHATS = 4, 3, 3


def config(out: Path) -> RunConfig:
    return from_dict(
        {
            "seed": 3,
            "out": str(out),
            "targets": {"personas": PERSONAS, "experiences": EXPERIENCES, "chats": CHATS},
            "chat": {"max_turns": 4},
            "client": {"shutdown_grace_s": 0},
        }
    )


def pipeline(
    cfg: RunConfig, run_dir: RunDir, completer: ScriptedCompleter, stop: StopSignal | None = None
) -> Pipeline:
    return Pipeline(
        cfg,
        run_dir,
        completer,
        facts=RunFacts(model="served"),
        stop=stop or StopSignal(grace_s=0),
        counters=RunCounters(),
    )


def records(run_dir: RunDir, name: str) -> list[object]:
    return [r for _, r in read_records(run_dir.file(name), (Persona, Experience, Conversation))]


def data(run_dir: RunDir) -> dict[str, bytes]:
    return {
        name: run_dir.file(name).read_bytes() if run_dir.file(name).exists() else b""
        for name in DATA_FILES
    }


async def test_a_run_writes_every_stage(tmp_path: Path) -> None:
    """Personas, then experiences, then one chat per experience: each record once, chat j
    from experience j, the counters agree with the files, and no task is left behind."""
    cfg = config(tmp_path / "run")
    run_dir = RunDir.create(cfg.out, config_mod.dump(cfg), run_identity(cfg))
    completer = ScriptedCompleter.from_writer(ScriptedWriter(seed=1))
    before = asyncio.all_tasks()
    run = pipeline(cfg, run_dir, completer)
    await run.run()
    assert asyncio.all_tasks() == before
    run_dir.release()

    personas = records(run_dir, "personas")
    experiences = records(run_dir, "experiences")
    chats = records(run_dir, "conversations")
    assert (len(personas), len(experiences), len(chats)) == (PERSONAS, EXPERIENCES, CHATS)
    assert not run_dir.file("failures").exists() or not run_dir.file("failures").read_bytes()
    for chat in chats:
        assert isinstance(chat, Conversation)
        assert id_index(chat.chat_id) == id_index(chat.experience_id)
        assert chat.chat_id == make_id(cfg.seed, "chats", id_index(chat.chat_id))
    turns = sum(len(c.turns) for c in chats if isinstance(c, Conversation))
    assert Counter(completer.kinds) == {
        "persona": PERSONAS,
        "experience": EXPERIENCES,
        "turn": turns,
    }
    # The personas are all written before the first experience is asked for.
    assert completer.kinds[:PERSONAS] == ["persona"] * PERSONAS
    stages = run.counters.stages
    assert [(stages[s].done, stages[s].failed) for s in ("personas", "experiences", "chats")] == [
        (PERSONAS, 0),
        (EXPERIENCES, 0),
        (CHATS, 0),
    ]
    assert RunDir.open(cfg.out, repair=False).journaled_ids() == set()


async def test_an_interrupted_run_resumes_and_writes_nothing_twice(tmp_path: Path) -> None:
    """A run stopped while a turn call is held resumes in a new pipeline: what was written
    stays as it was, nothing is asked for again, a chat in progress continues from its
    journaled turns; a third run finds nothing to do and writes nothing."""
    cfg = config(tmp_path / "run")
    run_dir = RunDir.create(cfg.out, config_mod.dump(cfg), run_identity(cfg))
    gate = Gate(after=5)
    first = ScriptedCompleter.from_writer(ScriptedWriter(seed=1), gates={"turn": gate})
    stop = StopSignal(grace_s=0)
    async with stop.guard(), anyio.create_task_group() as tg:
        tg.start_soon(pipeline(cfg, run_dir, first, stop).run)
        await gate.reached()
        stop.request("test")
    assert stop.requested
    assert "cancelled" in [c.outcome for c in first.of_kind("turn")]
    run_dir.release()
    written = data(run_dir)
    done = {
        name: [h.item_id for h in run_dir.scan(name)]
        for name in ("personas", "experiences", "conversations")
    }
    assert len(done["personas"]) == PERSONAS
    assert len(done["conversations"]) < CHATS

    run_dir = RunDir.open(cfg.out)
    pending = {
        chat_id: [decode_event(e) for e in events]
        for chat_id, events in run_dir.journal_pending().items()
    }
    journaled = {
        chat_id: [e.turn for e in events if isinstance(e, TurnEvent)]
        for chat_id, events in pending.items()
    }
    assert any(journaled.values()), "a chat should be stopped after a turn or more"
    assert all(isinstance(events[0], StartEvent) for events in pending.values())

    second = ScriptedCompleter.from_writer(ScriptedWriter(seed=2))
    resumed = pipeline(cfg, run_dir, second)
    await resumed.run()
    run_dir.release()

    after = data(run_dir)
    for name, content in written.items():
        assert after[name].startswith(content), f"{name} was rewritten"
    for name in ("personas", "experiences", "conversations"):
        ids = [h.item_id for h in run_dir.scan(name)]
        assert len(ids) == len(set(ids)), f"an id twice in {name}"
    chats = {c.chat_id: c for c in records(run_dir, "conversations") if isinstance(c, Conversation)}
    assert len(records(run_dir, "personas")) == PERSONAS
    assert len(records(run_dir, "experiences")) == EXPERIENCES
    assert len(chats) == CHATS
    assert resumed.counters.stages["chats"].done == CHATS

    assert "persona" not in second.kinds
    assert len(second.of_kind("experience")) == EXPERIENCES - len(done["experiences"])
    for chat_id, turns in journaled.items():
        assert chats[chat_id].turns[: len(turns)] == turns
        asked = [c for c in second.of_kind("turn") if c.affinity == chat_id]
        assert len(asked) == len(chats[chat_id].turns) - len(turns)
    finished_before = set(done["conversations"])
    assert not any(c.affinity in finished_before for c in second.calls)

    run_dir = RunDir.open(cfg.out)
    third = ScriptedCompleter.from_writer(ScriptedWriter(seed=3))
    await pipeline(cfg, run_dir, third).run()
    run_dir.release()
    assert third.calls == []
    assert data(run_dir) == after
