"""What the simulated vLLM server costs per request (so a client measurement against it
measures the client).

Starts `python -m soc_async.testing.simulator` in its own process, sends it N chat
requests from C concurrent aiohttp tasks (round robin over its engines), and reports
requests/s and the simulator process's CPU time per request (from /proc).

    python benchmarks/sim_server_load.py                       # 8 x h100-8b at 20x
    python benchmarks/sim_server_load.py --requests 20000 --concurrency 4096 --reply \\
        soc_async.testing.scripted:reply
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import aiohttp


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(urls: list[str], requests: int, concurrency: int, prompt_chars: int) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * prompt_chars},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 150,
        "ignore_eos": True,
    }
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            async with (
                slots,
                session.post(urls[i % len(urls)] + "/v1/chat/completions", json=body) as r,
            ):
                await r.read()

        await asyncio.gather(*(one(i) for i in range(requests)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="h100-8b")
    p.add_argument("--engines", type=int, default=8)
    p.add_argument("--time-scale", type=float, default=20.0)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=800)
    p.add_argument("--prompt-chars", type=int, default=10_000)
    p.add_argument("--reply", default=None, help="module:function for the simulator")
    a = p.parse_args()
    cmd = [
        sys.executable, "-m", "soc_async.testing.simulator", "--profile", a.profile,
        "--engines", str(a.engines), "--time-scale", str(a.time_scale),
    ]  # fmt: skip
    if a.reply:
        cmd += ["--reply", a.reply]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split()[-1] for _ in range(a.engines)]
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        asyncio.run(load(urls, a.requests, a.concurrency, a.prompt_chars))
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        proc.terminate()
    wall, cpu = t1 - t0, c1 - c0
    print(
        f"{a.requests} requests in {wall:.1f} s ({a.requests / wall:,.0f}/s); simulator CPU "
        f"{1000 * cpu / a.requests:.3f} ms a request, {100 * cpu / wall:.0f}% of a core"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
