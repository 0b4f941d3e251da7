"""What annotations.jsonl holds, and how a rater's answer becomes one of its lines.

One line per answer set: a :class:`Rating` (a conversation scored on the rubric) or a
:class:`Preference` (a blind pair: for each criterion left, right or tie, and the same
unblinded to A, B or tie through the side the plan recorded). A rater who goes back and
answers again appends a new line; the last line of a (rater, item) is their answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from soc_async.annotate.plan import Plan
from soc_async.annotate.rubric import Rubric

__all__ = [
    "ANNOTATIONS",
    "MAX_COMMENT",
    "MAX_RATER",
    "Annotation",
    "AnswerError",
    "Preference",
    "Rating",
    "check_rater",
    "latest",
    "make_answer",
]

ANNOTATIONS = "annotations.jsonl"
MAX_RATER = 60
MAX_COMMENT = 4000
Choice = Literal["left", "right", "tie"]
Winner = Literal["A", "B", "tie"]


class Rating(msgspec.Struct, kw_only=True, tag="rating", tag_field="kind"):
    rater: str
    item: str  # the chat id
    rubric: str  # the rubric's version
    scores: dict[str, int]  # criterion -> point of its scale
    flags: list[str] = []
    comment: str = ""
    at: str  # ISO time, UTC


class Preference(msgspec.Struct, kw_only=True, tag="ab", tag_field="kind"):
    rater: str
    item: str  # the pair's id
    rubric: str
    a: str  # run A's chat id
    b: str  # run B's chat id
    left: Literal["A", "B"]  # whose conversation the page drew on the left
    compare: str  # run B's directory, as given to annotate --compare
    compare_key: str  # run B's run key
    choices: dict[str, Choice]  # criterion -> what the rater chose, as they saw it
    winners: dict[str, Winner]  # criterion -> the same, unblinded
    comment: str = ""
    at: str


Annotation = Rating | Preference


class AnswerError(ValueError):
    """An answer the page sent that does not fit the rubric or the plan."""


def check_rater(name: object) -> str:
    """A rater's name as stored: stripped, one line, 1 to MAX_RATER characters."""
    if not isinstance(name, str) or not name.strip():
        raise AnswerError("rater: expected your name (one line)")
    name = " ".join(name.split())
    if len(name) > MAX_RATER:
        raise AnswerError(f"rater: at most {MAX_RATER} characters")
    return name


def _comment(body: Mapping[str, Any], rubric: Rubric) -> str:
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise AnswerError(f"comment: expected text of at most {MAX_COMMENT} characters")
    return comment.strip() if rubric.comment else ""


def make_answer(body: Mapping[str, Any], *, rubric: Rubric, plan: Plan, at: str) -> Annotation:
    """The record of the answer ``body`` (the page's JSON); AnswerError when it is not
    a complete answer to an item of ``plan`` on ``rubric``."""
    rater = check_rater(body.get("rater"))
    item = plan.item(str(body.get("item", "")))
    if item is None:
        raise AnswerError(f"item {body.get('item')!r}: not in this session's sample")
    comment = _comment(body, rubric)
    keys = [c.key for c in rubric.criteria]
    if plan.mode == "rate":
        scores = body.get("scores")
        if not isinstance(scores, dict) or sorted(scores) != sorted(keys):
            raise AnswerError(f"scores: expected one score for each of {', '.join(keys)}")
        for c in rubric.criteria:
            value = scores[c.key]
            if type(value) is not int or not c.low <= value <= c.high:
                raise AnswerError(f"scores.{c.key}: expected an integer {c.scale}")
        flags = body.get("flags", [])
        if not isinstance(flags, list) or any(f not in rubric.flags for f in flags):
            raise AnswerError(f"flags: expected some of {', '.join(rubric.flags) or '(none)'}")
        return Rating(
            rater=rater, item=item.id, rubric=rubric.version, scores=dict(scores),
            flags=sorted(set(flags), key=rubric.flags.index), comment=comment, at=at,
        )  # fmt: skip
    choices = body.get("choices")
    if not isinstance(choices, dict) or sorted(choices) != sorted(keys):
        raise AnswerError(f"choices: expected left, right or tie for each of {', '.join(keys)}")
    if any(v not in ("left", "right", "tie") for v in choices.values()):
        raise AnswerError("choices: expected left, right or tie")
    assert item.left is not None
    right = "B" if item.left == "A" else "A"
    side: dict[str, Winner] = {"left": item.left, "right": right, "tie": "tie"}
    return Preference(
        rater=rater, item=item.id, rubric=rubric.version, a=item.a, b=item.b, left=item.left,
        compare=plan.compare, compare_key=plan.compare_key, choices=dict(choices),
        winners={k: side[v] for k, v in choices.items()}, comment=comment, at=at,
    )  # fmt: skip


def latest(annotations: Iterable[Annotation]) -> dict[tuple[str, str], Annotation]:
    """Each rater's last answer per item: (rater, item) -> record."""
    out: dict[tuple[str, str], Annotation] = {}
    for a in annotations:
        out[(a.rater, a.item)] = a
    return out
