"""The judge's I/O: judge.jsonl, and the model calls through the run's engine.

judge.jsonl sits beside the report, one :class:`~.judge.Judgement` a line, appended and
fsynced as each verdict arrives; a conversation it holds is never judged again, so an
interrupted ``--judge`` picks up where it stopped (a torn last line is cut off first,
as a run's files are). A refused score is not written: the next run asks again.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import anyio
import msgspec

from soc_async.errors import InputError, RequestError
from soc_async.llm.types import ChatRequest, Completer
from soc_async.records import Conversation, Experience, Persona
from soc_async.report.judge import (
    CRITERIA,
    SCHEMA,
    Judgement,
    MalformedScore,
    aggregate,
    correction,
    judge_messages,
    parse_verdict,
    sample_ids,
    transcript,
)
from soc_async.report.model import JudgeSection
from soc_async.store import CONVERSATIONS, EXPERIENCES, PERSONAS, read_records

__all__ = ["JUDGE_FILE", "JudgeStore", "judge_sample"]

JUDGE_FILE = "judge.jsonl"
KIND = "turn"  # the call kind whose endpoints and model judge: the chat turns'
MAX_TOKENS = 256
ATTEMPTS = 3  # a malformed reply is asked again twice, with what was wrong

_decode = msgspec.json.Decoder(Judgement).decode
_encode = msgspec.json.Encoder().encode


class JudgeStore:
    """judge.jsonl: read on open, appended to durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, Judgement] = {}
        if not path.exists():
            return
        data = path.read_bytes()
        good = data.rfind(b"\n") + 1  # a torn last line (no newline) is left out
        for lineno, line in enumerate(data[:good].splitlines(), 1):
            if not line.strip():
                continue
            try:
                j = _decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise InputError(f"{path}:{lineno}: not a judgement line ({exc})") from exc
            self.done[j.chat_id] = j
        if good < len(data):
            with path.open("r+b") as f:
                f.truncate(good)

    def add(self, j: Judgement) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(_encode(j) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[j.chat_id] = j


def _load_sample(
    run_dir: Path, wanted: Collection[str]
) -> tuple[dict[str, Conversation], dict[str, Persona], dict[str, Experience]]:
    """The sampled conversations and the personas and experiences they need (streamed)."""
    conversations = {
        c.chat_id: c
        for _, c in read_records(run_dir / CONVERSATIONS, Conversation, allow_torn=True)
        if c.chat_id in wanted
    }
    persona_ids = {pid for c in conversations.values() for pid in c.persona_ids}
    experience_ids = {c.experience_id for c in conversations.values()}
    personas: dict[str, Persona] = {}
    if (run_dir / PERSONAS).is_file():
        for _, p in read_records(run_dir / PERSONAS, Persona, allow_torn=True):
            if p.id in persona_ids:
                personas[p.id] = p
    experiences: dict[str, Experience] = {}
    if (run_dir / EXPERIENCES).is_file():
        for _, e in read_records(run_dir / EXPERIENCES, Experience, allow_torn=True):
            if e.id in experience_ids:
                experiences[e.id] = e
    return conversations, personas, experiences


async def _judge_one(
    completer: Completer,
    c: Conversation,
    personas: dict[str, Persona],
    experience: Experience | None,
) -> Judgement | str:
    """A judgement, or why the conversation's score was refused."""
    messages = judge_messages(c, personas, experience)
    prompt = completion = 0
    problem = ""
    model = ""
    for _ in range(ATTEMPTS):
        request = ChatRequest(
            messages=list(messages), max_tokens=MAX_TOKENS, temperature=0.0, json_schema=SCHEMA
        )
        try:
            reply = await completer.complete(KIND, request, affinity=c.chat_id)
        except RequestError as exc:
            return f"request failed: {exc}"
        prompt += reply.usage.prompt
        completion += reply.usage.completion
        model = reply.model
        try:
            verdict = parse_verdict(reply.text)
        except MalformedScore as exc:
            problem = f"malformed score: {exc}"
            messages = [
                *messages,
                {"role": "assistant", "content": reply.text},
                correction(str(exc)),
            ]
            continue
        scores = {k: getattr(verdict, k) for k in CRITERIA}
        return Judgement(
            chat_id=c.chat_id,
            scores=scores,
            reason=verdict.reason,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
    return problem


async def judge_sample(
    completer: Completer,
    run_dir: str | Path,
    store: JudgeStore,
    *,
    n: int,
    seed: int,
) -> JudgeSection:
    """Judges the sampled conversations that ``store`` does not hold yet, then returns
    the figure over the whole sample. Raises ServerError when the server is gone."""
    run = Path(run_dir)
    every = read_records(run / CONVERSATIONS, Conversation, allow_torn=True)
    ids = sample_ids((c.chat_id for _, c in every), n, seed)
    pending = [cid for cid in ids if cid not in store.done]
    conversations, personas, experiences = _load_sample(run, set(pending))
    refused: dict[str, str] = {}

    async def one(cid: str) -> None:
        c = conversations[cid]
        result = await _judge_one(completer, c, personas, experiences.get(c.experience_id))
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
        more, more_personas, _ = _load_sample(run, missing)
        conversations.update(more)
        personas.update(more_personas)
    names = {pid: p.meta.name for pid, p in personas.items()}
    texts = {
        j.chat_id: transcript(conversations[j.chat_id], names)
        for j in worst
        if j.chat_id in conversations
    }
    return aggregate(judged, sample=len(ids), seed=seed, refused=refused, transcripts=texts)
