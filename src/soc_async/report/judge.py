"""Figure 9, the judge: a seeded sample of conversations scored by the served model.

The pure half: which conversations (a seeded bottom-k sample by hash, so the same seed
picks the same conversations whatever the file order, and a grown dataset keeps most of
its sample), the prompt, the JSON schema the reply is held to, the strict reading of a
reply, and the aggregation. The model calls and judge.jsonl live in :mod:`.judging`.

A reply is a JSON object with one integer 1-5 per criterion and a one-line reason.
vLLM constrains decoding to the schema (``structured_outputs.json``), but a grammar
guarantees shape, not every value: the reply is read again here, strictly, and one
that is not exactly that (a 7, a 4.5, a missing criterion, a reason over two lines) is
refused, never stored or counted.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import msgspec

from soc_async.records import Conversation, Experience, Persona
from soc_async.report.model import Judged, JudgeSection

__all__ = [
    "CRITERIA",
    "MAX_REASON_CHARS",
    "SCHEMA",
    "Judgement",
    "MalformedScore",
    "Verdict",
    "aggregate",
    "correction",
    "judge_messages",
    "parse_verdict",
    "sample_ids",
    "transcript",
]

CRITERIA: tuple[str, ...] = ("persona_consistency", "naturalness", "topic_adherence", "pacing")
MAX_REASON_CHARS = 300
WORST = 5

Score = Annotated[int, msgspec.Meta(ge=1, le=5)]


class Verdict(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A reply as the schema allows it, and nothing else."""

    persona_consistency: Score
    naturalness: Score
    topic_adherence: Score
    pacing: Score
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REASON_CHARS)]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{k: {"type": "integer", "minimum": 1, "maximum": 5} for k in CRITERIA},
        "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS},
    },
    "required": [*CRITERIA, "reason"],
    "additionalProperties": False,
}

_decode_verdict = msgspec.json.Decoder(Verdict).decode


class MalformedScore(ValueError):
    """A judge reply that is not a valid verdict; the message says what is wrong."""


class Judgement(msgspec.Struct, kw_only=True, tag="judgement", tag_field="kind"):
    """One line of judge.jsonl: a conversation scored, and by what."""

    chat_id: str
    scores: dict[str, int]
    reason: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return sum(self.scores.values())


def parse_verdict(text: str) -> Verdict:
    """The verdict in a reply; MalformedScore when it is anything but the schema's object."""
    try:
        verdict = _decode_verdict(text.strip().encode())
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedScore(str(exc).replace("$.", "") or "not JSON") from exc
    reason = verdict.reason.strip()
    if not reason or "\n" in reason or "\r" in reason:
        raise MalformedScore("reason must be one non-empty line")
    verdict.reason = reason
    return verdict


def _rank(seed: int, chat_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{chat_id}".encode(), digest_size=8).digest()


def sample_ids(ids: Iterable[str], n: int, seed: int) -> list[str]:
    """The ``n`` ids of smallest seeded hash: a uniform sample, the same for the same
    seed whatever order the ids come in; streams, holding ``n`` ids. Sorted by rank."""
    if n <= 0:
        return []
    return heapq.nsmallest(n, ids, key=lambda chat_id: _rank(seed, chat_id))


def transcript(c: Conversation, names: Mapping[str, str]) -> str:
    """The conversation as lines "[DD.MM HH:MM] Name (type): text", turn by turn."""
    lines = []
    for k, turn in enumerate(c.turns, 1):
        who = names.get(turn.sender, turn.sender)
        lines.append(f"-- turn {k} ({turn.state})")
        for m in turn.messages:
            kind = "" if m.type == "text" else f" ({m.type})"
            lines.append(f"[{m.d} {m.t}] {who}{kind}: {m.text}")
    return "\n".join(lines)


SYSTEM = (
    "You judge synthetic chat conversations between two people. Score each criterion "
    "from 1 (poor) to 5 (excellent):\n"
    "- persona_consistency: each person writes as their card describes them\n"
    "- naturalness: reads like a real chat between these two people, not like an AI\n"
    "- topic_adherence: follows the roadmap's topics in order, within their budgets\n"
    "- pacing: message timing and bursts fit the stated cadence\n"
    "Answer with one JSON object: the four integer scores and 'reason', one short line "
    "naming the main weakness."
)


def judge_messages(
    c: Conversation, personas: Mapping[str, Persona], experience: Experience | None
) -> list[dict[str, str]]:
    """The chat messages of one judge request."""
    names = {pid: p.meta.name for pid, p in personas.items()}
    cards = "\n\n".join(personas[pid].persona_text for pid in c.persona_ids if pid in personas)
    roadmap = "\n".join(f"- {t.title} ({t.turns} turns)" for t in c.topics) or "- (none)"
    scene = experience.experience_text if experience is not None else "(not available)"
    user = (
        f"The two people:\n{cards}\n\nWhy they talk:\n{scene}\n\n"
        f"Style: {c.style}. Cadence: {c.cadence}.\nRoadmap:\n{roadmap}\n\n"
        f"The conversation:\n{transcript(c, names)}\n\nYour verdict as JSON:"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def correction(problem: str) -> dict[str, str]:
    """The message that asks again after a malformed reply."""
    return {
        "role": "user",
        "content": f"That reply was not valid ({problem}). Answer with the JSON object "
        f"only: integers 1-5 for {', '.join(CRITERIA)}, and a one-line reason.",
    }


def aggregate(
    judgements: Iterable[Judgement],
    *,
    sample: int,
    seed: int,
    refused: Mapping[str, str] | None = None,
    transcripts: Mapping[str, str] | None = None,
) -> JudgeSection:
    """The figure: score distributions and means per criterion, the five lowest totals
    (ties broken by chat id)."""
    done = list(judgements)
    distribution = {k: Counter(j.scores[k] for j in done) for k in CRITERIA}
    worst = sorted(done, key=lambda j: (j.total, j.chat_id))[:WORST]
    models = Counter(j.model for j in done if j.model)
    return JudgeSection(
        sample=sample,
        seed=seed,
        model=models.most_common(1)[0][0] if models else "",
        judged=len(done),
        refused=dict(refused or {}),
        criteria=list(CRITERIA),
        distribution={
            k: {str(s): distribution[k].get(s, 0) for s in range(1, 6)} for k in CRITERIA
        },
        means={k: sum(j.scores[k] for j in done) / len(done) for k in CRITERIA} if done else {},
        worst=[
            Judged(chat_id=j.chat_id, scores=dict(j.scores), total=j.total, reason=j.reason)
            for j in worst
        ],
        worst_transcripts={
            j.chat_id: transcripts[j.chat_id]
            for j in worst
            if transcripts and j.chat_id in transcripts
        },
    )
