"""The ceiling: a synthetic load shaped like the pipeline's requests, as fast as it goes.

vLLM's own serving benchmark measures a server with random prompts of fixed length,
``ignore_eos`` and a fixed ``max_tokens``, so every request costs exactly what it says.
The bench does the same with the pipeline's mean prompt and output lengths at the same
concurrency, through the same client and limiter: the gap between the two is what the
chat stage itself costs (turns that wait on each other, grammars, retries, parsing).

The pipeline's prompts are partly served from the prefix cache and a random prompt is
not, so by default the ceiling's prompts open with a prefix shared by all of them, sized
so that the server caches as many tokens of each as it did of the pipeline's (vLLM's
benchmark has ``random_prefix_len`` for this): both then prefill the same number of new
tokens per request. vLLM caches whole blocks, so the prefix ends half a block past a
block boundary (:func:`place_prefix`): a prefix cut at the pipeline's mean cached share
lost up to a block a request, and on a CPU server, where prefill dominates, that was the
ceiling's 10% shortfall against vLLM's benchmark (docs/performance.md).

Prompt lengths are in the server's tokens. Where the server has vLLM's /tokenize, the
words are the ones it reads as one token each, and the template's tokens before the
first word are counted (:mod:`soc_async.bench.calibrate`), so lengths are exact;
otherwise the word count is fitted from two probe requests (``tokens = a + b * words``,
the constant being the chat template's). Every prompt opens with :data:`LEAD`, so its
first word costs what the others do.

Prompts are fresh: the caller seeds each load with a nonce drawn for the bench run, so a
second bench against the same server finds none of them in its prefix cache.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence

import anyio
import msgspec

from soc_async.errors import RequestError
from soc_async.llm.types import ChatRequest, Completer

__all__ = [
    "LEAD",
    "WORDS",
    "LoadShape",
    "RequestShape",
    "TokenFit",
    "build_requests",
    "fit_tokens",
    "place_prefix",
    "probe_fit",
    "run_load",
    "spread_items",
    "synthetic_text",
    "warm_request",
]

LEAD = "Words:"

# Plain words, each most likely one or two tokens for any English-trained tokenizer; drawn
# at random so that no two prompts share more than the intended prefix.
WORDS: tuple[str, ...] = (
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


def synthetic_text(rng: random.Random, words: int, vocabulary: Sequence[str] = WORDS) -> str:
    """``words`` random words of ``vocabulary`` separated by spaces ("" for none)."""
    return " ".join(rng.choice(vocabulary) for _ in range(max(0, words)))


class TokenFit(msgspec.Struct, kw_only=True, frozen=True):
    """Prompt tokens the server counts for a message of ``words`` words: ``base + per_word*w``."""

    base: float  # tokens of a message with no words: the chat template and LEAD
    per_word: float
    # Tokens before the first word (the template's opening and LEAD); None: not known,
    # taken as ``base`` (a chat template puts most of its tokens before the message).
    head: float | None = None
    words: tuple[str, ...] = ()  # the vocabulary the fit holds for; (): WORDS
    exact: bool = False  # every word is one token by the server's own /tokenize

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return self.words or WORDS

    def words_for(self, tokens: float) -> int:
        """Words that make about ``tokens`` prompt tokens (0 when the template alone does)."""
        return max(0, round((tokens - self.base) / self.per_word))

    def prefix_words(self, shared_tokens: float) -> int:
        """Words after LEAD that make the prompt's first ``shared_tokens`` tokens."""
        head = self.base if self.head is None else self.head
        return max(0, round((shared_tokens - head) / self.per_word))


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


def _content(words: str) -> str:
    return f"{LEAD} {words}" if words else LEAD


async def probe_fit(
    completer: Completer,
    seed: int,
    lengths: tuple[int, int] = (40, 400),
    vocabulary: Sequence[str] = WORDS,
) -> TokenFit:
    """Fits words to tokens with one 1-token request per length in ``lengths``.

    The probes also warm the server up before anything is timed.
    """
    rng = random.Random(f"{seed}:bench-probe")
    probes = []
    for words in lengths:
        text = _content(synthetic_text(rng, words, vocabulary))
        reply = await completer.complete("turn", _request(text, 1))
        probes.append((words, reply.usage.prompt))
    return fit_tokens(probes)


def place_prefix(prompt: float, cached: float, block: int | None) -> tuple[float, float]:
    """(prompt length, shared prefix) for a request that should find ``cached`` of its
    ``prompt`` tokens in the prefix cache and compute the rest.

    vLLM serves a shared prefix of S tokens from its cache as floor(S / block) whole
    blocks, so ``cached`` (a mean of whole blocks, from the pipeline) is rounded to the
    nearest whole number of blocks, and the prompt moves by as much, so that each request
    computes exactly the tokens the pipeline's did (its context then differs by at most
    half a block). The prefix ends half a block past the boundary: a token more or less at
    its edge does not move it across. With no block size known: ``cached`` as it is.
    """
    if cached <= 0 or prompt <= 1:
        return prompt, 0.0
    if not block or block <= 1:
        return prompt, float(min(cached, prompt - 1))
    blocks = round(cached / block)
    prompt = prompt - cached + blocks * block
    if blocks == 0:
        return prompt, 0.0
    return prompt, float(min(blocks * block + block // 2, prompt - 1))


class RequestShape(msgspec.Struct, array_like=True, frozen=True):
    """One synthetic request, in the server's tokens."""

    prompt: float  # prompt length
    shared: float  # leading tokens (template included) common to the load's prompts
    output: int  # max_tokens, generated in full (ignore_eos)


class LoadShape(msgspec.Struct, kw_only=True, frozen=True):
    """What each synthetic request looks like, in the server's tokens."""

    requests: int  # how many, all issued at once; the limiter bounds them in flight
    prompt_tokens: float  # mean prompt length to imitate
    output_tokens: int  # max_tokens, generated in full (ignore_eos)
    shared_tokens: float = 0.0  # leading prompt tokens common to every request

    def items(self) -> list[RequestShape]:
        """Every request alike."""
        one = RequestShape(self.prompt_tokens, self.shared_tokens, self.output_tokens)
        return [one] * self.requests


def spread_items(
    samples: Sequence[tuple[int, int, int]], n: int, block: int | None, seed: int
) -> list[RequestShape]:
    """``n`` requests with the lengths of real ones: (prompt, cached, output) ``samples``
    in a seeded shuffled order, repeated as needed; each shares the prefix its cached
    count asks for. [] without samples."""
    if not samples:
        return []
    order = list(samples)
    random.Random(f"{seed}:bench-spread").shuffle(order)
    out = []
    for i in range(n):
        prompt, cached, output = order[i % len(order)]
        length, shared = place_prefix(prompt, cached, block)
        out.append(RequestShape(length, shared, max(1, output)))
    return out


def _request(text: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=[{"role": "user", "content": text}],
        max_tokens=max(1, max_tokens),
        temperature=1.0,
        extra={"ignore_eos": True},
    )


def build_requests(items: Sequence[RequestShape], fit: TokenFit, seed: int) -> list[ChatRequest]:
    """The load's requests: LEAD, the common prefix's first words as each item's shared
    tokens ask, then random words of its own up to its prompt length."""
    rng = random.Random(f"{seed}:bench-load")
    vocabulary = fit.vocabulary
    totals = [fit.words_for(item.prompt) for item in items]
    prefixes = [
        min(t, fit.prefix_words(item.shared)) for t, item in zip(totals, items, strict=True)
    ]
    common = synthetic_text(rng, max(prefixes, default=0), vocabulary).split()
    requests = []
    for item, total, prefix in zip(items, totals, prefixes, strict=True):
        own = synthetic_text(rng, total - prefix, vocabulary).split()
        requests.append(_request(_content(" ".join(common[:prefix] + own)), item.output))
    return requests


def warm_request(
    items: Sequence[RequestShape], requests: Sequence[ChatRequest]
) -> ChatRequest | None:
    """The request that puts the load's shared prefix in the cache before the clock starts:
    the prompt of the item sharing the most (the first of equals), one token long.

    vLLM's benchmark sends its first prompt once before it starts timing; so does this,
    so both runs hold one request whose whole prompt is cached. None when nothing is shared.
    """
    if not items or max(item.shared for item in items) <= 0:
        return None
    best = max(range(len(items)), key=lambda i: (items[i].shared, -i))
    warm = msgspec.structs.replace(requests[best], max_tokens=1, extra=None)
    return warm


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
