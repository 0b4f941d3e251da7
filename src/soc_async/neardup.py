"""Near-duplicate texts by MinHash: the one engine the run, the report and ``merge`` use.

A text becomes a set of word shingles (``shingle_words``-grams of what a tokenizer
reads from it, the item's own persona names masked), the shingles a MinHash signature,
and the signatures are banded: two items that agree on every row of some band share a
bucket and are candidates; a candidate is a near-duplicate when the signatures agree on
at least ``threshold`` of their values (:func:`too_close`), the MinHash estimate of the
Jaccard similarity of the two shingle sets.

Signatures come from datasketch's MinHash with CRC-32 as the base hash of a shingle (the
permutations MinHash applies on top give the min-wise spread; CRC-32 is deterministic
across processes and, a C builtin, about ten times cheaper per shingle than datasketch's
default SHA-1), one MinHash reused per engine so its permutations are drawn once. A band's
bucket key is one vectorised multiply-and-sum of its rows. Measured on 100,000 items this
took about a second and 320 bytes an item where datasketch's ``MinHashLSH`` index took
27 s and 177 MB (benchmarks/dedup_index.py, docs/performance.md).

Two ways to use it:

- :class:`NearDuplicates`: add every text, then find all near-duplicate pairs at once
  (one sort per band over the whole signature matrix): the report and ``merge``;
- :class:`NearDuplicateIndex`: one text at a time against everything accepted so far
  (a dict of bucket keys per band), as the persona and experience stages need. One
  event loop, no awaits inside a lookup or an insert: a stage looks up a reply and
  inserts it once accepted with no await between, so two replies cannot both pass as
  each other's near-duplicate.

Tokenizers: :func:`content_words` (the run's: the formats' fixed words left out, accents
dropped, lower-cased ``\\w+`` words, so two cards about different people who live the same
life collide while two experiences of the same pair about different things do not), or
any ``str -> list[str]`` (the report passes its lexical ``tokens``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH
from rapidfuzz import fuzz

from soc_async.formats.names import name_tokens, strip_accents

__all__ = [
    "NUM_PERM",
    "SHINGLE",
    "NearDuplicateIndex",
    "NearDuplicates",
    "Tokenizer",
    "content_words",
    "is_near_duplicate",
    "shingles",
    "too_close",
]

Tokenizer = Callable[[str], list[str]]

NUM_PERM = 128  # the run's signatures: 128 values, about 0.04 standard error at 0.5
SHINGLE = 3
_MASK = "@"  # what a masked persona name becomes

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


def too_close(similarity: float, threshold: float) -> bool:
    """Whether two texts ``similarity`` apart (0..1) count as copies at ``threshold``.

    At or above: equal to the threshold is a copy, so a threshold of 1.0 still catches
    exact copies (with "above" it would catch nothing). Every similarity check of the
    project (MinHash here, rapidfuzz against the few-shot references) goes through this.
    """
    return similarity >= threshold


def is_near_duplicate(text: str, references: Iterable[str], threshold: float) -> bool:
    """True when ``text`` is :func:`too_close` to any reference: the check of a reply
    against its few-shot references (cards and experiences alike).

    Similarity is rapidfuzz's normalised Indel ratio over the whole texts, exact and cheap
    for a handful of references: independent cards share their headers but little else,
    and land far below the usual 0.9.
    """
    cutoff = threshold * 100
    return any(
        too_close(fuzz.ratio(text, ref, score_cutoff=cutoff) / 100, threshold) for ref in references
    )


def content_words(text: str) -> list[str]:
    """The run's tokenizer: ``text``'s content words, the formats' fixed words left out,
    accents dropped, case folded."""
    return _WORD.findall(_SCAFFOLD.sub(" ", strip_accents(text)).casefold())


def shingles(
    text: str,
    names: Sequence[str] = (),
    size: int = SHINGLE,
    tokenizer: Tokenizer = content_words,
) -> set[bytes]:
    """The word ``size``-grams of ``text`` as ``tokenizer`` reads it, the words of
    ``names`` masked (one shingle of all its words when it has fewer)."""
    masked = {t.casefold() for n in names for t in name_tokens(n)}
    words = [w if w not in masked else _MASK for w in tokenizer(text)]
    if len(words) < size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def _bands_for(threshold: float, num_perm: int) -> int:
    """The number of bands datasketch's ``MinHashLSH`` chooses for ``threshold``: the
    false positive and negative areas weighed equally."""
    try:
        return MinHashLSH(threshold=threshold, num_perm=num_perm).b
    except ValueError:
        # Its optimum is one band (a threshold near 1: only whole-signature matches),
        # which MinHashLSH refuses to build; banding itself is fine with it.
        return 1


class _Engine:
    """What both ways share: the tokenizer, the signatures and the band keys."""

    def __init__(
        self,
        threshold: float,
        *,
        num_perm: int,
        bands: int | None,
        shingle_words: int,
        tokenizer: Tokenizer,
        seed: int,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        bands = bands if bands is not None else _bands_for(threshold, num_perm)
        if not 1 <= bands <= num_perm:
            raise ValueError(f"cannot split {num_perm} values into {bands} bands")
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = num_perm // bands  # values left over after the last band are unused
        self.shingle_words = shingle_words
        self.tokenizer = tokenizer
        self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32)
        rng = np.random.default_rng(0x50C)
        self._multipliers = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) | np.uint64(1)

    def signature(self, text: str, names: Sequence[str] = ()) -> np.ndarray | None:
        """The MinHash values of ``text`` (uint32), or None for a text without words."""
        grams = shingles(text, names, self.shingle_words, self.tokenizer)
        if not grams:
            return None
        m = self._minhash
        m.clear()
        m.update_batch(list(grams))
        return m.hashvalues.astype(np.uint32)

    def _band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """One 64-bit bucket key per (item, band): shape (items, bands)."""
        r = self.rows
        block = sigs[:, : self.bands * r].astype(np.uint64).reshape(len(sigs), self.bands, r)
        with np.errstate(over="ignore"):
            return (block * self._multipliers).sum(axis=2, dtype=np.uint64)


class NearDuplicates(_Engine):
    """Add texts one by one, then :meth:`duplicates` finds the near-duplicates among them."""

    def __init__(
        self,
        *,
        threshold: float = 0.8,
        num_perm: int = 64,
        bands: int | None = 16,
        shingle_words: int = SHINGLE,
        tokenizer: Tokenizer = content_words,
        seed: int = 1,
    ) -> None:
        super().__init__(
            threshold,
            num_perm=num_perm,
            bands=bands,
            shingle_words=shingle_words,
            tokenizer=tokenizer,
            seed=seed,
        )
        self.ids: list[str] = []
        self._sigs = np.zeros((1024, num_perm), dtype=np.uint32)

    def add(self, item_id: str, text: str, names: Sequence[str] = ()) -> None:
        """One item; a text without words is left out."""
        values = self.signature(text, names)
        if values is None:
            return
        n = len(self.ids)
        if n == len(self._sigs):
            grown = np.zeros((2 * n, self.num_perm), dtype=np.uint32)
            grown[:n] = self._sigs
            self._sigs = grown
        self._sigs[n] = values
        self.ids.append(item_id)

    def pairs(self) -> list[tuple[int, int, float]]:
        """(item, earlier item, estimated similarity) for each near-duplicate item, by
        position, sorted; the earlier item is the earliest of a bucket it shares."""
        n = len(self.ids)
        if n < 2:
            return []
        sigs = self._sigs[:n]
        keys = self._band_keys(sigs)
        earlier = np.full(n, -1, dtype=np.int64)  # the earlier item each one duplicates
        similarity = np.zeros(n)
        index = np.arange(n)
        for b in range(self.bands):
            order = np.argsort(keys[:, b], kind="stable")  # equal keys keep item order
            sorted_keys = keys[order, b]
            starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
            # The earliest item of each bucket, spread over the bucket's members.
            first = order[np.maximum.accumulate(np.where(starts, index, 0))]
            items, reps = order[~starts], first[~starts]
            open_ = earlier[items] < 0
            items, reps = items[open_], reps[open_]
            agree = (sigs[items] == sigs[reps]).mean(axis=1)
            close = too_close(agree, self.threshold)
            earlier[items[close]] = reps[close]
            similarity[items[close]] = agree[close]
        dups = np.flatnonzero(earlier >= 0)
        return [(int(i), int(earlier[i]), float(similarity[i])) for i in dups]

    def duplicates(self) -> list[tuple[int, int]]:
        """(item, earlier item) for each near-duplicate item, by position, sorted."""
        return [(i, j) for i, j, _ in self.pairs()]


class NearDuplicateIndex(_Engine):
    """Signatures of the accepted items, and bucket tables over them, for lookups one at
    a time."""

    def __init__(
        self,
        threshold: float,
        *,
        num_perm: int = NUM_PERM,
        shingle_words: int = SHINGLE,
        tokenizer: Tokenizer = content_words,
    ) -> None:
        super().__init__(
            threshold,
            num_perm=num_perm,
            bands=None,
            shingle_words=shingle_words,
            tokenizer=tokenizer,
            seed=1,
        )
        self._tables: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._keys: list[str] = []
        self._known: set[str] = set()
        self._signatures = np.empty((1024, num_perm), dtype=np.uint32)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return (
            f"<NearDuplicateIndex {len(self)} items, threshold {self.threshold}, "
            f"{self.bands} bands of {self.rows}>"
        )

    def find(self, values: np.ndarray | None) -> tuple[str, float] | None:
        """The accepted item most similar to the signature ``values`` at or above the
        threshold, with its estimated Jaccard similarity; None when there is none."""
        if values is None:
            return None
        candidates: set[int] = set()
        for table, band in zip(self._tables, self._band_keys(values[None, :])[0], strict=True):
            hit = table.get(int(band))
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
        if not too_close(float(similarity[best]), self.threshold):
            return None
        return self._keys[int(rows[best])], float(similarity[best])

    def add(self, key: str, values: np.ndarray | None) -> None:
        """Index an accepted item; a key already indexed, or a text without words, is
        left as it is."""
        if key in self._known or values is None:
            return
        number = len(self._keys)
        if number == len(self._signatures):
            grown = np.empty((2 * number, self.num_perm), dtype=np.uint32)
            grown[:number] = self._signatures
            self._signatures = grown
        self._signatures[number] = values
        self._keys.append(key)
        self._known.add(key)
        for table, band in zip(self._tables, self._band_keys(values[None, :])[0], strict=True):
            hit = table.get(int(band))
            if hit is None:
                table[int(band)] = number
            elif isinstance(hit, int):
                table[int(band)] = [hit, number]
            else:
                hit.append(number)

    def check_and_add(self, key: str, text: str, names: Sequence[str] = ()) -> str | None:
        """Adds ``text`` unless it is a near-duplicate; returns the id it duplicates."""
        values = self.signature(text, names)
        found = self.find(values)
        if found is not None:
            return found[0]
        self.add(key, values)
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
