"""Chat-turn load through a Completer over HTTP, and each engine's throughput read back.

:func:`chat_load` keeps ``conversations`` conversations going through any
:class:`~soc_async.llm.types.Completer`, above all the run's own
:class:`~soc_async.run.gateway.ModelGateway` (its limiters, controllers and routing),
laid out as the chat stage lays its prompts out (:class:`.workload.ChatShape`): a system
prompt every conversation shares, the conversation's own fixed part, the transcript
growing by each reply, a tail new every turn; one turn in flight per conversation, its
priority the turns it has left, its affinity the conversation. Replies are
``max_tokens`` long (``ignore_eos``), drawn per turn, so the engines generate what the
shape says whatever the reply function writes.

:func:`read_engines` reads each simulated engine's generated tokens and its own
simulated clock (``/server_info``), so :func:`rates` gives tokens per *simulated*
second per engine, whatever the time scale and however busy the client's machine was.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import aiohttp
import anyio
import msgspec

from soc_async.llm.metrics import fetch_metrics
from soc_async.llm.types import ChatRequest, Completer
from soc_async.testing.simulator.workload import ChatShape

__all__ = ["EngineReading", "chat_load", "rates", "read_engines"]

_WORD = "chat "  # five characters: a shape's tokens are four characters each


def _text(tokens: int, tag: str) -> str:
    """About ``tokens`` tokens of text that begins with ``tag`` (so it is its own)."""
    body = f"{tag} " + _WORD * (tokens * 4 // len(_WORD) + 1)
    return body[: max(len(tag) + 1, tokens * 4)]


async def chat_load(
    completer: Completer,
    shape: ChatShape,
    conversations: int,
    stop: anyio.Event,
    *,
    seed: int = 0,
    tag: str = "",
) -> int:
    """Runs ``conversations`` conversations at a time (a finished one is replaced at
    once) until ``stop`` is set; returns the turns answered. ``tag`` makes this load's
    prompts its own (after the shared system prompt), so a later load finds none of an
    earlier one's conversations in the prefix cache."""
    system = _text(shape.system_tokens, "system")
    rng = random.Random(seed)
    lo = max(1, round(shape.reply_tokens * (1 - shape.reply_spread)))
    hi = max(lo, round(shape.reply_tokens * (1 + shape.reply_spread)))
    answered = 0
    serial = 0

    async def conversation(conv: str, r: random.Random) -> None:
        nonlocal answered
        messages: list[dict[str, str]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": _text(shape.fixed_tokens, conv)},
        ]
        for turn in range(shape.turns):
            tail = {"role": "user", "content": _text(shape.tail_tokens, f"{conv}:{turn}")}
            request = ChatRequest(
                messages=[*messages, tail],
                max_tokens=r.randint(lo, hi),
                temperature=0.0,
                extra={"ignore_eos": True},
            )
            reply = await completer.complete(
                "turn", request, affinity=conv, priority=shape.turns - turn
            )
            answered += 1
            if stop.is_set():
                return
            markup = _text(shape.markup_tokens, "--")
            messages.append({"role": "assistant", "content": f"{reply.text}{markup}"})

    async def lane() -> None:
        nonlocal serial
        while not stop.is_set():
            serial += 1
            await conversation(f"{tag}c{serial}", random.Random(rng.getrandbits(32)))

    async with anyio.create_task_group() as tg:
        for _ in range(conversations):
            tg.start_soon(lane)
        await stop.wait()
        tg.cancel_scope.cancel()
    return answered


class EngineReading(msgspec.Struct, kw_only=True, frozen=True):
    """One simulated engine at one moment, on its own clock."""

    url: str
    simulated_s: float
    generation_tokens: float
    preemptions: float
    prefix_cache_hits: float
    prefix_cache_queries: float


class _Simulator(msgspec.Struct):
    simulated_s: float


class _Info(msgspec.Struct):
    simulator: _Simulator


async def read_engines(session: aiohttp.ClientSession, urls: Sequence[str]) -> list[EngineReading]:
    """Each engine's counters and simulated clock, read together."""
    out: list[EngineReading] = []
    for url in urls:
        async with session.get(url.rstrip("/") + "/server_info") as resp:
            info = msgspec.json.decode(await resp.read(), type=_Info)
        snap = await fetch_metrics(session, url)
        out.append(
            EngineReading(
                url=url,
                simulated_s=info.simulator.simulated_s,
                generation_tokens=snap.generation_tokens,
                preemptions=snap.preemptions,
                prefix_cache_hits=snap.prefix_cache_hits,
                prefix_cache_queries=snap.prefix_cache_queries,
            )
        )
    return out


def rates(before: Sequence[EngineReading], after: Sequence[EngineReading]) -> list[float]:
    """Generated tokens per simulated second of each engine between two readings."""
    return [
        (b.generation_tokens - a.generation_tokens) / max(1e-9, b.simulated_s - a.simulated_s)
        for a, b in zip(before, after, strict=True)
    ]
