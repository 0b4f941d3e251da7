"""FewShotRing: eviction, draws, resets, snapshots, and pushes from many tasks at once."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from soc_async.fewshot import FewShotRing, RingSnapshot

SEEDS = [f"seed-{i}" for i in range(5)]


async def test_starts_as_seeds_and_ages_out_oldest_first() -> None:
    """Pushes fill the ring to capacity, then the oldest item leaves, seeds first."""
    ring = FewShotRing(SEEDS, capacity=8, reset_every=None)
    assert ring.items() == SEEDS
    for i in range(3):
        await ring.push(f"gen-{i}")
    assert ring.items() == [*SEEDS, "gen-0", "gen-1", "gen-2"]
    await ring.push("gen-3")
    assert len(ring) == 8
    assert ring.items() == [*SEEDS[1:], "gen-0", "gen-1", "gen-2", "gen-3"]
    for i in range(4, 20):
        await ring.push(f"gen-{i}")
    assert ring.items() == [f"gen-{i}" for i in range(12, 20)]
    assert ring.seeds == tuple(SEEDS)
    assert ring.accepted == 20


async def test_draw_returns_distinct_items_deterministically() -> None:
    """draw(k) gives k distinct pool items, the same ones for the same generator state."""
    ring = FewShotRing(SEEDS, capacity=10, reset_every=None)
    for i in range(5):
        await ring.push(f"gen-{i}")
    a = ring.draw(3, random.Random(4))
    assert len(a) == 3 and len(set(a)) == 3 and set(a) <= set(ring.items())
    assert ring.draw(3, random.Random(4)) == a
    assert sorted(ring.draw(50, random.Random(1))) == sorted(ring.items())
    assert ring.draw(0, random.Random(1)) == []


async def test_seeds_only_draws_survive_eviction() -> None:
    """Once every seed has aged out of the pool, seeds_only draws still return seeds."""
    ring = FewShotRing(SEEDS, capacity=4, reset_every=None)
    for i in range(10):
        await ring.push(f"gen-{i}")
    assert not set(ring.items()) & set(SEEDS)
    drawn = ring.draw(3, random.Random(2), seeds_only=True)
    assert len(drawn) == 3 and set(drawn) <= set(SEEDS)
    assert set(ring.draw(3, random.Random(2))) <= {f"gen-{i}" for i in range(6, 10)}


async def test_automatic_reset_every_n_accepted() -> None:
    """Every reset_every-th push returns True and leaves only the seeds in the ring."""
    ring = FewShotRing(SEEDS, capacity=20, reset_every=3)
    results = [await ring.push(f"gen-{i}") for i in range(7)]
    assert results == [False, False, True, False, False, True, False]
    assert ring.items() == [*SEEDS, "gen-6"]
    assert ring.accepted == 7


async def test_manual_reset_returns_to_the_seeds() -> None:
    """reset() drops generated items and restores every seed that had aged out."""
    ring = FewShotRing(SEEDS, capacity=5, reset_every=None)
    for i in range(7):
        await ring.push(f"gen-{i}")
    await ring.reset()
    assert ring.items() == SEEDS


async def test_more_seeds_than_capacity() -> None:
    """A ring smaller than its seed list holds the newest seeds; seeds_only sees them all."""
    ring = FewShotRing(SEEDS, capacity=2, reset_every=None)
    assert ring.items() == SEEDS[-2:]
    assert sorted(ring.draw(5, random.Random(0), seeds_only=True)) == sorted(SEEDS)


async def test_snapshot_round_trips_through_json() -> None:
    """A snapshot encodes to JSON and restores the items and counters into a new ring."""
    ring = FewShotRing(SEEDS, capacity=6, reset_every=10)
    for i in range(8):
        await ring.push(f"gen-{i}")
    blob = msgspec.json.encode(ring.snapshot())
    snap = msgspec.json.decode(blob, type=RingSnapshot[str])
    other = FewShotRing(SEEDS, capacity=6, reset_every=10)
    await other.restore(snap)
    assert other.items() == ring.items()
    assert other.accepted == ring.accepted == 8
    # The next two pushes complete reset_every in both rings alike.
    assert [await other.push("x"), await other.push("y")] == [False, True]
    assert other.items() == SEEDS


async def test_restore_keeps_only_the_newest_capacity_items() -> None:
    """Restoring a larger snapshot keeps the newest items that fit."""
    ring = FewShotRing(SEEDS, capacity=3, reset_every=None)
    await ring.restore(RingSnapshot(items=["a", "b", "c", "d", "e"], accepted=5))
    assert ring.items() == ["c", "d", "e"]


async def test_concurrent_pushes_lose_nothing_beyond_capacity() -> None:
    """Many tasks pushing and drawing at once: size never passes capacity, nothing is lost.

    The ring ends holding exactly the last ``capacity`` items in the order the pushes
    completed, and counts every push.
    """
    capacity, tasks, per_task = 20, 40, 25
    ring: FewShotRing[str] = FewShotRing(SEEDS, capacity=capacity, reset_every=None)
    order: list[str] = []
    sizes: list[int] = []
    done = asyncio.Event()

    async def producer(t: int) -> None:
        rng = random.Random(t)
        for i in range(per_task):
            item = f"t{t}-{i}"
            await ring.push(item)
            order.append(item)
            sizes.append(len(ring))
            ring.draw(3, rng)
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    async def watcher() -> None:
        while not done.is_set():
            sizes.append(len(ring))
            await asyncio.sleep(0)

    watch = asyncio.create_task(watcher())
    await asyncio.gather(*(producer(t) for t in range(tasks)))
    done.set()
    await watch
    assert ring.accepted == tasks * per_task
    assert len(order) == len(set(order)) == tasks * per_task
    assert ring.items() == order[-capacity:]
    assert max(sizes) <= capacity


def test_bad_arguments_are_refused() -> None:
    """Capacity and reset_every must be positive."""
    with pytest.raises(ValueError):
        FewShotRing(SEEDS, capacity=0)
    with pytest.raises(ValueError):
        FewShotRing(SEEDS, reset_every=0)
