"""Plain data that crosses the boundary between the stages and the vLLM client.

Stages build a :class:`ChatRequest` and receive a :class:`Completion`; they never see
HTTP. Anything with a ``complete`` method of the :class:`Completer` shape will do, which
is how stages are tested with a scripted model and no server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

_encode_json = msgspec.json.encode
_decode_json = msgspec.json.decode


class EncodedPrefix:
    """A message text whose first part is kept already encoded as JSON.

    A conversation sends the same long opening (the cards and the experience) with every
    turn. Kept as the contents of a JSON string (UTF-8 bytes, escaped), it is spliced
    into each request body as it is, where a ``str`` would be decoded, joined with the
    rest and encoded again for every request; as bytes it also takes a quarter of the
    memory of a ``str`` holding emoji. ``str()`` gives the whole text.
    """

    __slots__ = ("head", "rest")

    def __init__(self, head: bytes, rest: str) -> None:
        self.head = head  # the first part, JSON-escaped UTF-8 without the quotes
        self.rest = rest

    @staticmethod
    def encode_head(text: str) -> bytes:
        """``text`` as :attr:`head` takes it."""
        return _encode_json(text)[1:-1]

    def json(self) -> msgspec.Raw:
        """The whole text as one JSON string, for an encoder's ``enc_hook``."""
        rest = _encode_json(self.rest)  # '"...rest"': its closing quote ends the string
        return msgspec.Raw(b"".join((b'"', self.head, memoryview(rest)[1:])))

    def __str__(self) -> str:
        return _decode_json(b'"' + self.head + b'"') + self.rest

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedPrefix | str):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"EncodedPrefix({str(self)!r})"


def text_of(content: str | EncodedPrefix) -> str:
    """A message's content as text, however it is kept (also an ``enc_hook`` for
    ``msgspec.to_builtins``, which gives a request as plain data)."""
    if isinstance(content, str):
        return content
    if isinstance(content, EncodedPrefix):
        return str(content)
    raise NotImplementedError(f"{type(content).__name__} is no message text")


def encode_hook(obj: Any) -> Any:
    """``enc_hook`` of the encoders that write request bodies."""
    if isinstance(obj, EncodedPrefix):
        return obj.json()
    raise NotImplementedError(f"cannot encode {type(obj).__name__} as JSON")


class ChatRequest(msgspec.Struct, kw_only=True):
    """One chat completion, as the OpenAI-compatible API takes it."""

    # [{"role": "system"|"user"|"assistant", "content": ...}]; a content may be an
    # EncodedPrefix (``text_of`` reads either).
    messages: list[dict[str, Any]]
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


# A request, or what builds it once it may be sent: a completer that makes the caller
# wait (for a slot under the concurrency limit) calls the function only then, so the
# thousands of chat turns waiting for a slot hold no rendered prompt.
RequestOrBuild = ChatRequest | Callable[[], ChatRequest]


def built(request: RequestOrBuild) -> ChatRequest:
    """The request itself: ``request``, or what it builds."""
    return request if isinstance(request, ChatRequest) else request()


class Completer(Protocol):
    """What a stage needs from the model: one completion, with routing and priority hints."""

    async def complete(
        self,
        kind: str,
        request: RequestOrBuild,
        *,
        affinity: str | None = None,
        priority: int = 0,
    ) -> Completion:
        """``kind`` names the call kind (persona, experience, turn, summary) for routing,
        model choice and accounting; ``affinity`` keeps one conversation on one server;
        ``priority`` orders waiting work (lower first). ``request`` may be a function
        that builds the request: it is called once, when the request can be sent.
        Raises ``RequestError``."""
        ...
