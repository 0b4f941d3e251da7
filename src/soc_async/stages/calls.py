"""How every stage asks the model: one request builder and one retry loop.

:func:`build_request` gives a call kind its model (the kind's own, else the run's, else
what the server serves) and its sampling settings. :func:`ask_until_valid` asks until a
reply is valid: a refused reply is asked again with its one-line correction; a
``RequestError`` ends the item at once; a ``ServerError`` propagates, since a dead server
is the run's problem, not the item's. Personas, experiences and chat turns all use both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from soc_async.config import RunConfig
from soc_async.errors import RequestError
from soc_async.formats.refusal import Refusal
from soc_async.llm.types import ChatRequest, Completer, Completion
from soc_async.records import Failure, Stage

T = TypeVar("T")

# How much of a refusal's or an error's text a failure record keeps.
DETAIL_CHARS = 300


def build_request(
    config: RunConfig,
    kind: str,
    system: str,
    user: str,
    *,
    served_model: str,
    seed: int | None = None,
    grammar: str | None = None,
    priority: int | None = None,
) -> ChatRequest:
    """A request of call kind ``kind``: a static system message, one user message, the
    kind's model (else the run's, else ``served_model``) and sampling settings."""
    call = config.call(kind)
    return ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        model=config.model_for(kind) or served_model,
        max_tokens=call.max_tokens,
        temperature=call.temperature,
        top_p=call.top_p,
        seed=seed,
        grammar=grammar,
        priority=priority,
    )


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
    returns an ``accept`` instance; ``check`` refuses with a :class:`Refusal`."""
    outcome: Outcome[T] = Outcome()
    correction = ""
    for attempt in range(retries + 1):
        outcome.attempts = attempt + 1
        sent = request(attempt, correction)
        try:
            completion = await completer.complete(kind, sent, priority=priority, affinity=affinity)
        except RequestError as exc:
            outcome.error = exc
            return outcome
        outcome.prompt_tokens += completion.usage.prompt
        outcome.completion_tokens += completion.usage.completion
        outcome.cached_tokens += completion.usage.cached
        result = check(completion)
        if isinstance(result, accept):
            outcome.value = result
            outcome.model = completion.model or sent.model
            return outcome
        refused: Refusal = result  # type: ignore[assignment]
        outcome.last = refused
        outcome.rejections[refused.reason] = outcome.rejections.get(refused.reason, 0) + 1
        correction = refused.detail
    return outcome
