"""Plain data that crosses the boundary between the stages and the vLLM client.

Stages build a :class:`ChatRequest` and receive a :class:`Completion`; they never see
HTTP. Anything with a ``complete`` method of the :class:`Completer` shape will do, which
is how stages are tested with a scripted model and no server.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec


class ChatRequest(msgspec.Struct, kw_only=True):
    """One chat completion, as the OpenAI-compatible API takes it."""

    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": ...}]
    model: str = ""  # "": the client's default model for the endpoint
    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    grammar: str | None = None  # xgrammar EBNF, sent as structured_outputs.grammar
    priority: int | None = None  # lower is served first (vLLM --scheduling-policy priority)
    chat_template_kwargs: dict[str, Any] | None = None  # e.g. {"enable_thinking": False}
    extra: dict[str, Any] | None = None  # other body fields as they are, e.g. ignore_eos
    # A JSON schema the reply must follow, sent as structured_outputs.json (set this or
    # ``grammar``, not both: vLLM takes one kind of constraint per request).
    json_schema: dict[str, Any] | None = None


class TokenUsage(msgspec.Struct, kw_only=True):
    prompt: int = 0
    completion: int = 0
    cached: int = 0  # usage.prompt_tokens_details.cached_tokens when the server reports it


class Completion(msgspec.Struct, kw_only=True):
    text: str
    finish_reason: str  # "stop" | "length" | ...; "length" means the reply was cut
    usage: TokenUsage
    model: str = ""
    endpoint: str = ""
    latency_s: float = 0.0  # server latency: request sent to last byte, final attempt
    queue_s: float = 0.0  # client-side wait for a slot under the concurrency limit
    attempts: int = 1


class Completer(Protocol):
    """What a stage needs from the model: one completion, with routing and priority hints."""

    async def complete(
        self,
        kind: str,
        request: ChatRequest,
        *,
        affinity: str | None = None,
        priority: int = 0,
    ) -> Completion:
        """``kind`` names the call kind (persona, experience, turn, summary) for routing,
        model choice and accounting; ``affinity`` keeps one conversation on one server;
        ``priority`` orders waiting work (lower first). Raises ``RequestError``."""
        ...
