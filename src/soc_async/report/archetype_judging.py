"""The archetype reading's I/O: archetypes.jsonl, and the ``archetype`` calls.

archetypes.jsonl sits beside the report, one :class:`~.archetype_judge.ArchetypeReading`
a line, appended and fsynced as each reading arrives; a card it holds is not read again,
so an interrupted ``--judge`` picks up where it stopped (a torn last line is cut off
first). A refused reading is not written: the next run asks again.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from soc_async.calls import ask_until_valid, build_request
from soc_async.config import RunConfig, RunFacts
from soc_async.llm.types import ChatRequest, Completer
from soc_async.records import Persona
from soc_async.report.archetype_judge import (
    ArchetypeJudged,
    ArchetypeReading,
    CardReading,
    read_reply,
    reading_schema,
    system_prompt,
    user_prompt,
)
from soc_async.report.judge import sample_ids
from soc_async.store import PERSONAS
from soc_async.store.appendlog import KeyedLog
from soc_async.store.rundata import RunData

__all__ = ["ARCHETYPE_FILE", "KIND", "ArchetypeStore", "read_archetypes"]

ARCHETYPE_FILE = "archetypes.jsonl"
KIND = "archetype"


class ArchetypeStore(KeyedLog[ArchetypeReading]):
    """archetypes.jsonl: the readings so far, by persona id; each new one appended
    durably."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, ArchetypeReading, lambda r: r.persona_id)


def _request(
    config: RunConfig, facts: RunFacts, system: str, pid: str, card: str, correction: str
) -> ChatRequest:
    return build_request(
        config,
        facts,
        KIND,
        system,
        user_prompt(card, correction),
        json_schema=reading_schema(config.archetypes),
        item_id=pid,
    )


async def read_archetypes(
    completer: Completer,
    run_dir: str | Path,
    config: RunConfig,
    facts: RunFacts,
    store: ArchetypeStore,
    *,
    n: int,
    seed: int,
) -> ArchetypeJudged:
    """Reads the sampled cards that ``store`` does not hold yet (``n`` persona ids by the
    seeded hash of :func:`.judge.sample_ids`), then returns every reading of the sample.
    Raises ServerError when the server is gone."""
    run = RunData(run_dir)
    ids = sample_ids((p.id for p in run.records(PERSONAS, Persona)), n, seed)
    pending = set(ids) - store.done.keys()
    cards = {p.id: p.persona_text for p in run.records(PERSONAS, Persona) if p.id in pending}
    system = system_prompt(config.archetypes)
    call = config.call(KIND)
    refused: dict[str, str] = {}

    async def one(pid: str) -> None:
        outcome = await ask_until_valid(
            completer,
            KIND,
            lambda attempt, correction: _request(
                config, facts, system, pid, cards[pid], correction
            ),
            lambda completion: read_reply(completion, config.archetypes),
            CardReading,
            retries=call.retries,
            affinity=pid,
        )
        if outcome.value is None:
            why = outcome.error or outcome.last
            refused[pid] = str(why)
            return
        store.add(
            ArchetypeReading(
                persona_id=pid,
                temperament=outcome.value.temperament,
                coping=outcome.value.coping,
                model=outcome.model,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
            )
        )

    async with anyio.create_task_group() as tg:
        for pid in sorted(cards):
            tg.start_soon(one, pid)

    readings = {pid: store.done[pid] for pid in ids if pid in store.done}
    models = sorted({r.model for r in readings.values() if r.model})
    return ArchetypeJudged(
        sample=len(ids),
        seed=seed,
        model=", ".join(models),
        read=len(readings),
        refused=refused,
        temperament={pid: r.temperament for pid, r in readings.items()},
        coping={pid: r.coping for pid, r in readings.items()},
    )
