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
:class:`DistinctCounter` counts them exactly up to 200,000 distinct n-grams and
estimates beyond, with a HyperLogLog++ sketch, so memory stays bounded on any dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from datasketch import HyperLogLogPlusPlus

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


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, a bijection of 64-bit values: Python's tuple hashes are
    not mixed well enough for the low bits HyperLogLog picks registers with."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


class DistinctCounter:
    """distinct-n over a stream of token lists, in bounded memory.

    Each n-gram is taken as its 64-bit hash (Python's hash of the word tuple). Up to
    ``exact_up_to`` distinct n-grams the hashes are kept in a set and the count is exact
    (barring a 64-bit collision). Past that they move into a HyperLogLog++ sketch
    (datasketch's registers and estimator, precision 14: 16 KiB, about 1% standard
    error); the registers are updated by numpy, a batch of hashes at a time, because
    datasketch's own update costs about 3 µs an n-gram in Python: a minute for the 20
    million of 100,000 conversations. Python's string hashes change from one process
    to the next, so an estimate may move in its last digits between two reports of the
    same data; an exact count does not.
    """

    def __init__(self, n: int, *, exact_up_to: int = 200_000, batch: int = 1 << 16) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self.total = 0  # n-grams seen, repeats included
        self._exact_up_to = exact_up_to
        self._batch = batch
        self._exact: set[int] | None = set()
        self._sketch: HyperLogLogPlusPlus | None = None
        self._buffer: list[int] = []

    @property
    def estimated(self) -> bool:
        return self._sketch is not None

    def add(self, words: Sequence[str]) -> None:
        """Counts the n-grams of one text (n-grams never span two texts)."""
        n = self.n
        if len(words) < n:
            return
        grams: Iterable[object] = (
            words if n == 1 else zip(*(words[i:] for i in range(n)), strict=False)
        )
        self.total += len(words) - n + 1
        if self._exact is not None:
            self._exact.update(map(hash, grams))
            if len(self._exact) > self._exact_up_to:
                self._buffer.extend(self._exact)
                self._exact = None
                self._sketch = HyperLogLogPlusPlus(p=14)
                self._flush()
            return
        self._buffer.extend(map(hash, grams))
        if len(self._buffer) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        sketch = self._sketch
        if sketch is None or not self._buffer:
            return
        hashes = np.fromiter(self._buffer, dtype=np.int64, count=len(self._buffer))
        self._buffer.clear()
        h = _mix(hashes.view(np.uint64))
        index = (h & np.uint64(sketch.m - 1)).astype(np.intp)
        rest = h >> np.uint64(sketch.p)  # below 2**50: exact as a float64
        _, bit_length = np.frexp(rest.astype(np.float64))
        rank = (sketch.max_rank - bit_length + 1).astype(np.int8)  # as datasketch ranks
        np.maximum.at(sketch.reg, index, rank)

    @property
    def distinct(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        self._flush()
        assert self._sketch is not None
        return round(self._sketch.count())

    def ratio(self) -> float:
        """distinct / total n-grams (0.0 before any)."""
        return self.distinct / self.total if self.total else 0.0
