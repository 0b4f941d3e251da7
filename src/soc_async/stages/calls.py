"""How every stage asks the model: one request builder and one retry loop.

:func:`build_request` gives a call kind its model and its sampling settings. The model
is chosen here and nowhere else: when the kind lists several (``[calls.KIND] models``),
one is drawn per item, by weight, from a hash of the run seed, the kind and the item's
id, so a resumed run or another shard draws the same model for the same item; else the
kind's own model, else the run's, else what the server serves.

:func:`ask_until_valid` asks until a reply is valid: a refused reply is asked again with
its one-line correction; a ``RequestError`` ends the item at once; a ``ServerError``
propagates, since a dead server is the run's problem, not the item's. Personas,
experiences and chat turns all use both.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from soc_async.config import ModelChoice, RunConfig
from soc_async.errors import RequestError
from soc_async.formats.refusal import Refusal
from soc_async.llm.types import ChatRequest, Completer, Completion, EncodedPrefix
from soc_async.records import Failure, Stage

T = TypeVar("T")

# How much of a refusal's or an error's text a failure record keeps.
DETAIL_CHARS = 300


def _unit(*parts: object) -> float:
    """A number in [0, 1) that is a pure function of ``parts``, the same in every process."""
    key = ":".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_model(config: RunConfig, kind: str, item_id: str) -> ModelChoice | None:
    """The model of ``kind``'s list that writes item ``item_id``; None without a list.

    A weighted draw from a hash of (run seed, kind, item id): the same for the same item
    on every run, resume and shard, and over many items within a hair of the weights.
    """
    models = config.call(kind).models
    if not models:
        return None
    cumulative: list[float] = []
    total = 0.0
    for m in models:
        total += m.weight
        cumulative.append(total)
    point = _unit(config.seed, "model", kind, item_id) * total
    return models[min(bisect_right(cumulative, point), len(models) - 1)]


def model_for_item(config: RunConfig, kind: str, item_id: str | None, served_model: str) -> str:
    """The model name a call of ``kind`` for ``item_id`` asks for (see the module doc)."""
    chosen = choose_model(config, kind, item_id) if item_id is not None else None
    if chosen is not None:
        return chosen.name
    return config.model_for(kind) or served_model


def build_request(
    config: RunConfig,
    kind: str,
    system: str,
    user: str | EncodedPrefix,
    *,
    served_model: str,
    seed: int | None = None,
    grammar: str | None = None,
    priority: int | None = None,
    item_id: str | None = None,
) -> ChatRequest:
    """A request of call kind ``kind``: a static system message, one user message, the
    model for ``item_id`` (:func:`model_for_item`) and the kind's sampling settings."""
    call = config.call(kind)
    return ChatRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        model=model_for_item(config, kind, item_id, served_model),
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


class _Build:
    """``request(attempt, correction)``, built when the completer calls for it; keeps it."""

    __slots__ = ("attempt", "correction", "request", "sent")

    def __init__(self, request: Callable[[int, str], ChatRequest], attempt: int, correction: str):
        self.request = request
        self.attempt = attempt
        self.correction = correction
        self.sent: ChatRequest | None = None

    def __call__(self) -> ChatRequest:
        self.sent = self.request(self.attempt, self.correction)
        return self.sent


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
            outcome.model = completion.model or (build.sent.model if build.sent else "")
            return outcome
        refused: Refusal = result  # type: ignore[assignment]
        outcome.last = refused
        outcome.rejections[refused.reason] = outcome.rejections.get(refused.reason, 0) + 1
        correction = refused.detail
    return outcome
