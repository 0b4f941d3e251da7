"""The KV cache of a simulated engine: a pool of blocks with a prefix cache.

As in vLLM, a block that holds a full block of prompt tokens is known by a hash of those
tokens and everything before them; when the request holding it finishes or is
preempted the block keeps its hash and goes to the free list, where a later request with
the same prefix finds it (a prefix-cache hit) until it is evicted, least recently freed
first, to make room for new blocks. A block in use by several requests (a shared prefix)
is counted once.

Plain counts and dicts, no tokens: a block's content is its hash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["BlockPool"]


class BlockPool:
    """``num_blocks`` blocks: in use (hashed and shared, or private), or free (cached with
    a hash, evictable in LRU order, or blank)."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.used = 0  # blocks held by requests
        self._blank = num_blocks  # free blocks without a hash
        self._cached: OrderedDict[int, None] = OrderedDict()  # free, hashed; oldest first
        self._refs: dict[int, int] = {}  # hashed blocks in use -> requests holding them
        self.evictions = 0

    @property
    def free(self) -> int:
        """Blocks a request can be given now (blank, or cached and evicted for it)."""
        return self._blank + len(self._cached)

    @property
    def usage(self) -> float:
        """vllm:kv_cache_usage_perc: the share of blocks held by requests."""
        return self.used / self.num_blocks

    def cached_prefix(self, hashes: Sequence[int]) -> tuple[int, int]:
        """(leading blocks of ``hashes`` present, of which free), without touching them."""
        found = free = 0
        refs, cached = self._refs, self._cached
        for h in hashes:
            if h in refs:
                found += 1
            elif h in cached:
                found += 1
                free += 1
            else:
                break
        return found, free

    def take_cached(self, hashes: Sequence[int]) -> None:
        """Hold the cached blocks of ``hashes`` (all present: see :meth:`cached_prefix`)."""
        refs, cached = self._refs, self._cached
        for h in hashes:
            n = refs.get(h)
            if n is None:
                del cached[h]
                refs[h] = 1
                self.used += 1
            else:
                refs[h] = n + 1

    def allocate(self, n: int) -> bool:
        """Hold ``n`` new private blocks, evicting cached ones if need be; False (and
        nothing taken) when fewer than ``n`` are free."""
        if n <= 0:
            return True
        if n > self._blank + len(self._cached):
            return False
        blank = min(n, self._blank)
        self._blank -= blank
        for _ in range(n - blank):
            self._cached.popitem(last=False)
            self.evictions += 1
        self.used += n
        return True

    def publish(self, h: int) -> bool:
        """A private block now holds a full block of prompt with hash ``h``: make it
        findable. False when another block already has that hash (two requests computed
        the same block at once); the caller keeps its copy private."""
        if h in self._refs or h in self._cached:
            return False
        self._refs[h] = 1
        return True

    def release(self, hashes: Sequence[int], private: int) -> None:
        """Give back a request's blocks: its hashed ones to the cache and ``private``
        blank ones. As in vLLM, a request's blocks are freed last block first, so its
        tail is evicted before its prefix, which other requests are likelier to share."""
        refs, cached = self._refs, self._cached
        dropped = 0
        for h in reversed(hashes):
            n = refs[h] - 1
            if n:
                refs[h] = n
            else:
                del refs[h]
                cached[h] = None
                dropped += 1
        self.used -= dropped + private
        self._blank += private

    def check(self) -> None:
        """AssertionError when the counts disagree (for tests)."""
        assert 0 <= self.used <= self.num_blocks
        assert len(self._refs) <= self.used
        assert self.used + self.free == self.num_blocks, (self.used, self.free)
