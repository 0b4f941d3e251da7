"""The client's CPU per request split into its two halves, each measured alone.

``--part stage``: the real chat stage (prompts, turn grammars, parser, state machine,
the request body encoded) against a completer in this process that answers each turn
with a valid scripted reply after ``--latency-s``, at most ``--limit`` at a time: no
HTTP, no server. The writer's own time (making up the reply) is taken out.

``--part http``: aiohttp as the client uses it (one session, keep-alive connections,
a ~11 KB JSON body) POSTing to the fake server in its own process, which answers after
``--latency-s``, ``--limit`` at a time: no chat stage.

    python benchmarks/client_parts.py --part stage [--conversations 10000] [--max-turns 4]
    python benchmarks/client_parts.py --part http [--requests 12000] [--latency-s 2.0]
        [--wake-batch-ms 3] [--pin]

Two checks of where the HTTP half's CPU goes, for ``--part http``: ``--wake-batch-ms
MS`` blocks the loop for MS milliseconds (sleeping, no CPU) at every turn of it, so
the replies that came in meanwhile are handled together instead of one loop wake each;
``--pin`` keeps this process on CPU 0 and the server's on CPU 1, so neither moves
between cores.

CPU time is this process's (``time.process_time``). With ``--latency-s 0`` the stage
runs in a tight loop (warm caches, no waiting); with a latency like a server's, the
conversations interleave as in a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import msgspec
from scale_fake import raise_fd_limit, start_server

from soc_async import config as config_mod
from soc_async import loop
from soc_async.bench.cast import bench_conversations, cast_experiences, seed_personas
from soc_async.bench.pipeline import run_chats
from soc_async.config import RunFacts
from soc_async.llm.client import _body, _encode
from soc_async.llm.types import ChatRequest, Completion, RequestOrBuild, TokenUsage, built
from soc_async.testing.scripted import ScriptedWriter


class InstantModel:
    """A completer answering every call with the scripted writer's reply."""

    def __init__(self, latency_s: float, limit: int) -> None:
        self.latency_s = latency_s
        self.limit = asyncio.Semaphore(limit)
        self.writer = ScriptedWriter(seed=1)
        self.requests = 0
        self.writer_s = 0.0
        self.body_bytes = 0

    async def complete(
        self, kind: str, request: RequestOrBuild, *, affinity: str | None = None, priority: int = 0
    ) -> Completion:
        async with self.limit:
            req = built(request)
            self.body_bytes += len(_encode(_body(req)))
            t = time.process_time()
            text = self.writer(msgspec.to_builtins(req, enc_hook=str))
            self.writer_s += time.process_time() - t
            self.requests += 1
            await asyncio.sleep(self.latency_s)
        usage = TokenUsage(prompt=1, completion=1)
        return Completion(text=text, finish_reason="stop", model="m", usage=usage)


async def stage(args: argparse.Namespace) -> dict[str, Any]:
    changes = {
        "endpoints": ["http://127.0.0.1:9"],
        "chat.max_turns": args.max_turns,
        "concurrency.max_active_chats": args.conversations,
    }
    config = config_mod.override(config_mod.RunConfig(), changes)
    personas = seed_personas(config.seed)
    experiences = bench_conversations(
        args.conversations, personas, cast_experiences(personas, config), config
    )
    model = InstantModel(args.latency_s, args.limit)
    t0 = time.process_time()
    tally = await run_chats(
        model,
        config,
        experiences,
        personas,
        facts=RunFacts(model="m"),
        max_active=args.conversations,
    )
    cpu = time.process_time() - t0 - model.writer_s
    return {
        "part": "stage",
        "requests": model.requests,
        "finished": tally.done,
        "failed": tally.failed,
        "cpu_ms_per_request": round(1000 * cpu / model.requests, 3),
        "mean_body_bytes": round(model.body_bytes / model.requests),
    }


async def http(args: argparse.Namespace, url: str) -> dict[str, Any]:
    import aiohttp

    text = "x" * 5000 + "\N{GRINNING FACE}" + "y" * 6000  # a prompt with emoji, as cards have
    request = ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=100)
    connector = aiohttp.TCPConnector(limit=args.limit + 8, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=1800, sock_connect=10)
    headers = {"Content-Type": "application/json"}
    chat_url = url.rstrip("/") + "/v1/chat/completions"
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as s:
        gate = asyncio.Semaphore(args.limit)

        async def one() -> None:
            async with gate, s.post(chat_url, data=_encode(_body(request))) as resp:
                await resp.read()

        async def batch_wakes() -> None:
            while True:
                time.sleep(args.wake_batch_ms / 1000)  # noqa: ASYNC251 - blocks the loop on purpose
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(args.limit)))  # connections opened
        batcher = asyncio.create_task(batch_wakes()) if args.wake_batch_ms > 0 else None
        t0, w0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(one() for _ in range(args.requests)))
        cpu, wall = time.process_time() - t0, time.monotonic() - w0
        if batcher is not None:
            batcher.cancel()
    return {
        "part": "http",
        "requests": args.requests,
        "cpu_ms_per_request": round(1000 * cpu / args.requests, 3),
        "requests_per_s": round(args.requests / wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("stage", "http"), required=True)
    p.add_argument("--conversations", type=int, default=10_000)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--requests", type=int, default=12_000)
    p.add_argument("--latency-s", type=float, default=2.5)
    p.add_argument("--limit", type=int, default=1024, help="requests at once")
    p.add_argument("--wake-batch-ms", type=float, default=0.0, help="http: batch loop wakes")
    p.add_argument("--pin", action="store_true", help="http: client on CPU 0, server on 1")
    args = p.parse_args(argv)
    if args.pin and not {0, 1} <= os.sched_getaffinity(0):
        p.error("--pin needs CPUs 0 and 1, and this process may not use both")
    raise_fd_limit()
    if args.part == "stage":
        figures = loop.run(stage(args))
    else:
        server = argparse.Namespace(ttft_s=args.latency_s, tpot_s=0.0, concurrency=args.limit)
        proc, url = start_server(server)
        if args.pin:
            os.sched_setaffinity(0, {0})
            os.sched_setaffinity(proc.pid, {1})
        try:
            figures = loop.run(http(args, url))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    figures["settings"] = vars(args)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
