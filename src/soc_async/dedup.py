"""Dataset-wide near-duplicates: every card or experience against all accepted so far.

A stage checks each valid reply against its two few-shot references (rapidfuzz, exact
and cheap); that cannot see a copy of an item accepted a thousand items ago. A
:class:`NearDuplicateIndex` holds every item accepted in the run as a MinHash signature
(datasketch) in a locality-sensitive hash index: a lookup costs a hash of the text and
a few bucket probes, whatever the size of the run (benchmarks/dedup_index.py measures it
at 100,000 items; docs/performance.md has the figures).

Texts are compared on their content: lower-cased word 3-grams, accents dropped, the
format's fixed words (section headers, field labels, list headers) left out, and the
persona names of the item masked, so that two cards about different people who live the
same life collide while two experiences of the same pair about different things do not.
LSH candidates are confirmed by the signatures' estimated Jaccard similarity.

The band parameters (how many bands of how many rows) are datasketch's ``MinHashLSH``
choice for the threshold; the band tables are plain dicts of 64-bit band hashes to item
numbers and the signatures one uint32 matrix, because ``MinHashLSH``'s own storage took
7.8 KB an item (780 MB at 100,000) where these take about 2 KB.

One event loop, no awaits inside a lookup or an insert: a stage looks up a reply and
inserts it once accepted with no await between, so two replies cannot both pass as
each other's near-duplicate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

from soc_async.formats.names import name_tokens, strip_accents

# The fixed words of the two formats: headers, field labels, list headers, style words.
_SCAFFOLD = re.compile(
    r"\*\*[^*\n]*\*\*"  # **Header**, **Name:**
    r"|</?(?:character|experience)>"
    r"|^(?:conversation style|message cadence|opens|initial state)\s*:"
    r"|^the conversation will likely cover the following topics:"
    r"|^possible instant events:"
    r"|← primary|\(\d+ turns?\)",
    re.IGNORECASE | re.MULTILINE,
)
_WORD = re.compile(r"\w+")
NUM_PERM = 128
SHINGLE = 3


def shingles(text: str, names: Sequence[str] = (), size: int = SHINGLE) -> set[bytes]:
    """The word ``size``-grams of ``text``'s content, names in ``names`` masked."""
    plain = _SCAFFOLD.sub(" ", strip_accents(text))
    masked = {t.casefold() for n in names for t in name_tokens(n)}
    words = [w if w not in masked else "@" for w in _WORD.findall(plain.casefold())]
    if len(words) < size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


_BASE: dict[int, MinHash] = {}


def signature(text: str, names: Sequence[str] = (), *, num_perm: int = NUM_PERM) -> MinHash:
    """The MinHash of ``text``'s shingles (see :func:`shingles`)."""
    base = _BASE.get(num_perm)
    if base is None:
        base = _BASE[num_perm] = MinHash(num_perm=num_perm)
    # The permutations are shared: making them per signature costs a quarter millisecond.
    # datasketch 2 wants their scheme named; 1.x has no scheme.
    scheme = {"scheme": base.scheme} if hasattr(base, "scheme") else {}
    minhash = MinHash(num_perm=num_perm, permutations=base.permutations, **scheme)
    grams = shingles(text, names)
    if grams:
        minhash.update_batch(list(grams))
    return minhash


class NearDuplicateIndex:
    """Signatures of the accepted items, and an LSH index over them."""

    def __init__(self, threshold: float, *, num_perm: int = NUM_PERM) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        params = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._bands, self._rows = params.b, params.r
        self._tables: list[dict[int, int | list[int]]] = [{} for _ in range(self._bands)]
        self._keys: list[str] = []
        self._known: set[str] = set()
        self._signatures = np.empty((1024, num_perm), dtype=np.uint32)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return (
            f"<NearDuplicateIndex {len(self)} items, threshold {self.threshold}, "
            f"{self._bands} bands of {self._rows}>"
        )

    def signature(self, text: str, names: Sequence[str] = ()) -> MinHash:
        return signature(text, names, num_perm=self.num_perm)

    def _band_hashes(self, values: np.ndarray) -> list[int]:
        r = self._rows
        return [hash(values[j * r : (j + 1) * r].tobytes()) for j in range(self._bands)]

    def find(self, minhash: MinHash) -> tuple[str, float] | None:
        """The accepted item most similar to ``minhash`` at or above the threshold, with
        its estimated Jaccard similarity; None when there is none."""
        values = np.asarray(minhash.hashvalues, dtype=np.uint32)
        candidates: set[int] = set()
        for table, band in zip(self._tables, self._band_hashes(values), strict=True):
            hit = table.get(band)
            if hit is None:
                continue
            if isinstance(hit, int):
                candidates.add(hit)
            else:
                candidates.update(hit)
        if not candidates:
            return None
        rows = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        similarity = (self._signatures[rows] == values).mean(axis=1)
        best = int(np.argmax(similarity))
        if similarity[best] < self.threshold:
            return None
        return self._keys[int(rows[best])], float(similarity[best])

    def add(self, key: str, minhash: MinHash) -> None:
        """Index an accepted item; a key already indexed is left as it is."""
        if key in self._known:
            return
        number = len(self._keys)
        if number == len(self._signatures):
            grown = np.empty((2 * number, self.num_perm), dtype=np.uint32)
            grown[:number] = self._signatures
            self._signatures = grown
        values = np.asarray(minhash.hashvalues, dtype=np.uint32)
        self._signatures[number] = values
        self._keys.append(key)
        self._known.add(key)
        for table, band in zip(self._tables, self._band_hashes(values), strict=True):
            hit = table.get(band)
            if hit is None:
                table[band] = number
            elif isinstance(hit, int):
                table[band] = [hit, number]
            else:
                hit.append(number)

    def check_and_add(self, key: str, text: str, names: Sequence[str] = ()) -> str | None:
        """Adds ``text`` unless it is a near-duplicate; returns the id it duplicates."""
        minhash = self.signature(text, names)
        found = self.find(minhash)
        if found is not None:
            return found[0]
        self.add(key, minhash)
        return None

    @classmethod
    def rebuilt(
        cls, threshold: float, items: Iterable[tuple[str, str, Sequence[str]]]
    ) -> NearDuplicateIndex:
        """The index of a resumed run: every accepted ``(id, text, names)`` again."""
        index = cls(threshold)
        for key, text, names in items:
            index.add(key, index.signature(text, names))
        return index


__all__ = ["NUM_PERM", "NearDuplicateIndex", "shingles", "signature"]
