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

:func:`engine_processes` starts engines one process each, as one vLLM server per GPU;
:func:`measure_load` runs the load for a while and reads what each engine made.
:func:`read_engines` reads each simulated engine's generated tokens and its own
simulated clock (``/server_info``), so :func:`rates` gives tokens per *simulated*
second per engine, whatever the time scale and however busy the client's machine was.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence

import aiohttp
import anyio
import msgspec

from soc_async.llm.metrics import fetch_metrics
from soc_async.llm.types import ChatRequest, Completer
from soc_async.testing.simulator.workload import ChatShape

__all__ = [
    "EngineReading",
    "chat_load",
    "engine_processes",
    "measure_load",
    "rates",
    "read_engines",
    "wait_idle",
]

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


@contextlib.contextmanager
def engine_processes(
    count: int,
    *,
    profile: str = "tiny",
    time_scale: float = 1.0,
    slow: Mapping[int, float] | None = None,
    seed: int = 0,
    reply: str = "soc_async.testing.scripted:reply",
) -> Iterator[list[str]]:
    """``count`` simulated engines, each in a process of its own (``python -m
    soc_async.testing.simulator``); engine ``i`` runs ``slow[i]`` times slower. Yields
    their URLs; stops them on the way out."""
    slow = slow or {}
    procs = []
    try:
        for i in range(count):
            argv = [sys.executable, "-m", "soc_async.testing.simulator", "--profile", profile,
                    "--time-scale", str(time_scale), "--seed", str(seed + i),
                    "--reply", reply]  # fmt: skip
            if i in slow:
                argv += ["--slow", f"0:{slow[i]}"]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            )
        urls = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"a simulated engine did not start: {line!r}")
            urls.append(line.split()[-1])
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


async def wait_idle(session: aiohttp.ClientSession, urls: Sequence[str]) -> None:
    """Waits until no engine runs or queues anything (an earlier load's requests,
    aborted as their client went away), so each measurement starts from the same state."""
    while True:
        snaps = [await fetch_metrics(session, url) for url in urls]
        if not any(s.running or s.waiting for s in snaps):
            return
        await anyio.sleep(0.1)


async def measure_load(
    completer: Completer,
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    shape: ChatShape,
    conversations: int,
    *,
    warm_s: float,
    measure_s: float,
    tag: str,
    seed: int = 1,
) -> list[float]:
    """Each engine's generated tokens per simulated second over ``measure_s`` real
    seconds, after ``warm_s``, of :func:`chat_load` through ``completer``."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def load() -> None:
            await chat_load(completer, shape, conversations, stop, seed=seed, tag=tag)

        tg.start_soon(load)
        await anyio.sleep(warm_s)
        before = await read_engines(session, urls)
        await anyio.sleep(measure_s)
        after = await read_engines(session, urls)
        stop.set()
    return rates(before, after)
