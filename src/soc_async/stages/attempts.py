"""Ask the model until a reply is valid: the retry loop the persona and experience stages
share. A rejected reply is asked again with its one-line correction; a ``RequestError``
ends the item at once; a ``ServerError`` propagates, since a dead server is the run's
problem, not the item's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from soc_async.errors import RequestError
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.records import Failure, Stage

T = TypeVar("T")


class Rejected(Protocol):
    """Why a reply was not accepted: a stable code and a one-line correction."""

    @property
    def reason(self) -> str: ...

    @property
    def detail(self) -> str: ...


@dataclass
class Outcome(Generic[T]):
    """What the attempts for one item came to, with the tokens they cost."""

    value: T | None = None
    model: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    last: Rejected | None = None
    error: RequestError | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def time_taken(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def failure(self, item_id: str, stage: Stage) -> Failure:
        """The failure record of an item that got no valid reply."""
        if self.error is not None:
            reason, detail = f"request:{self.error.reason}", str(self.error)[:300]
        else:
            assert self.last is not None  # no value and no error: something was rejected
            reason, detail = f"retries_exhausted:{self.last.reason}", self.last.detail
        return Failure(
            id=item_id,
            stage=stage,
            reason=reason,
            attempts=self.attempts,
            detail=detail,
            retries=self.rejections,
        )


async def ask_until_valid(
    completer: Completer,
    kind: str,
    request: Callable[[int, str], ChatRequest],
    check: Callable[[Completion], T | Rejected],
    accept: type[T],
    *,
    retries: int,
    priority: int = 0,
) -> Outcome[T]:
    """Asks ``request(attempt, correction)`` up to ``retries + 1`` times until ``check``
    returns an ``accept`` instance."""
    outcome: Outcome[T] = Outcome()
    correction = ""
    for attempt in range(retries + 1):
        outcome.attempts = attempt + 1
        sent = request(attempt, correction)
        try:
            completion = await completer.complete(kind, sent, priority=priority)
        except RequestError as exc:
            outcome.error = exc
            return outcome
        outcome.prompt_tokens += completion.usage.prompt
        outcome.completion_tokens += completion.usage.completion
        result = check(completion)
        if isinstance(result, accept):
            outcome.value = result
            outcome.model = completion.model or sent.model
            return outcome
        rejected: Rejected = result  # type: ignore[assignment]
        outcome.last = rejected
        outcome.rejections[rejected.reason] = outcome.rejections.get(rejected.reason, 0) + 1
        correction = rejected.detail
    return outcome
