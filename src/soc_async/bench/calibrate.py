"""What the server says about its tokens, so that the synthetic load is sized exactly.

- vLLM's ``POST /tokenize`` counts a text's tokens with the served model's own tokenizer
  (and chat template, given messages). The load keeps the words the server reads as one
  token each after a space, so a prompt of ``n`` words is ``base + n`` tokens to the
  token, and the template's opening is the longest run of tokens two one-word messages
  share (:func:`common_prefix`).
- (The prefix cache's ``block_size``, by which the ceiling's shared prefix is placed,
  comes from ``vllm:cache_config_info`` on /metrics, read by
  :func:`soc_async.bench.sizing.read_server_facts`.)

A server without /tokenize (not vLLM, or an old one) leaves the fitted line of
:func:`soc_async.bench.load.probe_fit` as it is. :func:`common_prefix` and
:func:`single_token_words` are pure; :func:`read_tokenizer` does the HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import anyio
import msgspec

from soc_async.bench.load import LEAD, WORDS, TokenFit

__all__ = [
    "Tokenizer",
    "common_prefix",
    "exact_fit",
    "read_tokenizer",
    "single_token_words",
]

_MIN_WORDS = 16  # fewer one-token words than this: keep the default list and the fit
_TIMEOUT = aiohttp.ClientTimeout(total=30)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def single_token_words(counts: Mapping[str, int]) -> tuple[str, ...]:
    """The words whose count (of " word") is exactly one token, in a stable order."""
    return tuple(sorted(w for w, n in counts.items() if n == 1))


class _Unavailable(Exception):
    """/tokenize did not answer as vLLM's does."""


async def _tokenize(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[int]:
    try:
        async with session.post(url.rstrip("/") + "/tokenize", json=body, timeout=_TIMEOUT) as r:
            if r.status != 200:
                raise _Unavailable(f"HTTP {r.status}")
            data = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise _Unavailable(str(exc)) from exc
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list):
        raise _Unavailable("no token list in the answer")
    return [int(t) for t in tokens]


async def _word_counts(
    session: aiohttp.ClientSession, url: str, model: str, words: Sequence[str]
) -> dict[str, int]:
    """Tokens of " word" for each word; _Unavailable when the first is not answered."""
    counts: dict[str, int] = {}
    failed: list[str] = []
    limit = anyio.Semaphore(16)

    async def one(word: str) -> None:
        body = {"model": model, "prompt": f" {word}", "add_special_tokens": False}
        try:
            counts[word] = len(await _tokenize(session, url, body))
        except _Unavailable as exc:
            failed.append(str(exc))

    first, *rest = words
    await one(first)  # a server without /tokenize says so once, not once per word
    if failed:
        raise _Unavailable(failed[0])

    async def limited(word: str) -> None:
        async with limit:
            await one(word)

    async with anyio.create_task_group() as tg:
        for word in rest:
            tg.start_soon(limited, word)
    if failed:
        raise _Unavailable(failed[0])
    return counts


class Tokenizer(msgspec.Struct, kw_only=True, frozen=True):
    """What /tokenize told: the one-token words and the template's opening."""

    words: tuple[str, ...]  # each " word" is one token
    head: int  # tokens of a message before its first word after LEAD


async def read_tokenizer(session: aiohttp.ClientSession, url: str, model: str) -> Tokenizer | str:
    """What ``url``'s /tokenize says about the load's words; a one-line reason instead
    when the server has no usable /tokenize (then the fitted line stands)."""
    try:
        words = single_token_words(await _word_counts(session, url, model, WORDS))
        if len(words) < _MIN_WORDS:
            return f"only {len(words)} of the load's words are one token each"
        messages = [
            {
                "model": model,
                "messages": [{"role": "user", "content": f"{LEAD} {word}"}],
                "add_generation_prompt": True,
            }
            for word in words[:2]
        ]
        first = await _tokenize(session, url, messages[0])
        second = await _tokenize(session, url, messages[1])
    except _Unavailable as exc:
        return f"/tokenize: {exc}"
    return Tokenizer(words=words, head=common_prefix(first, second))


def exact_fit(fit: TokenFit, tokenizer: Tokenizer) -> TokenFit:
    """``fit`` (probed with ``tokenizer.words``) with the template's opening counted."""
    return msgspec.structs.replace(
        fit, words=tokenizer.words, head=float(tokenizer.head), exact=True
    )
