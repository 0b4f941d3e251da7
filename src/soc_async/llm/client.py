"""Chat completions against vLLM's OpenAI-compatible API: retries, backoff, usage.

One :class:`LLMClient` per run holds one aiohttp session whose connection pool is sized
from the concurrency limit, so thousands of requests share keep-alive connections.
aiohttp directly rather than httpx: httpx's default transport managed 146 requests/s at
1,024 in flight where aiohttp's did 4,940 (docs/performance.md); the per-request path
here is kept close to a bare aiohttp loop (benchmarks/client_overhead.py measures it).

Failures split in two. Transient ones (connection errors, timeouts, 429, 5xx, a reply
that is not the JSON expected) are retried with exponential backoff and full jitter, 429
no sooner than its Retry-After; when they outlast ``max_retries`` the request raises
``RetriesExhausted`` whose ``reason`` is a short stable code (``http_503``, ``timeout``,
``connection``, ``bad_json``, ``http_429``) for the failure record. A 4xx other than 429
means the request itself is wrong: it raises ``RequestError`` at once with the server's
message. While every server is out, requests wait in the endpoint pool
(``EndpointPool.acquire``) instead of spending their retries; past
``down_timeout_s`` that wait raises ``ServerError``.

Every failed attempt is counted in :attr:`LLMClient.faults`, by endpoint and by cause
(:data:`FAULT_CAUSES`), whether it was retried or was the last one: the run's live view,
metrics.jsonl and Prometheus endpoint show them, so a proxy or server that answers 5xx
or drops connections is visible before it costs a single item.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec

from soc_async.config import ClientConfig
from soc_async.errors import ConfigError, RequestError, RetriesExhausted, ServerError
from soc_async.llm.endpoints import EndpointPool
from soc_async.llm.http import open_session
from soc_async.llm.metrics import MetricsReader, MetricsSnapshot
from soc_async.llm.types import ChatRequest, Completion, TokenUsage, encode_hook

# Connections beyond the request limit, per server, for /health probes and /metrics
# reads, so the controller can still read the server while the pool is saturated.
_SPARE_CONNECTIONS = 4


# The slice of the chat-completion response the client reads; msgspec skips the rest.
class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Response(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None
    model: str = ""


class _Model(msgspec.Struct):
    id: str


class _Models(msgspec.Struct):
    data: list[_Model]


_decode_response = msgspec.json.Decoder(_Response).decode
_decode_models = msgspec.json.Decoder(_Models).decode
_encode = msgspec.json.Encoder(enc_hook=encode_hook).encode


# Why an attempt failed, as counted: an HTTP status class or 429, a connection that
# broke mid-request, one that could not be opened, no reply in time, a 200 whose body is
# not the JSON expected.
FAULT_CAUSES: tuple[str, ...] = ("5xx", "429", "reset", "connect", "timeout", "bad_json")


class _Transient(Exception):
    """One attempt failed in a way worth retrying; ``cause`` is one of FAULT_CAUSES."""

    def __init__(self, reason: str, detail: str, *, cause: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.cause = cause
        self.status = status
        self.retry_after: float | None = None


class LLMClient:
    """The run's one connection to its vLLM server(s).

    ``endpoints``: base URLs (``http://host:port``, no ``/v1``). ``pool_size``: the most
    requests that will be in flight at once (the concurrency limit's maximum).
    A request is sent as it is given: its model was chosen by whoever built it
    (``soc_async.calls.build_request``), and a request that names none leaves the field
    out, so the server answers with the model it serves.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        api_key: str | None,
        config: ClientConfig,
        pool_size: int,
    ) -> None:
        if not endpoints:
            raise ConfigError("endpoints: at least one server base URL is needed")
        self._config = config
        self._pool_size = max(1, pool_size)
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.pool = EndpointPool(endpoints, config, self._probe)
        # Failed attempts by endpoint URL and cause (FAULT_CAUSES), retried or not.
        self.faults: dict[str, Counter[str]] = {ep.url: Counter() for ep in self.pool.endpoints}
        self._max_retry_after = max(config.backoff_max_s, config.timeout_s)

    async def __aenter__(self) -> LLMClient:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def endpoints(self) -> list[str]:
        return [ep.url for ep in self.pool.endpoints]

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (opened on first use)."""
        return self._session or self._open()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("LLMClient is closed; make a new one")
        if self._session is None:
            n = len(self.pool.endpoints)
            per_host = self._pool_size + _SPARE_CONNECTIONS
            connector = aiohttp.TCPConnector(
                limit=self._pool_size + _SPARE_CONNECTIONS * n,
                limit_per_host=per_host,
                keepalive_timeout=60,  # idle connections outlive pauses between turns
            )
            cfg = self._config
            self._session = open_session(
                self._api_key,
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=cfg.timeout_s, sock_connect=cfg.connect_timeout_s
                ),
            )
        return self._session

    async def aclose(self) -> None:
        """Stop the probes and close every connection."""
        self._closed = True
        await self.pool.aclose()
        if self._session is not None:
            await self._session.close()

    async def chat(
        self, request: ChatRequest, *, affinity: str | None = None, endpoint: str | None = None
    ) -> Completion:
        """One chat completion; ``affinity`` keeps a conversation on one server.
        ``endpoint``: the server the first attempt goes to, when the caller chose it (and
        holds its slot there); retries go by affinity.

        Raises RequestError (a 4xx other than 429: the request is wrong), RetriesExhausted
        (transient failures outlasted the budget) or ServerError (every server down past
        ``down_timeout_s``).
        """
        session = self._session or self._open()
        model = request.model
        body = _encode(_body(request))
        pool = self.pool
        max_retries = self._config.max_retries
        attempts = 0
        while True:
            ep = pool.try_acquire(affinity, endpoint) or await pool.acquire(affinity)
            endpoint = None
            attempts += 1
            started = time.perf_counter()
            try:
                async with session.post(ep.chat_url, data=body) as resp:
                    status = resp.status
                    payload = await resp.read()
                    if status == 200:
                        parsed = _decode_response(payload)
                        if parsed.choices:
                            pool.answered(ep)
                            return _completion(
                                parsed, model, ep.url, time.perf_counter() - started, attempts
                            )
                        raise _Transient(
                            "bad_json", "reply has no choices", cause="bad_json", status=200
                        )
                    pool.answered(ep)
                    failure = _http_failure(status, payload, resp.headers, ep.chat_url, attempts)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                pool.answered(ep)
                failure = _Transient(
                    "bad_json", f"unreadable reply: {exc}", cause="bad_json", status=200
                )
                failure.__cause__ = exc
            except _Transient as exc:
                pool.answered(ep)
                failure = exc
            except TimeoutError as exc:
                # A connect timeout means the server is unreachable; a read timeout may
                # be one stalled request on a healthy server.
                pool.failed(ep, hard=isinstance(exc, aiohttp.ConnectionTimeoutError))
                failure = _Transient(
                    "timeout", f"no reply within the timeout ({exc!r})", cause="timeout"
                )
                failure.__cause__ = exc
            except aiohttp.ClientError as exc:
                unreachable = isinstance(exc, aiohttp.ClientConnectorError)
                pool.failed(ep, hard=unreachable)
                failure = _Transient(
                    "connection",
                    f"{exc.__class__.__name__}: {exc}",
                    cause="connect" if unreachable else "reset",
                )
                failure.__cause__ = exc
            finally:
                pool.release(ep)
            self.faults[ep.url][failure.cause] += 1
            if attempts > max_retries:
                raise RetriesExhausted(
                    failure.reason,
                    detail=str(failure),
                    status=failure.status,
                    attempts=attempts,
                    endpoint=ep.url,
                ) from failure
            await asyncio.sleep(self._delay(attempts, failure.retry_after))

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never sooner than the server's Retry-After."""
        cfg = self._config
        cap = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempts - 1))
        delay = random.uniform(0.0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max_retry_after))
        return delay

    async def served_model(self) -> str:
        """The id of the first model the first answering server serves (GET /v1/models)."""
        session = self.session
        timeout = aiohttp.ClientTimeout(total=min(self._config.timeout_s, 30.0))
        problems = []
        for ep in self.pool.endpoints:
            url = ep.url + "/v1/models"
            try:
                async with session.get(url, timeout=timeout) as resp:
                    payload = await resp.read()
                    if resp.status != 200:
                        problems.append(f"{url}: HTTP {resp.status}")
                        continue
                models = _decode_models(payload)
            except (aiohttp.ClientError, TimeoutError, msgspec.MsgspecError) as exc:
                problems.append(f"{url}: {exc.__class__.__name__}: {exc}")
                continue
            if models.data:
                return models.data[0].id
            problems.append(f"{url}: serves no model")
        raise ServerError("cannot learn the served model name: " + "; ".join(problems))

    def metrics_reader(self) -> MetricsReader:
        """A reader of every endpoint's /metrics over this client's session."""
        return MetricsReader(self.session, self.endpoints)

    async def read_metrics(self) -> MetricsSnapshot:
        """All endpoints' /metrics combined; ServerError when none could be read."""
        return await self.metrics_reader().read()

    async def _probe(self, url: str) -> bool:
        timeout = aiohttp.ClientTimeout(total=max(1.0, self._config.connect_timeout_s))
        async with self.session.get(url + "/health", timeout=timeout) as resp:
            return resp.status == 200


def _body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a chat-completion request, exactly as built."""
    body: dict[str, Any] = {
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.model:
        body["model"] = request.model
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = request.stop
    if request.grammar is not None:
        body["structured_outputs"] = {"grammar": request.grammar}
    elif request.json_schema is not None:
        body["structured_outputs"] = {"json": request.json_schema}
    if request.priority is not None:
        body["priority"] = request.priority
    if request.chat_template_kwargs:
        body["chat_template_kwargs"] = request.chat_template_kwargs
    if request.extra:
        body.update(request.extra)
    return body


def _completion(
    parsed: _Response, model: str, endpoint: str, latency: float, attempts: int
) -> Completion:
    choice = parsed.choices[0]
    u = parsed.usage
    if u is None:
        usage = TokenUsage()
    else:
        details = u.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details is not None else 0
        usage = TokenUsage(prompt=u.prompt_tokens, completion=u.completion_tokens, cached=cached)
    return Completion(
        text=choice.message.content or "",
        finish_reason=choice.finish_reason or "",
        usage=usage,
        model=parsed.model or model,
        endpoint=endpoint,
        latency_s=latency,
        attempts=attempts,
    )


def _http_failure(status: int, payload: bytes, headers: Any, url: str, attempts: int) -> _Transient:
    """The retryable failure an HTTP status stands for; raises RequestError if none."""
    if status == 429:
        failure = _Transient("http_429", f"HTTP 429 from {url}", cause="429", status=429)
        failure.retry_after = _retry_after(headers.get("Retry-After"))
        return failure
    if status >= 500:
        return _Transient(
            f"http_{status}",
            f"HTTP {status} from {url}: {_error_message(payload)}",
            cause="5xx",
            status=status,
        )
    raise RequestError(
        f"HTTP {status} from {url}: {_error_message(payload)}", status=status, attempts=attempts
    )


def _error_message(payload: bytes) -> str:
    """The message of an OpenAI- or vLLM-style error body, else the body's start."""
    try:
        data = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
        if isinstance(data.get("detail"), str):
            return data["detail"]
    text = payload[:500].decode("utf-8", "replace").strip()
    return text or "(empty body)"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
