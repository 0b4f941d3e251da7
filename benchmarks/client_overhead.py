"""How much the project's LLMClient costs over a bare aiohttp loop, at many in flight.

N small chat-completion requests go to the fake server (its own process, zero latency)
at C requests in flight, for each C, through a bare aiohttp ClientSession loop (one
pre-encoded body, read the reply, decode it) and through LLMClient.chat (body built and
encoded per request, endpoint routing, retries armed, reply decoded into a Completion),
in back-to-back pairs. Reported per C: requests/s and this process's CPU milliseconds
per request (time.process_time) for both, medians over the pairs, and the median of the
pairs' ratios ours/bare. The server shares the machine, so requests/s is bounded by it
too; CPU per request is the client's own cost.

    python benchmarks/client_overhead.py [--requests 10000] [--concurrency 64 256 1024 4096]
                                         [--repeat 3] [--json out.json] [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from soc_async.config import ClientConfig
from soc_async.llm.client import LLMClient
from soc_async.llm.types import ChatRequest

MESSAGES = [
    {"role": "system", "content": "You write short replies in a casual chat."},
    {"role": "user", "content": "Are we still on for Saturday?"},
]


def raise_fd_limit() -> None:
    """Thousands of sockets need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_server(use_uvloop: bool) -> tuple[subprocess.Popen[str], str]:
    """The fake server in its own process, instant and faultless; its base URL."""
    cmd = [
        sys.executable,
        "-m",
        "soc_async.testing.fake_server",
        "--port",
        "0",
        "--no-prefix-cache",
        "--no-record",
        "--max-num-seqs",
        "1000000",
    ]
    if not use_uvloop:
        cmd.append("--no-uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=raise_fd_limit)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"fake server did not start: {line!r}")
    return proc, line.split()[-1]


async def drive(n: int, c: int, one: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``n`` calls of ``one``, ``c`` at once."""
    counter = itertools.count()

    async def worker() -> None:
        while next(counter) < n:
            await one()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(c):
            tg.create_task(worker())
    return time.perf_counter() - wall0, time.process_time() - cpu0


async def run_bare(url: str, n: int, c: int) -> tuple[float, float]:
    body = msgspec.json.encode(
        {"model": "fake-model", "messages": MESSAGES, "max_tokens": 16, "temperature": 1.0}
    )
    headers = {"Content-Type": "application/json"}
    chat_url = url + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=c, limit_per_host=c)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(chat_url, data=body, headers=headers) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"bare loop: HTTP {resp.status}")
            msgspec.json.decode(payload)

        return await drive(n, c, one)


async def run_ours(url: str, n: int, c: int) -> tuple[float, float]:
    config = ClientConfig(timeout_s=120.0, max_retries=0)
    async with LLMClient([url], api_key=None, config=config, pool_size=c) as client:

        async def one() -> None:
            await client.chat(ChatRequest(messages=MESSAGES, max_tokens=16, model="fake-model"))

        return await drive(n, c, one)


async def measure(url: str, n: int, levels: list[int], repeat: int) -> list[dict[str, Any]]:
    """Per level, ``repeat`` back-to-back pairs (bare, ours); medians of each figure.

    The ratio is the median of the pairs' ratios: on a shared machine the load drifts
    between runs, and a pair run back to back sees about the same load.
    """
    for _ in range(2):  # warm both paths and the server: imports, allocations, caches
        await run_bare(url, min(n, 2000), 256)
        await run_ours(url, min(n, 2000), 256)
    rows = []
    for c in levels:
        walls: dict[str, list[float]] = {"bare": [], "ours": []}
        cpus: dict[str, list[float]] = {"bare": [], "ours": []}
        ratios = []
        for r in range(repeat):
            # Alternate which goes first so that neither always follows the other.
            order = [("bare", run_bare), ("ours", run_ours)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                wall, cpu = await fn(url, n, c)
                walls[name].append(wall)
                cpus[name].append(cpu)
            ratios.append(walls["bare"][-1] / walls["ours"][-1])
        bw, ow = statistics.median(walls["bare"]), statistics.median(walls["ours"])
        rows.append(
            {
                "concurrency": c,
                "bare_rps": n / bw,
                "ours_rps": n / ow,
                "ratio": statistics.median(ratios),
                "ratios": ratios,
                "bare_cpu_ms": 1000 * statistics.median(cpus["bare"]) / n,
                "ours_cpu_ms": 1000 * statistics.median(cpus["ours"]) / n,
            }
        )
        print(
            f"C={c}: bare {n / bw:,.0f} req/s, ours {n / ow:,.0f} req/s, "
            f"pair ratios {', '.join(f'{x:.2f}' for x in ratios)}",
            file=sys.stderr,
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| in flight | bare aiohttp req/s | LLMClient req/s | ours/bare (median of pairs) | "
        "bare CPU ms/req | LLMClient CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['concurrency']:,} | {r['bare_rps']:,.0f} | {r['ours_rps']:,.0f} | "
            f"{r['ratio']:.2f} | {r['bare_cpu_ms']:.3f} | {r['ours_cpu_ms']:.3f} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--repeat", type=int, default=3, help="pairs of runs per level (medians)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args()
    raise_fd_limit()
    use_uvloop = not a.no_uvloop
    try:
        import uvloop
    except ImportError:
        use_uvloop = False
    proc, url = start_server(use_uvloop)
    try:
        coro = measure(url, a.requests, a.concurrency, a.repeat)
        rows = uvloop.run(coro) if use_uvloop else asyncio.run(coro)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(table(rows))
    meta = {
        "requests": a.requests,
        "repeat": a.repeat,
        "uvloop": use_uvloop,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cpus": os.cpu_count(),
    }
    print(
        f"\n{a.requests:,} requests per cell; uvloop {'on' if use_uvloop else 'off'}; "
        f"Python {meta['python']}, aiohttp {meta['aiohttp']}, {meta['cpus']} CPUs"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
