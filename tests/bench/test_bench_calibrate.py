"""What the server says about its tokens: one-token words, the template's head."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from soc_async.bench.calibrate import (
    Tokenizer,
    common_prefix,
    exact_fit,
    read_tokenizer,
    single_token_words,
)
from soc_async.bench.load import LEAD, WORDS, TokenFit
from soc_async.testing.fake_server import FakeServer

FakeServerFactory = Callable[..., Awaitable[FakeServer]]

HEAD = [101, 102, 103]  # the template's opening: "<|im_start|>system ... user\n"
TAIL = [104, 105]
TWO_TOKEN_WORDS = {"zipper", "muffin", "noodle"}


def word_tokens(text: str) -> list[int]:
    """A tokenizer of words: one token a word, two for a few."""
    out = []
    for word in text.split():
        out += [hash(word) % 50_000, 7] if word in TWO_TOKEN_WORDS else [hash(word) % 50_000]
    return out


async def tokenize(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    if "messages" in body:
        text = " ".join(m["content"] for m in body["messages"])
        tokens = HEAD + word_tokens(text) + TAIL
    else:
        tokens = word_tokens(body["prompt"])
    return web.json_response({"count": len(tokens), "tokens": tokens, "max_model_len": 8192})


@pytest.fixture
async def tokenizing_server() -> AsyncIterator[str]:
    """A server with vLLM's /tokenize (a word tokenizer)."""
    app = web.Application()
    app.router.add_post("/tokenize", tokenize)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_common_prefix() -> None:
    """The count of equal leading tokens."""
    assert common_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0


def test_single_token_words_keeps_only_ones() -> None:
    """Words of one token, sorted; the rest dropped."""
    assert single_token_words({"river": 1, "apple": 1, "zipper": 2}) == ("apple", "river")


async def test_read_tokenizer_finds_one_token_words_and_the_head(tokenizing_server: str) -> None:
    """Through /tokenize: the words that are one token, and the tokens before a message's
    first word (the template's opening plus LEAD)."""
    async with aiohttp.ClientSession() as session:
        found = await read_tokenizer(session, tokenizing_server, "m")
    assert isinstance(found, Tokenizer)
    assert set(found.words) == set(WORDS) - TWO_TOKEN_WORDS
    assert found.head == len(HEAD) + len(word_tokens(LEAD))
    fit = exact_fit(TokenFit(base=6.0, per_word=1.0), found)
    assert fit.exact and fit.vocabulary == found.words and fit.head == found.head


async def test_without_tokenize_the_fit_stands(fake_server: FakeServerFactory) -> None:
    """A server with no /tokenize (the fake one) gives a reason instead."""
    server = await fake_server()
    async with aiohttp.ClientSession() as session:
        found = await read_tokenizer(session, server.url, "fake-model")
    assert isinstance(found, str) and "404" in found
