"""The judge's I/O: judge.jsonl, and the model calls through the run's engine.

The sample is read through the one run-directory reader (store/rundata.py) and each
verdict asked for through the one request builder and retry loop (soc_async.calls).

judge.jsonl sits beside the report, one :class:`~.judge.Judgement` a line, appended and
fsynced as each verdict arrives; a conversation it holds is never judged again, so an
interrupted ``--judge`` picks up where it stopped (a torn last line is cut off first,
as a run's files are). A refused score is not written: the next run asks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio

from soc_async.calls import ask_until_valid, build_request
from soc_async.config import RunConfig, RunFacts
from soc_async.formats.refusal import Refusal
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.records import Conversation, Experience, Persona
from soc_async.report.judge import (
    CRITERIA,
    SCHEMA,
    Judgement,
    MalformedScore,
    Verdict,
    aggregate,
    correction,
    judge_messages,
    parse_verdict,
    sample_ids,
    transcript,
)
from soc_async.report.model import JudgeSection
from soc_async.store.appendlog import KeyedLog
from soc_async.store.rundata import RunData

__all__ = ["JUDGE_FILE", "JudgeStore", "judge_sample"]

JUDGE_FILE = "judge.jsonl"
KIND = "turn"  # the call kind whose endpoints and model judge: the chat turns'
MAX_TOKENS = 256
ATTEMPTS = 3  # a malformed reply is asked again twice, with what was wrong


class JudgeStore(KeyedLog[Judgement]):
    """judge.jsonl: the verdicts so far, by chat id; each new one appended durably."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, Judgement, lambda j: j.chat_id)


async def _judge_one(
    completer: Completer,
    config: RunConfig,
    facts: RunFacts,
    c: Conversation,
    personas: Mapping[str, Persona],
    experience: Experience | None,
) -> Judgement | str:
    """A judgement, or why the conversation's score was refused.

    Asked through the one retry loop: a malformed verdict is asked again within the same
    conversation, the reply and what was wrong with it appended."""
    system, user = (m["content"] for m in judge_messages(c, personas, experience))
    follow_up: list[dict[str, str]] = []

    def request(attempt: int, problem: str) -> ChatRequest:
        return build_request(
            config,
            facts,
            KIND,
            system,
            user,
            json_schema=SCHEMA,
            follow_up=list(follow_up),
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )

    def check(reply: Completion) -> Verdict | Refusal:
        try:
            return parse_verdict(reply.text)
        except MalformedScore as exc:
            follow_up.extend(({"role": "assistant", "content": reply.text}, correction(str(exc))))
            return Refusal(reason="malformed_score", detail=str(exc))

    outcome = await ask_until_valid(
        completer, KIND, request, check, Verdict, retries=ATTEMPTS - 1, affinity=c.chat_id
    )
    if outcome.error is not None:
        return f"request failed: {outcome.error}"
    verdict = outcome.value
    if verdict is None:
        assert outcome.last is not None  # no verdict and no error: every reply refused
        return f"malformed score: {outcome.last.detail}"
    return Judgement(
        chat_id=c.chat_id,
        scores={k: getattr(verdict, k) for k in CRITERIA},
        reason=verdict.reason,
        model=outcome.model,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
    )


async def judge_sample(
    completer: Completer,
    config: RunConfig,
    facts: RunFacts,
    run_dir: str | Path,
    store: JudgeStore,
    *,
    n: int,
    seed: int,
) -> JudgeSection:
    """Judges the sampled conversations that ``store`` does not hold yet, then returns
    the figure over the whole sample. Requests are built from ``config`` (the judge's,
    resolved by the command) and ``facts`` (the gateway's). Raises ServerError when the
    server is gone."""
    run = RunData(run_dir)
    ids = sample_ids((c.chat_id for c in run.conversations()), n, seed)
    pending = [cid for cid in ids if cid not in store.done]
    conversations = run.conversations_by_id(set(pending))
    personas = run.personas
    refused: dict[str, str] = {}

    async def one(cid: str) -> None:
        c = conversations[cid]
        experience = run.experiences.get(c.experience_id)
        result = await _judge_one(completer, config, facts, c, personas, experience)
        if isinstance(result, Judgement):
            store.add(result)
        else:
            refused[cid] = result

    async with anyio.create_task_group() as tg:
        for cid in pending:
            tg.start_soon(one, cid)

    judged = [store.done[cid] for cid in ids if cid in store.done]
    worst = sorted(judged, key=lambda j: (j.total, j.chat_id))[:5]
    missing = {j.chat_id for j in worst} - conversations.keys()
    if missing:  # judged by an earlier run: fetch their text for the report
        conversations.update(run.conversations_by_id(missing))
    names = {pid: p.meta.name for pid, p in personas.items()}
    texts = {
        j.chat_id: transcript(conversations[j.chat_id], names)
        for j in worst
        if j.chat_id in conversations
    }
    return aggregate(judged, sample=len(ids), seed=seed, refused=refused, transcripts=texts)
