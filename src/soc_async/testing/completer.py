"""A scripted model in the process: a :class:`~soc_async.llm.types.Completer` for tests.

Stages, the chat rollout and the pipeline take any ``Completer``; this one answers from a
script instead of a server, so their tests run in the test's own event loop::

    model = ScriptedCompleter(["<character>...", RequestError("boom", status=400)])
    model = ScriptedCompleter(lambda kind, request, n: ...)  # n: the call's number
    model = ScriptedCompleter.from_writer()  # a valid reply for any call of any kind

A reply is a ``str`` (sent back as a finished completion), a :class:`Completion` (as it
is, for a cut reply or other token counts) or an exception (raised, as the gateway raises
``RequestError`` or ``ServerError``). Every call is recorded (:attr:`ScriptedCompleter.calls`)
with its kind, request, affinity, priority and how it ended. A call can be slowed per kind
(``delays``) or held until a test lets it go (``gates``, a :class:`Gate`), which is how
tests cancel a rollout mid-turn or fail it while a summary is in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.lowlevel
import msgspec

from soc_async.llm.types import (
    ChatRequest,
    Completion,
    RequestOrBuild,
    TokenUsage,
    built,
    text_of,
)
from soc_async.testing.scripted import ScriptedWriter

__all__ = ["Call", "Gate", "Reply", "ReplyFn", "ScriptedCompleter", "writer_replies"]

Reply = str | Completion | BaseException
ReplyFn = Callable[[str, ChatRequest, int], Reply]
"""``(kind, request, n) -> reply``: ``n`` counts every call of the completer from 0."""

Outcome = Literal["waiting", "answered", "raised", "cancelled"]


@dataclass
class Call:
    """One call as the completer saw it, and how it ended."""

    kind: str
    request: ChatRequest
    affinity: str | None
    priority: int
    outcome: Outcome = "waiting"

    @property
    def user(self) -> str:
        """The last (user) message's text: the part of the prompt that changes."""
        return text_of(self.request.messages[-1]["content"])


class Gate:
    """Holds the calls of one kind, from the ``after``-th of that kind on (0-based),
    until :meth:`open`; :meth:`reached` returns once a call is held."""

    def __init__(self, *, after: int = 0) -> None:
        self.after = after
        self.held = 0  # calls waiting at the gate now
        self._opened = anyio.Event()
        self._reached = anyio.Event()

    def open(self) -> None:
        """Let every held call, and every later one, through."""
        self._opened.set()

    async def reached(self) -> None:
        """Return once a call is held at the gate (at once if one was already)."""
        await self._reached.wait()

    async def _hold(self) -> None:
        self.held += 1
        self._reached.set()
        try:
            await self._opened.wait()
        finally:
            self.held -= 1

    def __repr__(self) -> str:
        state = "open" if self._opened.is_set() else "closed"
        return f"Gate({state}, after={self.after}, held={self.held})"


def writer_replies(writer: ScriptedWriter | None = None) -> ReplyFn:
    """Replies read off the prompt by ``writer`` (a fresh seeded one when None): a valid
    card, experience, turn or summary for any request, broken now and then only if the
    writer has an ``error_rate``."""
    write = writer or ScriptedWriter()

    def reply(kind: str, request: ChatRequest, n: int) -> Reply:
        return write(msgspec.to_builtins(request, enc_hook=text_of))

    return reply


class ScriptedCompleter:
    """Answers each call from a script and records it; see the module docstring."""

    def __init__(
        self,
        replies: Sequence[Reply] | ReplyFn,
        *,
        delays: Mapping[str, float] | None = None,
        gates: Mapping[str, Gate] | None = None,
        model: str = "scripted-model",
        usage: TokenUsage | None = None,
    ) -> None:
        self._script = replies if callable(replies) else list(replies)
        self.delays = dict(delays or {})  # seconds a call of the kind waits before its reply
        self.gates = dict(gates or {})
        self.model = model  # the model a str reply says answered
        self.usage = usage or TokenUsage(prompt=100, completion=50)  # of a str reply
        self.calls: list[Call] = []

    @classmethod
    def from_writer(
        cls,
        writer: ScriptedWriter | None = None,
        *,
        delays: Mapping[str, float] | None = None,
        gates: Mapping[str, Gate] | None = None,
    ) -> ScriptedCompleter:
        """A completer whose replies are :func:`writer_replies`: every request of every
        kind gets a valid reply."""
        return cls(writer_replies(writer), delays=delays, gates=gates)

    def of_kind(self, kind: str) -> list[Call]:
        """The calls of one kind, in the order they were made."""
        return [c for c in self.calls if c.kind == kind]

    def requests(self, kind: str | None = None) -> list[ChatRequest]:
        """The requests sent, of one kind or of all, in the order they were made."""
        return [c.request for c in self.calls if kind is None or c.kind == kind]

    @property
    def kinds(self) -> list[str]:
        return [c.kind for c in self.calls]

    async def complete(
        self,
        kind: str,
        request: RequestOrBuild,
        *,
        affinity: str | None = None,
        priority: int = 0,
    ) -> Completion:
        request = built(request)
        number = len(self.calls)
        of_kind = sum(c.kind == kind for c in self.calls)
        call = Call(kind=kind, request=request, affinity=affinity, priority=priority)
        self.calls.append(call)
        try:
            # A real completer always yields to the loop; so does this one.
            await anyio.lowlevel.checkpoint()
            gate = self.gates.get(kind)
            if gate is not None and of_kind >= gate.after:
                await gate._hold()
            if self.delays.get(kind):
                await anyio.sleep(self.delays[kind])
        except anyio.get_cancelled_exc_class():
            call.outcome = "cancelled"
            raise
        reply = self._next(kind, request, number)
        if isinstance(reply, BaseException):
            call.outcome = "raised"
            raise reply
        call.outcome = "answered"
        if isinstance(reply, Completion):
            return reply
        return Completion(
            text=reply,
            finish_reason="stop",
            usage=msgspec.structs.replace(self.usage),
            model=self.model,
        )

    def _next(self, kind: str, request: ChatRequest, number: int) -> Reply:
        if callable(self._script):
            return self._script(kind, request, number)
        if not self._script:
            raise AssertionError(f"ScriptedCompleter: no reply left for call {number} ({kind})")
        return self._script.pop(0)

    def __repr__(self) -> str:
        return f"ScriptedCompleter(calls={len(self.calls)}, gates={self.gates})"
