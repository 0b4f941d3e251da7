"""The one retry loop: how every caller of the model asks until a reply is valid.

:func:`ask_until_valid` asks until a reply is valid: a refused reply is asked again with
its one-line correction; a ``RequestError`` ends the item at once; a ``ServerError``
propagates, since a dead server is the run's problem, not the item's. Personas,
experiences, chat turns and the report's judge all use it, with requests from
:func:`soc_async.calls.request.build_request`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from soc_async.errors import RequestError
from soc_async.formats.refusal import Refusal
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.records import Failure, Stage

T = TypeVar("T")

# How much of a refusal's or an error's text a failure record keeps.
DETAIL_CHARS = 300


def failure(
    item_id: str,
    stage: Stage,
    *,
    reason: str,
    detail: str,
    attempts: int,
    retries: dict[str, int],
) -> Failure:
    """The failure record of an item; the detail is cut to one short line."""
    return Failure(
        id=item_id,
        stage=stage,
        reason=reason,
        attempts=attempts,
        detail=" ".join(detail.split())[:DETAIL_CHARS],
        retries=dict(retries),
    )


@dataclass
class Outcome(Generic[T]):
    """What the attempts for one item came to, with the tokens they cost."""

    value: T | None = None
    model: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    last: Refusal | None = None
    error: RequestError | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def time_taken(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def failure(
        self,
        item_id: str,
        stage: Stage,
        *,
        attempts: int | None = None,
        retries: dict[str, int] | None = None,
    ) -> Failure:
        """The failure record of an item that got no valid reply (``attempts`` and
        ``retries`` default to this outcome's own; a chat passes its whole count)."""
        if self.error is not None:
            reason, detail = f"request:{self.error.reason}", str(self.error)
        else:
            assert self.last is not None  # no value and no error: something was refused
            reason, detail = f"retries_exhausted:{self.last.reason}", self.last.detail
        return failure(
            item_id,
            stage,
            reason=reason,
            detail=detail,
            attempts=self.attempts if attempts is None else attempts,
            retries=self.rejections if retries is None else retries,
        )


class _Build:
    """``request(attempt, correction)``, built when the completer calls for it."""

    __slots__ = ("attempt", "correction", "request")

    def __init__(self, request: Callable[[int, str], ChatRequest], attempt: int, correction: str):
        self.request = request
        self.attempt = attempt
        self.correction = correction

    def __call__(self) -> ChatRequest:
        return self.request(self.attempt, self.correction)


async def ask_until_valid(
    completer: Completer,
    kind: str,
    request: Callable[[int, str], ChatRequest],
    check: Callable[[Completion], T | Refusal],
    accept: type[T],
    *,
    retries: int,
    priority: int = 0,
    affinity: str | None = None,
) -> Outcome[T]:
    """Asks ``request(attempt, correction)`` up to ``retries + 1`` times until ``check``
    returns an ``accept`` instance; ``check`` refuses with a :class:`Refusal`.

    The request is built when the completer can send it (after the wait for a slot), so
    an item waiting its turn holds no rendered prompt."""
    outcome: Outcome[T] = Outcome()
    correction = ""
    for attempt in range(retries + 1):
        outcome.attempts = attempt + 1
        build = _Build(request, attempt, correction)
        try:
            completion = await completer.complete(kind, build, priority=priority, affinity=affinity)
        except RequestError as exc:
            outcome.error = exc
            return outcome
        outcome.prompt_tokens += completion.usage.prompt
        outcome.completion_tokens += completion.usage.completion
        outcome.cached_tokens += completion.usage.cached
        result = check(completion)
        if isinstance(result, accept):
            outcome.value = result
            outcome.model = completion.model
            return outcome
        refused: Refusal = result  # type: ignore[assignment]
        outcome.last = refused
        outcome.rejections[refused.reason] = outcome.rejections.get(refused.reason, 0) + 1
        correction = refused.detail
    return outcome
