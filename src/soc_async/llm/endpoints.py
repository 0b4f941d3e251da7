"""Which server gets the next request: affinity, least load, and servers taken out.

A conversation's turns share a growing prefix, and vLLM caches KV blocks by prefix on
the engine that computed them, so every turn of one conversation (one affinity key)
goes to the server that served its first turn. Work without a home goes to the server
with the most room: the smallest share of its own bound in flight (``limit``, the
engine's batch size, so a larger engine gets more), an engine at its bound only when all
are. A conversation whose home is at its bound still goes home: the server queues it,
which costs less than computing its whole prefix again elsewhere. A server that stops
answering is taken out, probed in the background until its /health answers, and put
back; the keys it held move to a live server for good (their cache there is warm by the
time the old one returns).

:class:`Router` is the pure selection logic (no I/O, no clock); :class:`EndpointPool`
adds the probing and the wait while every server is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from soc_async.config import ClientConfig
from soc_async.errors import ServerError

# Soft failures (a reset mid-reply, a timeout) in a row before a server is taken out.
# One alone proves little: a single slow or dropped request happens on a healthy server.
SOFT_FAILURES_TO_DOWN = 3
# Affinity keys remembered; the least recently used are forgotten past this. Far above
# the conversations active at once, so only finished conversations age out.
AFFINITY_CAPACITY = 65536

Probe = Callable[[str], Awaitable[bool]]


class Endpoint:
    """One server: its base URL, requests in flight, and whether it is in service."""

    __slots__ = ("chat_url", "failures", "in_flight", "limit", "up", "url")

    def __init__(self, url: str, limit: int | None = None) -> None:
        self.url = url.rstrip("/")
        self.chat_url = self.url + "/v1/chat/completions"
        self.in_flight = 0
        self.limit = limit  # requests in flight this engine takes (its batch); None: no bound
        self.up = True
        self.failures = 0  # soft failures since the last answer

    def load(self) -> tuple[bool, float]:
        """Sort key of new work: engines below their bound first, then the least used."""
        if self.limit:
            return self.in_flight >= self.limit, self.in_flight / self.limit
        return False, float(self.in_flight)

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        bound = f"/{self.limit}" if self.limit else ""
        return f"<Endpoint {self.url} {state} in_flight={self.in_flight}{bound}>"


class Router:
    """Picks endpoints; holds the affinity map and each endpoint's load and state."""

    def __init__(self, urls: Sequence[str], *, affinity_capacity: int = AFFINITY_CAPACITY) -> None:
        if not urls:
            raise ValueError("Router needs at least one endpoint URL")
        self.endpoints: tuple[Endpoint, ...] = tuple(Endpoint(u) for u in urls)
        self._affinity: dict[str, Endpoint] = {}
        self._capacity = affinity_capacity
        self._next = 0  # where the least-loaded scan starts, so ties rotate
        # The sort key of new work; the caller that keeps its own per-engine queues (the
        # gateway's limiters) counts them in here.
        self.load: Callable[[Endpoint], tuple[bool, float]] = Endpoint.load

    def pick(self, affinity: str | None = None) -> Endpoint | None:
        """The endpoint for the next request of ``affinity``; None while all are down."""
        if affinity is not None:
            home = self._affinity.pop(affinity, None)
            if home is not None and home.up:
                self._affinity[affinity] = home  # re-inserted: most recently used last
                return home
        chosen = self._least_loaded()
        if chosen is not None and affinity is not None:
            if len(self._affinity) >= self._capacity:
                del self._affinity[next(iter(self._affinity))]
            self._affinity[affinity] = chosen
        return chosen

    def _least_loaded(self) -> Endpoint | None:
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0] if eps[0].up else None
        best: Endpoint | None = None
        best_i = 0
        start = self._next
        for k in range(n):
            i = (start + k) % n
            ep = eps[i]
            if ep.up and (best is None or self.load(ep) < self.load(best)):
                best, best_i = ep, i
        if best is not None:
            self._next = (best_i + 1) % n
        return best

    def set_limits(self, limits: dict[str, int]) -> None:
        """Each engine's bound on requests in flight, by URL (others keep theirs)."""
        for ep in self.endpoints:
            if ep.url in limits:
                ep.limit = limits[ep.url]

    def by_url(self, url: str) -> Endpoint | None:
        """The endpoint at ``url``, if it is one of these."""
        url = url.rstrip("/")
        return next((ep for ep in self.endpoints if ep.url == url), None)

    def home_of(self, affinity: str) -> Endpoint | None:
        """The endpoint ``affinity`` is kept on, if it has one."""
        return self._affinity.get(affinity)

    def forget(self, affinity: str) -> None:
        """Drop a finished conversation's key."""
        self._affinity.pop(affinity, None)

    def answered(self, ep: Endpoint) -> None:
        """``ep`` answered (any HTTP status): its soft-failure count starts over."""
        ep.failures = 0

    def failed(self, ep: Endpoint, *, hard: bool) -> bool:
        """Record a failure; True when it takes ``ep`` out of service.

        ``hard``: the connection could not be opened at all (refused, connect timeout),
        which is proof enough; soft failures take it out after a few in a row.
        """
        if not ep.up:
            return False
        ep.failures += 1
        if hard or ep.failures >= SOFT_FAILURES_TO_DOWN:
            ep.up = False
            return True
        return False

    def restore(self, ep: Endpoint) -> None:
        """Put ``ep`` back in service (its probe answered)."""
        ep.up = True
        ep.failures = 0

    def any_up(self) -> bool:
        return any(ep.up for ep in self.endpoints)


class EndpointPool:
    """A :class:`Router` plus background probes and the wait while every server is out.

    ``probe(url)`` says whether the server at ``url`` is healthy (the client passes a
    GET of /health); it is called every ``config.probe_interval_s`` for each server out
    of service until it says yes.
    """

    def __init__(self, urls: Sequence[str], config: ClientConfig, probe: Probe) -> None:
        self.router = Router(urls)
        self._config = config
        self._probe = probe
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._back = asyncio.Event()  # set while at least one endpoint is up
        self._back.set()
        self._all_down_since: float | None = None
        # Called with the URL of an endpoint as it is taken out, so work queued for it
        # elsewhere (the gateway's per-engine limiters) can move to the others.
        self.on_down: Callable[[str], None] | None = None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.router.endpoints

    def try_acquire(self, affinity: str | None = None, url: str | None = None) -> Endpoint | None:
        """An endpoint with one more request in flight, or None while all are down.
        ``url``: the endpoint the caller chose (and holds a slot of), when it is up."""
        chosen = self.router.by_url(url) if url is not None else None
        ep = chosen if chosen is not None and chosen.up else self.router.pick(affinity)
        if ep is not None:
            ep.in_flight += 1
        return ep

    async def acquire(self, affinity: str | None = None) -> Endpoint:
        """An endpoint with one more request in flight, waiting while all are down.

        Raises ServerError once every endpoint has been down ``config.down_timeout_s``
        (0: wait forever).
        """
        while True:
            ep = self.try_acquire(affinity)
            if ep is not None:
                return ep
            await self._wait_for_any()

    async def home(self, affinity: str | None = None) -> Endpoint:
        """The endpoint the next request of ``affinity`` goes to (its home, else the one
        with most room, which becomes its home), waiting while all are down; nothing is
        counted in flight."""
        while True:
            ep = self.router.pick(affinity)
            if ep is not None:
                return ep
            await self._wait_for_any()

    async def _wait_for_any(self) -> None:
        limit = self._config.down_timeout_s
        since = self._all_down_since
        if limit <= 0 or since is None:
            await self._back.wait()
            return
        left = since + limit - time.monotonic()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._back.wait()
        if not self._back.is_set():
            urls = ", ".join(ep.url for ep in self.endpoints)
            raise ServerError(
                f"no vLLM server answered for {limit:g} s: {urls} "
                "(check that they are running and reachable; client.down_timeout_s)"
            )

    def release(self, ep: Endpoint) -> None:
        """The request on ``ep`` is over (whatever its outcome)."""
        ep.in_flight -= 1

    def answered(self, ep: Endpoint) -> None:
        self.router.answered(ep)

    def failed(self, ep: Endpoint, *, hard: bool) -> None:
        """A connection-level failure on ``ep``; may take it out and start its probe."""
        if self.router.failed(ep, hard=hard):
            if self.on_down is not None:
                self.on_down(ep.url)
            if not self.router.any_up():
                self._all_down_since = time.monotonic()
                self._back.clear()
            if ep.url not in self._probes:
                self._probes[ep.url] = asyncio.create_task(
                    self._probe_until_back(ep), name=f"probe {ep.url}"
                )

    def forget(self, affinity: str) -> None:
        self.router.forget(affinity)

    def take_out(self, url: str) -> None:
        """Out of service from the start (not ready yet): probed until its /health answers."""
        for ep in self.endpoints:
            if ep.url == url.rstrip("/"):
                self.failed(ep, hard=True)

    async def _probe_until_back(self, ep: Endpoint) -> None:
        try:
            while True:
                await asyncio.sleep(self._config.probe_interval_s)
                try:
                    healthy = await self._probe(ep.url)
                except Exception:  # a probe that cannot connect is a no, not a crash
                    healthy = False
                if healthy:
                    self.router.restore(ep)
                    self._all_down_since = None
                    self._back.set()
                    return
        finally:
            self._probes.pop(ep.url, None)

    async def aclose(self) -> None:
        """Stop the probes."""
        tasks = list(self._probes.values())
        for task in tasks:
            task.cancel()
        # gather, not a suppress around each await: our own cancellation must propagate.
        await asyncio.gather(*tasks, return_exceptions=True)
