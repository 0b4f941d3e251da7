"""People's ratings (``soc-async annotate``) as columns of the conversations they rate.

A run with annotations.jsonl exports its conversation rows with two more columns:
``human_ratings`` (each rater's last rating: rater, rubric version, time, the scores
as ``{criterion, score}``, flags, comment) and ``human_means`` (per criterion the mean
over raters and how many rated). A conversation nobody rated has null in both. A run
without annotations exports exactly the rows it always did: the columns are absent.

The row types with the columns are subclasses of the format's own (rows.py), made once
here, so the dataset card and the Parquet schema describe them like any other field.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from soc_async.annotate.records import ANNOTATIONS, Annotation, Rating, latest
from soc_async.export.rows import MessagesRow, Soc2508Row, Soc2602Row
from soc_async.records import Conversation
from soc_async.store.appendlog import read_log

__all__ = [
    "HumanRatingRow",
    "MeanRow",
    "ScoreRow",
    "rated_row_type",
    "ratings_by_chat",
    "with_ratings",
]


class ScoreRow(msgspec.Struct, kw_only=True):
    criterion: str
    score: int


class HumanRatingRow(msgspec.Struct, kw_only=True):
    rater: str
    rubric: str
    at: str
    scores: list[ScoreRow]
    flags: list[str]
    comment: str


class MeanRow(msgspec.Struct, kw_only=True):
    criterion: str
    mean: float
    raters: int


def _rated(base: type[msgspec.Struct]) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        f"{base.__name__}Rated",
        [
            ("human_ratings", list[HumanRatingRow] | None, None),
            ("human_means", list[MeanRow] | None, None),
        ],
        bases=(base,),
        kw_only=True,
    )


_RATED: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    base: _rated(base) for base in (Soc2602Row, Soc2508Row, MessagesRow)
}


def rated_row_type(base: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """``base`` with the two human columns (``base`` itself for a format without chats)."""
    return _RATED.get(base, base)


def ratings_by_chat(run_dir: str | Path) -> dict[str, list[Rating]]:
    """Each rater's last rating, by chat id; empty when the run has no annotations."""
    out: dict[str, list[Rating]] = defaultdict(list)
    path = Path(run_dir) / ANNOTATIONS
    if not path.is_file():
        return {}
    for a in latest(read_log(path, Annotation)).values():
        if isinstance(a, Rating):
            out[a.item].append(a)
    return dict(out)


def _columns(ratings: list[Rating]) -> dict[str, Any]:
    rows = [
        HumanRatingRow(
            rater=r.rater,
            rubric=r.rubric,
            at=r.at,
            flags=list(r.flags),
            comment=r.comment,
            scores=[ScoreRow(criterion=k, score=v) for k, v in r.scores.items()],
        )
        for r in sorted(ratings, key=lambda r: (r.at, r.rater))
    ]
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in ratings:
        for k, v in r.scores.items():
            by_key[k].append(v)
    means = [MeanRow(criterion=k, mean=sum(v) / len(v), raters=len(v)) for k, v in by_key.items()]
    return {"human_ratings": rows, "human_means": means}


def with_ratings(
    rows_of: Callable[[Conversation], Iterator[Any]],
    ratings: dict[str, list[Rating]],
    row_type: type[msgspec.Struct],
) -> Callable[[Conversation], Iterator[Any]]:
    """``rows_of`` whose rows carry the human columns of their conversation."""
    empty = {"human_ratings": None, "human_means": None}

    def rows(c: Conversation) -> Iterator[Any]:
        extra = _columns(ratings[c.chat_id]) if c.chat_id in ratings else empty
        for row in rows_of(c):
            yield row_type(**msgspec.structs.asdict(row), **extra)

    return rows
