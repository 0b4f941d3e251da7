"""A fake vLLM: an OpenAI-compatible HTTP server for tests and benchmarks.

Real HTTP on 127.0.0.1 (aiohttp.web), so the client under test runs its true code path.
It serves POST /v1/chat/completions, GET /v1/models, GET /health and GET /metrics (in
vLLM's metric names), and models what the client must cope with:

- latency: ``ttft_s + completion_tokens * tpot_s * (1 + batch_slowdown * running)``,
  with at most ``max_num_seqs`` requests running and the rest waiting; zero by default;
- faults at configured rates, drawn from a seeded RNG: HTTP 500 and 503, 429 with
  Retry-After, a connection reset, a stall past any sensible client timeout, and a
  malformed JSON body; or scripted outcome by outcome with :meth:`FakeServer.script`;
- a reply function ``reply(body) -> str`` (or awaitable) that writes the answer from the
  request body, so a test can answer grammars and prompts; it may raise
  :class:`ReplyError` to answer with an HTTP error;
- a prefix-cache figure from hashes of message prefixes, so /metrics shows hits.

In process: ``server = FakeServer(FakeConfig(...)); await server.start()``; ``stop()`` and
``restart()`` (same port) simulate a server going away. As a process:
``python -m soc_async.testing.fake_server --port 8000 [--faults 0.2] [--reply mod:fn]``
prints ``listening on URL`` and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import inspect
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from soc_async.testing.fake_model import (
    FAULT_KINDS,
    FakeConfig,
    PrefixCache,
    ReplyError,
    completion_body,
    count_tokens,
    exposition,
    fit_reply,
    latency_s,
)

__all__ = ["FakeConfig", "FakeServer", "FakeStats", "Hit", "ReplyError", "main"]

Reply = Callable[[dict[str, Any]], str | Awaitable[str]]


def default_reply(body: dict[str, Any]) -> str:
    """A short fixed answer: enough for transport tests and benchmarks."""
    return "Sure, that works for me."


class Hit(msgspec.Struct, array_like=True):
    """One request as the server saw it: when, how it ended, and its ``request_id``."""

    t: float  # time.monotonic() on arrival
    # Decided on arrival: "ok", a fault kind ("500", "503", "429", "reset", "stall",
    # "bad_json"), a scripted "400", or the status a reply function's ReplyError chose.
    outcome: str
    request_id: str  # the body's request_id field, "" when absent


class FakeStats:
    """What the server has seen since it was made (kept across stop and restart)."""

    def __init__(self) -> None:
        self.received = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.log: list[Hit] = []

    def ids(self, outcome: str = "ok") -> collections.Counter[str]:
        """How many times each request_id ended with ``outcome``."""
        return collections.Counter(h.request_id for h in self.log if h.outcome == outcome)


class FakeServer:
    """The fake server; see the module docstring."""

    def __init__(self, config: FakeConfig | None = None, *, reply: Reply | None = None) -> None:
        self.config = config or FakeConfig()
        self.reply = reply or default_reply
        self.stats = FakeStats()
        self.port = self.config.port
        self._rng = random.Random(self.config.seed)
        self._script: collections.deque[str] = collections.deque()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.max_num_seqs)
        self._prefix = PrefixCache() if self.config.prefix_cache else None
        self._thresholds = self._fault_thresholds()
        self._serial = 0
        # What /metrics reports.
        self.running = 0
        self.waiting = 0
        self._kv_tokens = 0
        self._counters = dict.fromkeys(
            ("preemptions", "prefix_hits", "prefix_queries", "generation", "prompt"), 0
        )

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def _fault_thresholds(self) -> list[tuple[float, str]]:
        total, out = 0.0, []
        for kind in FAULT_KINDS:
            total += getattr(self.config, f"p_{kind}")
            out.append((total, kind))
        if total > 1.0:
            raise ValueError(f"fault rates add up to {total:g}, more than 1")
        return out

    def script(self, *outcomes: str) -> None:
        """Force the next requests' outcomes ("ok", a fault kind, or "400") before the RNG."""
        self._script.extend(outcomes)

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on the configured port (0: a free one, kept for :meth:`restart`), or on
        ``sock``, a socket already bound and listening."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        # A short shutdown: stop() should look like a server dying, not draining.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, self.config.host, self.port, backlog=self.config.backlog)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._stopping = asyncio.Event()
        self._runner = runner

    async def stop(self) -> None:
        """Close the listening socket and every connection; stalled requests end."""
        if self._runner is None:
            return
        self._stopping.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def restart(self) -> None:
        """Stop if running, then listen again on the same port."""
        await self.stop()
        await self.start()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _draw(self) -> str:
        if self._script:
            return self._script.popleft()
        if not self._thresholds or self._thresholds[-1][0] <= 0.0:
            return "ok"
        x = self._rng.random()
        for threshold, kind in self._thresholds:
            if x < threshold:
                return kind
        return "ok"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        cfg = self.config
        if cfg.api_key and request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            return _error(401, "Unauthorized")
        try:
            body = msgspec.json.decode(raw)
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            return _error(400, f"invalid request body: {exc}")
        request_id = str(body.get("request_id", ""))
        outcome = self._draw()
        self.stats.received += 1
        self.stats.outcomes[outcome] += 1
        hit = Hit(time.monotonic(), outcome, request_id)
        if cfg.record:
            self.stats.log.append(hit)
        if outcome == "ok":
            return await self._complete(body, messages, hit)
        return await self._fault(outcome, request)

    async def _fault(self, outcome: str, request: web.Request) -> web.StreamResponse:
        if outcome in ("500", "503"):
            return _error(int(outcome), "injected server error")
        if outcome == "400":
            return _error(400, "injected bad request: max_tokens is too large for this model")
        if outcome == "429":
            after = self.config.retry_after_s
            header = str(int(after)) if after == int(after) else f"{after:g}"
            return _error(429, "too many requests", headers={"Retry-After": header})
        if outcome == "stall":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.stall_s):
                    await self._stopping.wait()
        elif outcome == "bad_json":
            return web.Response(
                body=b'{"id": "chatcmpl-x", "choices": [{"mess',
                status=200,
                content_type="application/json",
            )
        # "reset", and a stall that outlived its wait: drop the connection unanswered.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    async def _complete(
        self, body: dict[str, Any], messages: list[Any], hit: Hit
    ) -> web.StreamResponse:
        cfg = self.config
        try:
            text = self.reply(body)
            if inspect.isawaitable(text):
                text = await text
        except ReplyError as exc:
            hit.outcome = str(exc.status)  # the log tells an answer from a refusal
            self.stats.outcomes["ok"] -= 1
            self.stats.outcomes[hit.outcome] += 1
            return _error(exc.status, exc.message)
        max_tokens = body.get("max_tokens") or cfg.default_max_tokens
        text, completion, finish = fit_reply(text, max_tokens, bool(body.get("ignore_eos")))
        prompt = sum(count_tokens(str(m.get("content", ""))) + 4 for m in messages)
        cached = self._prefix.lookup(messages) if self._prefix is not None else 0
        self._counters["prefix_hits"] += cached
        self._counters["prefix_queries"] += prompt

        if self._slots.locked():
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.running += 1
        held = prompt + completion
        self._kv_tokens += held
        if self._kv_tokens > cfg.kv_capacity_tokens:
            self._counters["preemptions"] += 1
        try:
            delay = latency_s(cfg, completion, self.running - 1)
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self.running -= 1
            self._kv_tokens -= held
            self._slots.release()
        self._counters["prompt"] += prompt
        self._counters["generation"] += completion
        self._serial += 1
        payload = completion_body(
            f"chatcmpl-{self._serial}",
            body.get("model") or cfg.model,
            text,
            finish,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
        )
        return web.Response(body=msgspec.json.encode(payload), content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data = {
            "object": "list",
            "data": [{"id": self.config.model, "object": "model", "owned_by": "soc-async"}],
        }
        return web.Response(body=msgspec.json.encode(data), content_type="application/json")

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        c = self._counters
        text = exposition(
            self.config.model,
            running=self.running,
            waiting=self.waiting,
            kv_usage=min(1.0, self._kv_tokens / self.config.kv_capacity_tokens),
            preemptions=c["preemptions"],
            prefix_hits=c["prefix_hits"],
            prefix_queries=c["prefix_queries"],
            generation_tokens=c["generation"],
            prompt_tokens=c["prompt"],
            kv_capacity_tokens=self.config.kv_capacity_tokens,
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error in the shape vLLM sends: ``{"error": {"message", "type", "code"}}``."""
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    body = msgspec.json.encode({"error": {"message": message, "type": kind, "code": status}})
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _load_reply(spec: str) -> Reply:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--reply: expected module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def _parse_args(argv: list[str] | None) -> tuple[FakeConfig, str | None, bool]:
    p = argparse.ArgumentParser(
        prog="python -m soc_async.testing.fake_server",
        description="A fake OpenAI-compatible vLLM server.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--model", default="fake-model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ttft-s", type=float, default=0.0)
    p.add_argument("--tpot-s", type=float, default=0.0)
    p.add_argument("--batch-slowdown", type=float, default=0.0)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--kv-capacity-tokens", type=int, default=FakeConfig().kv_capacity_tokens)
    p.add_argument(
        "--faults", type=float, default=0.0, help="total fault rate, spread evenly over every kind"
    )
    for kind in FAULT_KINDS:
        p.add_argument(
            f"--fault-{kind.replace('_', '-')}",
            type=float,
            default=None,
            dest=f"p_{kind}",
            help=f"rate of {kind} faults",
        )
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument("--stall-s", type=float, default=3600.0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--no-prefix-cache", action="store_true")
    p.add_argument("--no-record", action="store_true", help="keep no per-request log")
    p.add_argument("--reply", default=None, help="module:function writing the answer")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args(argv)
    rates = {f"p_{k}": a.faults / len(FAULT_KINDS) for k in FAULT_KINDS}
    rates.update({k: v for k, v in vars(a).items() if k.startswith("p_") and v is not None})
    config = FakeConfig(
        host=a.host,
        port=a.port,
        model=a.model,
        seed=a.seed,
        ttft_s=a.ttft_s,
        tpot_s=a.tpot_s,
        batch_slowdown=a.batch_slowdown,
        max_num_seqs=a.max_num_seqs,
        kv_capacity_tokens=a.kv_capacity_tokens,
        retry_after_s=a.retry_after_s,
        stall_s=a.stall_s,
        api_key=a.api_key,
        prefix_cache=not a.no_prefix_cache,
        record=not a.no_record,
        **rates,
    )
    return config, a.reply, not a.no_uvloop


async def _serve(config: FakeConfig, reply: Reply | None) -> None:
    server = FakeServer(config, reply=reply)
    await server.start()
    print(f"listening on {server.url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await server.stop()
    print(f"stopped after {server.stats.received} requests", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """The command line: serve until SIGINT or SIGTERM."""
    config, reply_spec, want_uvloop = _parse_args(argv)
    reply = _load_reply(reply_spec) if reply_spec else None
    if want_uvloop:
        try:
            import uvloop
        except ImportError:
            want_uvloop = False
    if want_uvloop:
        uvloop.run(_serve(config, reply))
    else:
        asyncio.run(_serve(config, reply))


if __name__ == "__main__":
    main()
