"""Per-request figures as the client saw them, for one phase of the bench.

:class:`RecordingCompleter` wraps the :class:`~soc_async.run.gateway.ModelGateway` (any Completer)
and keeps one :class:`RequestSample` per answered request, so the bench reports from
what each request did, not from running sums: the time spent waiting for a slot under
the concurrency limit stays apart from the server's latency.
"""

from __future__ import annotations

import time

import msgspec

from soc_async.llm.types import Completer, Completion, RequestOrBuild

__all__ = ["RecordingCompleter", "RequestSample"]


class RequestSample(msgspec.Struct, array_like=True, frozen=True):
    """One answered request."""

    kind: str  # the call kind: "turn", "summary", or "turn" for the synthetic load
    prompt: int  # prompt tokens (the server's count)
    completion: int  # output tokens
    cached: int  # prompt tokens the server reports as served from its prefix cache
    latency_s: float  # request sent to last byte (the server's share)
    queue_s: float  # waiting for a slot under the client's limit
    finish: str  # finish_reason
    end_s: float = 0.0  # time.monotonic() at the last byte; sent at end_s - latency_s


class RecordingCompleter:
    """A Completer that passes each call on and records what came back.

    ``live`` counts the calls in progress (queued or in flight) for the progress view.
    """

    def __init__(self, inner: Completer) -> None:
        self._inner = inner
        self.samples: list[RequestSample] = []
        self.errors = 0
        self.live = 0
        self.output_tokens = 0  # running sum, read by the progress view twice a second
        self.started = time.monotonic()

    async def complete(
        self,
        kind: str,
        request: RequestOrBuild,
        *,
        affinity: str | None = None,
        priority: int = 0,
    ) -> Completion:
        self.live += 1
        try:
            reply = await self._inner.complete(kind, request, affinity=affinity, priority=priority)
        except Exception:
            self.errors += 1
            raise
        finally:
            self.live -= 1
        u = reply.usage
        self.output_tokens += u.completion
        self.samples.append(
            RequestSample(
                kind=kind,
                prompt=u.prompt,
                completion=u.completion,
                cached=u.cached,
                latency_s=reply.latency_s,
                queue_s=reply.queue_s,
                finish=reply.finish_reason,
                end_s=time.monotonic(),
            )
        )
        return reply
