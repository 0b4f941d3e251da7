"""Dataset-wide near-duplicates: every card or experience against all accepted so far.

A stage checks each valid reply against its two few-shot references (rapidfuzz, exact
and cheap); that cannot see a copy of an item accepted a thousand items ago. A
:class:`NearDuplicateIndex` holds every item accepted in the run as a MinHash signature
in datasketch's LSH index: a lookup costs a hash of the text and a few bucket probes,
whatever the size of the run (benchmarks/dedup_index.py measures it at 100,000 items).

Texts are compared on their content: lower-cased word 3-grams, accents dropped, the
format's fixed words (section headers, field labels, list headers) left out, and the
persona names of the item masked, so that two cards about different people who live the
same life collide while two experiences of the same pair about different things do not.
LSH candidates are confirmed by the signatures' estimated Jaccard similarity.

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


def signature(text: str, names: Sequence[str] = (), *, num_perm: int = NUM_PERM) -> MinHash:
    """The MinHash of ``text``'s shingles (see :func:`shingles`)."""
    minhash = MinHash(num_perm=num_perm)
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
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        # Signature values are below 2**32 (datasketch's hash range): 4 bytes each.
        self._signatures: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def __repr__(self) -> str:
        return f"<NearDuplicateIndex {len(self)} items, threshold {self.threshold}>"

    def signature(self, text: str, names: Sequence[str] = ()) -> MinHash:
        return signature(text, names, num_perm=self.num_perm)

    def find(self, minhash: MinHash) -> tuple[str, float] | None:
        """The accepted item most similar to ``minhash`` at or above the threshold, with
        its estimated Jaccard similarity; None when there is none."""
        best: tuple[str, float] | None = None
        values = minhash.hashvalues.astype(np.uint32)
        for key in self._lsh.query(minhash):
            similarity = float(np.mean(self._signatures[key] == values))
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best

    def add(self, key: str, minhash: MinHash) -> None:
        """Index an accepted item; a key already indexed is left as it is."""
        if key in self._signatures:
            return
        self._lsh.insert(key, minhash)
        self._signatures[key] = minhash.hashvalues.astype(np.uint32)

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
