"""MTLD against published values, distinct-n, near-duplicates and drift concentration."""

from __future__ import annotations

import random
import re
import string

import factories
import numpy as np
import pytest
from datasketch import HyperLogLogPlusPlus
from hypothesis import given
from hypothesis import strategies as st

from soc_async.neardup import NearDuplicates
from soc_async.records import Persona
from soc_async.report.drift import DriftFigure, coping_words, section, trait_words
from soc_async.report.duplicates import kind_result
from soc_async.report.lexical import DistinctCounter, _mix, mtld, mtld_one_way, tokens

# The sample text of the lexicalrichness documentation (LSYS/LexicalRichness README,
# "Example usage"), whose MTLD at threshold 0.72 it publishes as 46.79226361031519 over
# 57 words and 39 terms.
LEXICALRICHNESS_TEXT = (
    "Measure of textual lexical diversity, computed as the mean length of sequential words in\n"
    "a text that maintains a minimum threshold TTR score.\n"
    "Iterates over words until TTR scores falls below a threshold, then increase factor\n"
    "counter by 1 and start over. McCarthy and Jarvis (2010, pg. 385) recommends a factor\n"
    "threshold in the range of [0.660, 0.750].\n"
    "(McCarthy 2005, McCarthy and Jarvis 2010)"
)


def lexicalrichness_words(text: str) -> list[str]:
    """That package's own tokenisation (lower case, digits and hyphens dropped,
    punctuation to spaces), so its published values apply to the same word lists."""
    text = re.sub(r"[0-9]+", "", text.lower())
    for dash in ("–", "—", "-"):
        text = text.replace(dash, "")
    for p in string.punctuation:
        text = text.replace(p, " ")
    return text.split()


def test_mtld_matches_the_published_value_of_the_lexicalrichness_docs() -> None:
    """57 words, 39 types, MTLD 46.79226361031519 (LexicalRichness README)."""
    words = lexicalrichness_words(LEXICALRICHNESS_TEXT)
    assert (len(words), len(set(words))) == (57, 39)
    assert mtld(words) == pytest.approx(46.79226361031519, abs=1e-9)


def test_mtld_matches_the_lexicalrichness_test_suite_value() -> None:
    """Its test sentence (10 words, 8 types) has MTLD 14.000000000000004."""
    words = lexicalrichness_words(
        "TEST text with some text numbers 42, hyphen-here, and text punctuations."
    )
    assert mtld(words) == pytest.approx(14.0, abs=1e-9)


def test_mtld_by_hand() -> None:
    """ "a b a b": the third word takes the TTR to 2/3 <= 0.72, one factor; the leftover
    "b" is at TTR 1 (no partial factor): 4 words / 1 factor both ways = 4."""
    assert mtld_one_way(["a", "b", "a", "b"]) == 4.0
    assert mtld(["a", "b", "a", "b"]) == 4.0


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=60, unique=True))
def test_mtld_of_all_distinct_words_is_their_count(values: list[int]) -> None:
    """No factor completes when no word repeats: MTLD is the text's length."""
    words = [f"w{''.join(chr(97 + int(d)) for d in str(v))}" for v in values]
    assert mtld(words) == len(words)


def test_mtld_falls_with_repetition() -> None:
    """The same 200 words drawn from 20 types score far lower than from 2,000 types."""
    rng = random.Random(1)
    small = [f"w{rng.randrange(20)}" for _ in range(200)]
    large = [f"w{rng.randrange(2000)}" for _ in range(200)]
    assert mtld(small) < 20 < 100 < mtld(large)


def test_tokens_are_lowercase_words_without_digits_or_punctuation() -> None:
    """Apostrophes inside words stay; numbers and punctuation are not words."""
    assert tokens("I'm at 10:30, OK? Café!") == ["i'm", "at", "ok", "café"]


def test_distinct_n_counts_ngrams_within_texts() -> None:
    """distinct-2 of "a b a" and "b a": bigrams ab, ba | ba -> 2 distinct of 3."""
    d1, d2 = DistinctCounter(1), DistinctCounter(2)
    for text in (["a", "b", "a"], ["b", "a"]):
        d1.add(text)
        d2.add(text)
    assert (d1.distinct, d1.total) == (2, 5)
    assert (d2.distinct, d2.total, d2.ratio()) == (2, 3, pytest.approx(2 / 3))


def test_distinct_n_is_exact_below_its_limit() -> None:
    """Below the exact limit the count is that of a set of the n-grams."""
    rng = random.Random(5)
    texts = [[f"w{rng.randrange(300)}" for _ in range(rng.randrange(0, 12))] for _ in range(400)]
    for n in (1, 2, 3):
        counter = DistinctCounter(n)
        for words in texts:
            counter.add(words)
        grams = [tuple(w[i : i + n]) for w in texts for i in range(len(w) - n + 1)]
        assert (counter.distinct, counter.total) == (len(set(grams)), len(grams))
        assert not counter.estimated


def test_distinct_n_estimates_past_its_limit() -> None:
    """Past the limit the HyperLogLog++ estimate stays within 3% (precision 14: about
    1% standard error), batch after batch."""
    counter = DistinctCounter(2, exact_up_to=1000, batch=777)
    for i in range(30_000):
        counter.add([f"a{i}", f"b{i}", f"a{i % 50}"])  # 2 bigrams each, 60,000 distinct
    assert counter.estimated and counter.total == 60_000
    assert counter.distinct == pytest.approx(60_000, rel=0.03)


def test_distinct_n_registers_are_those_of_datasketchs_own_update() -> None:
    """The batched numpy update leaves the same HyperLogLog++ registers as datasketch's
    update fed the same (mixed) 64-bit hashes one by one."""
    rng = random.Random(2)
    words = [f"w{rng.randrange(10**9)}" for _ in range(20_000)]
    counter = DistinctCounter(1, exact_up_to=10, batch=999)
    for i in range(0, len(words), 7):
        counter.add(words[i : i + 7])

    def mixed(word: str) -> int:
        return int(_mix(np.array([hash(word)], dtype=np.int64).view(np.uint64))[0])

    reference = HyperLogLogPlusPlus(p=14, hashfunc=mixed)
    for word in words:
        reference.update(word)
    assert counter.distinct == round(reference.count())
    assert np.array_equal(counter._sketch.reg, reference.reg)


def test_near_duplicates_found_against_the_earlier_item() -> None:
    """An exact copy and a one-word extension are near-duplicates of the first; a text
    sharing 70% of its words (Jaccard of shingles ~0.69) and an unrelated one are not."""
    rng = random.Random(3)
    vocab = ["".join(rng.choice(string.ascii_lowercase) for _ in range(7)) for _ in range(500)]
    base = " ".join(rng.choice(vocab) for _ in range(100))
    nd = NearDuplicates(tokenizer=tokens)
    nd.add("first", base)
    nd.add("other", " ".join(rng.choice(vocab) for _ in range(100)))
    nd.add("copy", base)
    nd.add("longer", base + " extra")
    nd.add("partial", " ".join(base.split()[:70]))
    nd.add("empty", "12 34 !!")  # no words: left out
    assert nd.duplicates() == [(2, 0), (3, 0)]
    result = kind_result(nd)
    assert (result.items, result.near_duplicates) == (5, 2)
    assert result.examples == [["copy", "first"], ["longer", "first"]]


def card(traits: str, emotional: str) -> str:
    return (
        "<character>\n**Basic Information**\n**Name:** X\n\n**Core Traits**\n"
        f"{traits}\n\n**Emotional Profile**\n{emotional}\n\n**Relationships**\nnone\n</character>"
    )


def persona(i: int, text: str) -> Persona:
    return factories.persona(i, name="X", text=text, age=25)


def test_sections_and_coping_sentences() -> None:
    """A section ends at the next header; coping words come only from sentences about
    stress or coping; stop words and short words are left out."""
    text = card("- brave and kind", "She sings. When stressed she walks the dog.")
    assert section(text, "Core Traits").strip() == "- brave and kind"
    assert trait_words(text) == ["brave", "kind"]
    assert coping_words(text) == ["stressed", "walks", "dog"]


def test_drift_concentration_rises_when_cards_converge() -> None:
    """16 early cards with 4 trait words each, all different (a window of 8 cards has 32
    types: its top 20 hold 20/32), then 16 late cards repeating the same 4 words (the top
    20 hold all). Two windows wanted: widths double until fewer than 4 buckets, so 8."""
    fig = DriftFigure(windows=2)
    words = iter(f"trait{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(64))
    for i in range(16):
        fig.persona(persona(i, card(" ".join(next(words) for _ in range(4)), "calm.")))
    for i in range(16, 32):
        fig.persona(persona(i, card("loyal brave stubborn cheerful", "calm.")))
    result = fig.result()
    assert result.window_size == 8
    assert [(w.start, w.end, w.personas) for w in result.windows] == [
        (0, 7, 8), (8, 15, 8), (16, 23, 8), (24, 31, 8)
    ]  # fmt: skip
    shares = [w.traits_top_share for w in result.windows]
    assert shares == [pytest.approx(20 / 32), pytest.approx(20 / 32), 1.0, 1.0]
    assert result.top_traits[:4] == ["brave", "cheerful", "loyal", "stubborn"]


def test_drift_windows_do_not_depend_on_arrival_order() -> None:
    """Personas in any order (a merged directory) land in the same windows."""
    cards = [persona(i, card(f"word{chr(97 + i % 7)} steady", "calm.")) for i in range(37)]
    a, b = DriftFigure(), DriftFigure()
    for p in cards:
        a.persona(p)
    for p in sorted(cards, key=lambda p: (p.meta.iteration % 3, -p.meta.iteration)):
        b.persona(p)
    assert a.result() == b.result()
