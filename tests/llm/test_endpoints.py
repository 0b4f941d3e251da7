"""Routing: affinity, least load, servers taken out and probed back (no sockets here)."""

from __future__ import annotations

import asyncio

import pytest

from soc_async.config import ClientConfig
from soc_async.errors import ServerError
from soc_async.llm.endpoints import SOFT_FAILURES_TO_DOWN, EndpointPool, Router

A, B, C = "http://a:1", "http://b:2", "http://c:3"


def test_affinity_keeps_a_key_on_its_endpoint_whatever_the_load() -> None:
    """Once placed, a conversation's requests go to the same server even when busier."""
    r = Router([A, B])
    home = r.pick("chat-1")
    assert home is not None
    home.in_flight = 50  # much busier than the other
    for _ in range(5):
        assert r.pick("chat-1") is home
    assert r.home_of("chat-1") is home


def test_new_work_goes_to_the_least_loaded() -> None:
    """Work without a home goes to the endpoint with the fewest requests in flight."""
    r = Router([A, B, C])
    a, b, c = r.endpoints
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert r.pick() is b
    assert r.pick("new-chat") is b


def test_ties_rotate_so_idle_endpoints_share_new_work() -> None:
    """With equal load, successive picks spread over every endpoint."""
    r = Router([A, B, C])
    picked = {r.pick(f"k{i}").url for i in range(3)}  # type: ignore[union-attr]
    assert picked == {A, B, C}


def test_a_down_endpoint_is_routed_around_and_its_keys_move() -> None:
    """A key whose server is out moves to a live one and stays there after it returns."""
    r = Router([A, B])
    home = r.pick("chat-1")
    assert home is not None
    assert r.failed(home, hard=True)
    moved = r.pick("chat-1")
    assert moved is not None and moved is not home and moved.up
    for _ in range(4):
        assert r.pick() is moved  # nothing new goes to the down one
    r.restore(home)
    assert r.pick("chat-1") is moved


def test_soft_failures_take_an_endpoint_out_only_in_a_row() -> None:
    """Timeouts and resets take a server out after several in a row; an answer resets it."""
    r = Router([A])
    ep = r.endpoints[0]
    for _ in range(SOFT_FAILURES_TO_DOWN - 1):
        assert not r.failed(ep, hard=False)
    r.answered(ep)
    for _ in range(SOFT_FAILURES_TO_DOWN - 1):
        assert not r.failed(ep, hard=False)
    assert ep.up
    assert r.failed(ep, hard=False)
    assert not ep.up
    assert r.pick() is None


def test_affinity_map_forgets_the_least_recently_used_past_capacity() -> None:
    """The affinity map stays bounded and keeps the keys in use."""
    r = Router([A, B], affinity_capacity=2)
    r.pick("old")
    r.pick("kept")
    r.pick("old")  # used again: now the most recent
    r.pick("newest")
    assert r.home_of("kept") is None
    assert r.home_of("old") is not None and r.home_of("newest") is not None
    r.forget("old")
    assert r.home_of("old") is None


class ScriptedProbe:
    """A probe that says no until told the server is back; counts its calls."""

    def __init__(self) -> None:
        self.healthy: set[str] = set()
        self.calls: list[str] = []

    async def __call__(self, url: str) -> bool:
        self.calls.append(url)
        return url in self.healthy


async def test_requests_wait_while_all_are_down_and_resume_when_a_probe_answers() -> None:
    """With every server out, acquire blocks; a healthy probe puts one back and unblocks it."""
    probe = ScriptedProbe()
    pool = EndpointPool([A, B], ClientConfig(probe_interval_s=0.01, down_timeout_s=10), probe)
    a, b = pool.endpoints
    pool.failed(a, hard=True)
    pool.failed(b, hard=True)
    waiter = asyncio.create_task(pool.acquire("chat-1"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert set(probe.calls) == {A, B}  # both probed, neither answered yet
    probe.healthy.add(B)
    ep = await asyncio.wait_for(waiter, 2)
    assert ep is b and ep.in_flight == 1
    pool.release(ep)
    assert ep.in_flight == 0
    await pool.aclose()


async def test_all_down_past_the_timeout_raises_server_error_naming_urls() -> None:
    """When no server returns within down_timeout_s, acquire fails with the URLs named."""
    pool = EndpointPool(
        [A, B], ClientConfig(probe_interval_s=0.01, down_timeout_s=0.1), ScriptedProbe()
    )
    for ep in pool.endpoints:
        pool.failed(ep, hard=True)
    with pytest.raises(ServerError) as info:
        await pool.acquire()
    assert A in str(info.value) and B in str(info.value)
    await pool.aclose()


async def test_a_probe_that_raises_counts_as_no_answer() -> None:
    """A probe error keeps the server out and the probing going, it does not crash."""
    calls = 0

    async def flaky(url: str) -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("connection refused")
        return True

    pool = EndpointPool([A], ClientConfig(probe_interval_s=0.01), flaky)
    pool.failed(pool.endpoints[0], hard=True)
    ep = await asyncio.wait_for(pool.acquire(), 2)
    assert ep.up and calls == 3
    await pool.aclose()


def test_new_work_goes_where_the_share_of_the_bound_is_smallest() -> None:
    """With per-engine bounds, new work goes to the engine with the most room relative to
    its batch: 100 of 1,024 in flight is less loaded than 40 of 256."""
    r = Router([A, B])
    r.set_limits({A: 1024, B: 256})
    a, b = r.endpoints
    a.in_flight, b.in_flight = 100, 40
    assert r.pick() is a


def test_an_engine_at_its_bound_gets_new_work_only_when_all_are() -> None:
    """B is at its bound, A over half of a larger one: A; both at their bound: the lower
    share; a conversation whose home is full still goes home (the server queues it)."""
    r = Router([A, B])
    r.set_limits({A: 8, B: 4})
    a, b = r.endpoints
    home = r.pick("chat-1")
    assert home is not None
    a.in_flight, b.in_flight = 6, 4
    assert r.pick() is a
    a.in_flight, b.in_flight = 9, 4
    assert r.pick() is b  # 4/4 = 1.0 against 9/8 > 1
    home.in_flight = (home.limit or 0) + 5
    assert r.pick("chat-1") is home


async def test_an_endpoint_taken_out_at_the_start_comes_back_when_it_answers() -> None:
    """take_out: out of service before any request (it was not ready), probed, restored."""
    answers = iter([False, True])

    async def probe(url: str) -> bool:
        return next(answers)

    pool = EndpointPool([A, B], ClientConfig(probe_interval_s=0.01), probe)
    pool.take_out(B)
    assert [ep.up for ep in pool.endpoints] == [True, False]
    assert pool.try_acquire() is pool.endpoints[0]
    for _ in range(100):
        if pool.endpoints[1].up:
            break
        await asyncio.sleep(0.01)
    assert pool.endpoints[1].up
    await pool.aclose()
