"""The simulated engines behind vLLM's HTTP API, one port per engine.

Each engine of a :class:`SimServer` listens on its own port, as one vLLM server per GPU
does, and serves POST /v1/chat/completions, GET /v1/models, /health, /metrics (vLLM's
names, :mod:`.metrics`), /version, and /server_info (what vLLM serves in its dev mode:
the engine's config as JSON, plus the simulator's profile and time scale). The reply
text comes from a reply function, as with the fake server (``scripted:reply`` writes
valid turns); its length, or ``max_tokens`` with ``ignore_eos``, is what the engine
generates. A prompt is "tokenized" at four characters a token, and its block hashes
chain over its text, so two prompts that share their beginning share cached blocks.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web

from soc_async.testing.fake_model import completion_body, count_tokens, fit_reply
from soc_async.testing.simulator.driver import SimCluster
from soc_async.testing.simulator.engine import SimEngine, SimRequest
from soc_async.testing.simulator.metrics import exposition
from soc_async.testing.simulator.profiles import SimProfile

__all__ = ["SimServer", "prompt_of"]

Reply = Callable[[dict[str, Any]], str | Awaitable[str]]
_DEFAULT_MAX_TOKENS = 512


def _default_reply(body: dict[str, Any]) -> str:
    return "Sure, that works for me."


def prompt_of(messages: Sequence[Any], block_size: int) -> tuple[int, list[int]]:
    """(prompt tokens, hashes of its full blocks) of a chat ``messages`` list.

    Tokens are counted as the fake server does (four characters a token, four more per
    message for the template); block ``j`` covers characters ``[4*bs*j, 4*bs*(j+1))`` of
    the rendered messages and its hash chains over every block before it.
    """
    parts = []
    tokens = 0
    for m in messages:
        if isinstance(m, dict):
            content = m.get("content", "")
            content = content if isinstance(content, str) else msgspec.json.encode(content).decode()
            role = str(m.get("role", ""))
        else:
            content, role = str(m), ""
        parts.append(f"<|{role}|>{content}")
        tokens += count_tokens(content) + 4
    text = "".join(parts)
    chunk = 4 * block_size
    full = min(len(text) // chunk, tokens // block_size)
    hashes = []
    h = 0
    for j in range(full):
        h = hash((h, text[j * chunk : (j + 1) * chunk]))
        hashes.append(h)
    return tokens, hashes


class SimServer:
    """Simulated engines, each behind its own HTTP port; see the module docstring.

    ``profiles``: one per engine. ``slowdowns`` (default 1.0 each) and ``noise`` shape
    each engine's speed; ``time_scale`` runs them faster than real time; ``port`` is the
    first engine's port (0: free ports).
    """

    def __init__(
        self,
        profiles: Sequence[SimProfile],
        *,
        time_scale: float = 1.0,
        slowdowns: Sequence[float] | None = None,
        noise: float = 0.0,
        seed: int = 0,
        model: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        reply: Reply | None = None,
        grammar_s: float = 0.0,
        grammar_workers: int = 4,
        mask_s: float = 0.0,
        warmup_s: float = 0.0,
    ) -> None:
        slow = list(slowdowns) if slowdowns is not None else [1.0] * len(profiles)
        if len(slow) != len(profiles):
            raise ValueError("one slowdown per engine")
        cpu = {"grammar_s": grammar_s, "grammar_workers": grammar_workers, "mask_s": mask_s}
        self.engines = [
            SimEngine(
                p, slowdown=s, noise=noise, seed=seed + i, name=str(i), warmup_s=warmup_s, **cpu
            )
            for i, (p, s) in enumerate(zip(profiles, slow, strict=True))
        ]
        self.model = model or profiles[0].model
        self.time_scale = time_scale
        self.host = host
        self.port = port
        self.reply = reply or _default_reply
        self.cluster = SimCluster(self.engines, time_scale=time_scale)
        self.ports: list[int] = []
        self._runners: list[web.AppRunner] = []
        self._serial = 0

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{p}" for p in self.ports]

    async def start(self) -> None:
        """Starts the clock and listens, one port per engine."""
        await self.cluster.__aenter__()
        try:
            for i in range(len(self.engines)):
                await self._listen(i)
        except BaseException:
            await self.stop()
            raise

    async def _listen(self, index: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", functools.partial(self._chat, index=index))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", functools.partial(self._metrics, index=index))
        app.router.add_get("/version", self._version)
        app.router.add_get("/server_info", functools.partial(self._server_info, index=index))
        # A client that disconnects cancels its handler, so the engine aborts the
        # request, as vLLM does; otherwise it would compute replies nobody reads.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.25, handler_cancellation=True
        )
        await runner.setup()
        port = self.port + index if self.port else 0
        site = web.TCPSite(runner, self.host, port, backlog=4096)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runners.append(runner)
        self.ports.append(runner.addresses[0][1])

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners = []
        await self.cluster.__aexit__(None, None, None)

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _chat(self, request: web.Request, index: int) -> web.StreamResponse:
        engine = self.engines[index]
        try:
            body = msgspec.json.decode(await request.read())
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise TypeError("the body must be an object with a messages list")
        except (msgspec.DecodeError, TypeError) as exc:
            return _error(400, f"invalid request body: {exc}")
        text = self.reply(body)
        if inspect.isawaitable(text):
            text = await text
        max_tokens = body.get("max_tokens") or _DEFAULT_MAX_TOKENS
        text, completion, finish = fit_reply(text, max_tokens, bool(body.get("ignore_eos")))
        prompt, hashes = prompt_of(body["messages"], engine.profile.block_size)
        try:
            engine.check(prompt, completion)
        except ValueError as exc:
            return _error(400, str(exc))
        # A grammar (or JSON schema) is compiled before the request can be scheduled.
        structured = bool(body.get("structured_outputs") or body.get("guided_grammar"))
        request = SimRequest(prompt, completion, hashes, grammar=structured)
        done = await self.cluster.submit(index, request)
        self._serial += 1
        payload = completion_body(
            f"chatcmpl-sim-{self._serial}",
            body.get("model") or self.model,
            text,
            finish,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=done.cached_tokens or 0,
        )
        return web.Response(body=msgspec.json.encode(payload), content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        card = {
            "id": self.model,
            "object": "model",
            "owned_by": "vllm",
            "max_model_len": self.engines[0].profile.max_model_len,
        }
        return _json({"object": "list", "data": [card]})

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return _json({"version": f"simulated ({self.engines[0].profile.name})"})

    async def _metrics(self, request: web.Request, index: int) -> web.StreamResponse:
        text = exposition(self.engines[index], self.model)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _server_info(self, request: web.Request, index: int) -> web.StreamResponse:
        engine = self.engines[index]
        p = engine.profile
        return _json(
            {
                "vllm_config": {
                    "model_config": {"model": self.model, "max_model_len": p.max_model_len},
                    "cache_config": {
                        "block_size": p.block_size,
                        "num_gpu_blocks": p.num_gpu_blocks,
                    },
                    "scheduler_config": {
                        "max_num_seqs": p.max_num_seqs,
                        "max_num_batched_tokens": p.max_num_batched_tokens,
                    },
                    "parallel_config": {"tensor_parallel_size": p.gpus},
                },
                "simulator": {
                    "profile": msgspec.to_builtins(p),
                    "time_scale": self.time_scale,
                    "slowdown": engine.slowdown,
                    "noise": engine.noise,
                    "grammar_s": engine.grammar_s,
                    "mask_s": engine.mask_s,
                    "simulated_s": self.cluster.now(),
                },
            }
        )


def _json(data: Any) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    body = msgspec.json.encode({"error": {"message": message, "type": kind, "code": status}})
    return web.Response(body=body, status=status, content_type="application/json")


async def serve_forever(server: SimServer, stop: asyncio.Event) -> None:
    """Starts ``server``, prints each engine's URL, serves until ``stop`` is set."""
    async with server:
        for url in server.urls:
            print(f"listening on {url}", flush=True)
        await stop.wait()
