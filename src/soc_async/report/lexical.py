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
:class:`DistinctCounter` keeps the distinct n-grams exactly up to a cap and estimates
beyond it with datasketch's HyperLogLog++, so memory stays bounded on any dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

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


class DistinctCounter:
    """distinct-n over a stream of token lists, exact up to ``cap`` distinct n-grams.

    Past the cap, the n-grams seen so far move into a HyperLogLog++ sketch (datasketch,
    precision 14: about 1% standard error) and the count becomes an estimate
    (``estimated`` says so); memory then stays at the sketch's 16 KiB.
    """

    def __init__(self, n: int, *, cap: int = 1_000_000) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.n = n
        self.total = 0  # n-grams seen, repeats included
        self._cap = cap
        self._seen: set[str] | None = set()
        self._sketch: HyperLogLogPlusPlus | None = None

    @property
    def estimated(self) -> bool:
        return self._sketch is not None

    def add(self, words: Sequence[str]) -> None:
        """Counts the n-grams of one text (n-grams never span two texts)."""
        n = self.n
        if len(words) < n:
            return
        grams: Iterable[str] = (
            words if n == 1 else [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        )
        self.total += len(words) - n + 1
        if self._seen is not None:
            self._seen.update(grams)
            if len(self._seen) > self._cap:
                self._to_sketch()
            return
        sketch = self._sketch
        assert sketch is not None
        for gram in grams:
            sketch.update(gram.encode())

    def _to_sketch(self) -> None:
        sketch = HyperLogLogPlusPlus(p=14)
        assert self._seen is not None
        for gram in self._seen:
            sketch.update(gram.encode())
        self._sketch, self._seen = sketch, None

    @property
    def distinct(self) -> int:
        if self._seen is not None:
            return len(self._seen)
        assert self._sketch is not None
        return round(self._sketch.count())

    def ratio(self) -> float:
        """distinct / total n-grams (0.0 before any)."""
        return self.distinct / self.total if self.total else 0.0
