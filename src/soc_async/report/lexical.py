"""Lexical measures of the dataset's words: tokens, MTLD, distinct-n.

Pure functions over strings and token lists, no I/O.

MTLD (McCarthy & Jarvis 2010, "MTLD, vocd-D, and HD-D", Behavior Research Methods 42)
is written here rather than taken from a package: the Python packages that offer it
either pull in scipy, pandas and TextBlob for twenty lines of arithmetic
(lexicalrichness) or are unmaintained and quadratic (lexical-diversity). The code follows
the paper's original bidirectional procedure: walk the tokens keeping the type-token
ratio (TTR) of the current stretch; when it reaches the threshold (0.72) a factor is
complete and the stretch starts again; the leftover stretch counts as the partial factor
(1 - TTR) / (1 - threshold); MTLD is tokens / factors, averaged over the forward and the
backward pass. tests/report/test_report_lexical.py checks it against published values.

distinct-n (Li et al. 2016) is distinct n-grams / all n-grams over the whole corpus;
:class:`DistinctCounter` counts them exactly in 8 bytes per distinct n-gram. (A
HyperLogLog sketch would hold less, but datasketch's costs about 3 µs an update in
Python: a minute for the 20 million n-grams of 100,000 conversations.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["MTLD_THRESHOLD", "DistinctCounter", "mtld", "mtld_one_way", "tokens"]

MTLD_THRESHOLD = 0.72  # the factor size McCarthy & Jarvis (2010) settled on

# A word: letters (any script) with inner apostrophes; digits and punctuation are not words.
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def tokens(text: str) -> list[str]:
    """The words of ``text``, lower-cased: letters with inner apostrophes, nothing else."""
    return _WORD.findall(text.lower())


def mtld_one_way(words: Sequence[str], threshold: float = MTLD_THRESHOLD) -> float:
    """MTLD of one pass over ``words`` in the order given (0.0 for no words)."""
    if not words:
        return 0.0
    factors = 0.0
    types: set[str] = set()
    count = 0
    ttr = 1.0
    for word in words:
        count += 1
        types.add(word)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1.0
            types = set()
            count = 0
    if count:
        factors += (1.0 - ttr) / (1.0 - threshold)
    if factors == 0.0:  # every word distinct: no factor ever completes
        return float(len(words))
    return len(words) / factors


def mtld(words: Sequence[str], threshold: float = MTLD_THRESHOLD) -> float:
    """MTLD of ``words``: the mean of the forward and the backward pass."""
    forward = mtld_one_way(words, threshold)
    backward = mtld_one_way(words[::-1], threshold)
    return (forward + backward) / 2.0


class DistinctCounter:
    """distinct-n over a stream of token lists, in bounded memory.

    Each n-gram is kept as its 64-bit hash (Python's hash of the word tuple): new hashes
    gather in a small buffer; every ``flush_every`` n-grams the buffer becomes a sorted
    numpy array of its distinct hashes, and arrays of similar size are merged (as a
    log-structured merge does), so each hash is merged O(log n) times. Memory is about 8
    bytes per distinct n-gram; the count is exact unless two n-grams share a 64-bit hash
    (at ten million distinct n-grams, a chance of about one in 400,000). Hashes differ
    between processes (hash randomisation); the count does not.
    """

    def __init__(self, n: int, *, flush_every: int = 1 << 16) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self.total = 0  # n-grams seen, repeats included
        self._flush_every = flush_every
        self._buffer: list[int] = []
        self._levels: list[np.ndarray] = []  # sorted distinct hashes, sizes decreasing

    def add(self, words: Sequence[str]) -> None:
        """Counts the n-grams of one text (n-grams never span two texts)."""
        n = self.n
        if len(words) < n:
            return
        grams: Iterable[object] = (
            words if n == 1 else zip(*(words[i:] for i in range(n)), strict=False)
        )
        before = len(self._buffer)
        self._buffer.extend(map(hash, grams))
        self.total += len(self._buffer) - before
        if len(self._buffer) >= self._flush_every:
            self._merge()

    def _merge(self) -> None:
        if self._buffer:
            chunk = np.fromiter(self._buffer, dtype=np.int64, count=len(self._buffer))
            self._buffer.clear()
            self._levels.append(np.unique(chunk))
        levels = self._levels
        while len(levels) > 1 and levels[-2].size <= 2 * levels[-1].size:
            newer = levels.pop()
            levels[-1] = np.union1d(levels[-1], newer)

    @property
    def distinct(self) -> int:
        self._merge()
        while len(self._levels) > 1:
            newer = self._levels.pop()
            self._levels[-1] = np.union1d(self._levels[-1], newer)
        return int(self._levels[0].size) if self._levels else 0

    def ratio(self) -> float:
        """distinct / total n-grams (0.0 before any)."""
        return self.distinct / self.total if self.total else 0.0
