"""The ceiling: a synthetic load shaped like the pipeline's requests, as fast as it goes.

vLLM's own serving benchmark measures a server with random prompts of fixed length,
``ignore_eos`` and a fixed ``max_tokens``, so every request costs exactly what it says.
The bench does the same with the pipeline's mean prompt and output lengths at the same
concurrency, through the same client and limiter: the gap between the two is what the
chat stage itself costs (turns that wait on each other, grammars, retries, parsing).

The pipeline's prompts are partly served from the prefix cache and a random prompt is
not, so by default the ceiling's prompts open with a prefix shared by all of them whose
length is the pipeline's cached share (vLLM's benchmark has ``random_prefix_len`` for
this): both then prefill the same number of new tokens per request.

Prompt lengths are in the server's tokens, which the client cannot count, so the word
count is fitted from two probe requests (``tokens = a + b * words``, the constant being
the chat template's).
"""

from __future__ import annotations

import contextlib
import random

import anyio
import msgspec

from soc_async.errors import RequestError
from soc_async.llm.types import ChatRequest, Completer

__all__ = [
    "LoadShape",
    "TokenFit",
    "build_requests",
    "fit_tokens",
    "prefix_request",
    "probe_fit",
    "run_load",
    "synthetic_text",
]

# Plain words, each most likely one or two tokens for any English-trained tokenizer; drawn
# at random so that no two prompts share more than the intended prefix.
_WORDS = (
    "apple", "river", "stone", "window", "market", "garden", "paper", "silver", "winter",
    "yellow", "candle", "button", "forest", "ladder", "pocket", "circle", "bridge", "orange",
    "pencil", "rabbit", "island", "basket", "mirror", "copper", "planet", "thunder", "cotton",
    "meadow", "harbor", "velvet", "lantern", "pepper", "saddle", "timber", "cabin", "marble",
    "engine", "feather", "needle", "puzzle", "tunnel", "wagon", "anchor", "blanket", "carpet",
    "desert", "falcon", "ginger", "helmet", "jacket", "kettle", "lemon", "magnet", "nickel",
    "oyster", "parrot", "quartz", "ribbon", "salmon", "tomato", "valley", "walnut", "zipper",
    "camera", "dollar", "eagle", "fabric", "guitar", "hammer", "insect", "jungle", "kitten",
    "lizard", "muffin", "noodle", "olive", "pillow", "rocket", "spider", "turtle", "violin",
    "wizard", "bottle", "castle", "dragon", "flower", "goblet", "hollow", "iron", "jelly",
)  # fmt: skip


def synthetic_text(rng: random.Random, words: int) -> str:
    """``words`` random words separated by spaces ("" for none)."""
    return " ".join(rng.choice(_WORDS) for _ in range(max(0, words)))


class TokenFit(msgspec.Struct, kw_only=True, frozen=True):
    """Prompt tokens the server counts for a message of ``words`` words: ``base + per_word*w``."""

    base: float
    per_word: float

    def words_for(self, tokens: float) -> int:
        """Words that make about ``tokens`` prompt tokens (0 when the template alone does)."""
        return max(0, round((tokens - self.base) / self.per_word))


def fit_tokens(probes: list[tuple[int, int]]) -> TokenFit:
    """The straight line through (words, prompt tokens) probe pairs, least squares.

    Raises ValueError with fewer than two distinct word counts or a line that does not
    rise (a server that does not count prompt tokens).
    """
    xs = [float(w) for w, _ in probes]
    ys = [float(t) for _, t in probes]
    if len(set(xs)) < 2:
        raise ValueError("fitting prompt tokens needs probes of two different lengths")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    if slope <= 0:
        raise ValueError("the server's prompt token counts do not grow with the prompt")
    return TokenFit(base=my - slope * mx, per_word=slope)


async def probe_fit(
    completer: Completer, seed: int, lengths: tuple[int, int] = (40, 400)
) -> TokenFit:
    """Fits words to tokens with one 1-token request per length in ``lengths``.

    The probes also warm the server up before anything is timed.
    """
    rng = random.Random(f"{seed}:bench-probe")
    probes = []
    for words in lengths:
        reply = await completer.complete("turn", _request(synthetic_text(rng, words), 1))
        probes.append((words, reply.usage.prompt))
    return fit_tokens(probes)


class LoadShape(msgspec.Struct, kw_only=True, frozen=True):
    """What each synthetic request looks like, in the server's tokens."""

    requests: int  # how many, all issued at once; the limiter bounds them in flight
    prompt_tokens: float  # mean prompt length to imitate
    output_tokens: int  # max_tokens, generated in full (ignore_eos)
    shared_tokens: float = 0.0  # leading prompt tokens common to every request


def _request(text: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=[{"role": "user", "content": text}],
        max_tokens=max(1, max_tokens),
        temperature=1.0,
        extra={"ignore_eos": True},
    )


def _prefix(shape: LoadShape, fit: TokenFit, rng: random.Random) -> tuple[str, int]:
    """(the shared prefix, the words of the whole prompt), drawn first from ``rng``."""
    total = fit.words_for(shape.prompt_tokens)
    shared = min(total, round(shape.shared_tokens / fit.per_word)) if shape.shared_tokens else 0
    return synthetic_text(rng, shared), total - shared


def prefix_request(shape: LoadShape, fit: TokenFit, seed: int) -> ChatRequest | None:
    """A one-token request of the shared prefix alone, which puts it in the prefix cache;
    None when the load shares no prefix."""
    prefix, _ = _prefix(shape, fit, random.Random(f"{seed}:bench-load"))
    if not prefix:
        return None
    request = _request(prefix, 1)
    request.extra = None  # one token is all it needs, end of sequence or not
    return request


def build_requests(shape: LoadShape, fit: TokenFit, seed: int) -> list[ChatRequest]:
    """The load's requests: a common prefix of ``shared_tokens``, then words of their own.

    :func:`prefix_request` with the same arguments gives the same prefix.
    """
    rng = random.Random(f"{seed}:bench-load")
    prefix, own_words = _prefix(shape, fit, rng)
    requests = []
    for _ in range(shape.requests):
        own = synthetic_text(rng, own_words)
        text = f"{prefix} {own}" if prefix and own else prefix or own or "hello"
        requests.append(_request(text, shape.output_tokens))
    return requests


async def run_load(completer: Completer, requests: list[ChatRequest]) -> None:
    """Sends every request at once and waits for all; the completer's limiter paces them.

    A request that fails for good is counted by a recording completer and skipped: one
    lost request must not void the phase.
    """

    async def one(request: ChatRequest) -> None:
        with contextlib.suppress(RequestError):
            await completer.complete("turn", request)

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)
