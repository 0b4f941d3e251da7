"""The few-shot ring: do-not-imitate-too-closely references that move with the run.

A ring starts as its hand-written seeds. Each accepted output is pushed in; once the
ring holds ``capacity`` items the oldest leaves, seeds first, so references track what
the run writes now while keeping its variety. Every ``reset_every`` accepted pushes the
ring goes back to the seeds, which stops a run from drifting into imitating itself. The
seeds stay available throughout: for resets, and for ``draw(..., seeds_only=True)``,
which the first calls of a stage use before the run has outputs worth showing.

Concurrency: the ring is shared by every task of a stage on one event loop. The
mutating calls (:meth:`~FewShotRing.push`, :meth:`~FewShotRing.reset`,
:meth:`~FewShotRing.restore`) are coroutines that take an ``asyncio.Lock``; their critical
sections never await, so the lock is never held across a suspension and readers
(:meth:`~FewShotRing.draw`, :meth:`~FewShotRing.snapshot`), which are plain methods, always
see a whole state. The ring is not for use from other threads.

The persona and experience stages share this class; a snapshot is plain data (msgspec)
so a run directory can keep the ring for resume.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")


class RingSnapshot(msgspec.Struct, Generic[T], kw_only=True):
    """A ring's state, oldest item first; decode with ``RingSnapshot[str]`` and so on."""

    items: list[T]
    accepted: int = 0  # pushes over the ring's life
    since_reset: int = 0  # pushes since the last reset, toward ``reset_every``


class FewShotRing(Generic[T]):
    """A bounded pool of references: seeds, then recent accepted items."""

    def __init__(
        self, seeds: Iterable[T], *, capacity: int = 20, reset_every: int | None = 50
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if reset_every is not None and reset_every < 1:
            raise ValueError(f"reset_every must be at least 1 or None, got {reset_every}")
        self._seeds: tuple[T, ...] = tuple(seeds)
        self.capacity = capacity
        self.reset_every = reset_every  # None: never reset on its own
        # More seeds than capacity: the ring starts with the last ``capacity`` of them;
        # seeds_only draws still see them all.
        self._pool: deque[T] = deque(self._seeds, maxlen=capacity)
        self._accepted = 0
        self._since_reset = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"FewShotRing(size={len(self._pool)}/{self.capacity}, seeds={len(self._seeds)}, "
            f"accepted={self._accepted}, since_reset={self._since_reset}, "
            f"reset_every={self.reset_every})"
        )

    def __len__(self) -> int:
        return len(self._pool)

    @property
    def seeds(self) -> tuple[T, ...]:
        return self._seeds

    @property
    def accepted(self) -> int:
        """Items pushed over the ring's life, resets and restores included."""
        return self._accepted

    def items(self) -> list[T]:
        """The current pool, oldest first."""
        return list(self._pool)

    async def push(self, item: T) -> bool:
        """Adds an accepted item, evicting the oldest when full; True if it caused a reset.

        The push that completes ``reset_every`` accepted items since the last reset puts
        the ring back to its seeds, that item included.
        """
        async with self._lock:
            self._pool.append(item)
            self._accepted += 1
            self._since_reset += 1
            if self.reset_every is not None and self._since_reset >= self.reset_every:
                self._reset()
                return True
            return False

    async def reset(self) -> None:
        """Back to the seeds alone."""
        async with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._pool = deque(self._seeds, maxlen=self.capacity)
        self._since_reset = 0

    def draw(self, k: int, rng: random.Random, seeds_only: bool = False) -> list[T]:
        """Up to ``k`` distinct items in random order, from the pool or the seeds only."""
        source = self._seeds if seeds_only else tuple(self._pool)
        if k <= 0 or not source:
            return []
        return rng.sample(source, min(k, len(source)))

    def snapshot(self) -> RingSnapshot[T]:
        """The ring's state as plain data (the seeds are not in it: they ship with it)."""
        return RingSnapshot(
            items=list(self._pool), accepted=self._accepted, since_reset=self._since_reset
        )

    async def restore(self, snapshot: RingSnapshot[T]) -> None:
        """Puts the ring in ``snapshot``'s state; only the newest ``capacity`` items fit."""
        async with self._lock:
            self._pool = deque(snapshot.items, maxlen=self.capacity)
            self._accepted = snapshot.accepted
            self._since_reset = snapshot.since_reset


__all__ = ["FewShotRing", "RingSnapshot"]
