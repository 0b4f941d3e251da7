"""Dataset-wide near-duplicates: a paraphrase of an accepted card is refused, unrelated
cards pass, and a resumed run's rebuilt index refuses what the first run would have."""

from __future__ import annotations

import itertools
import re

from soc_async.neardup import (
    NUM_PERM,
    NearDuplicateIndex,
    NearDuplicates,
    is_near_duplicate,
    shingles,
    too_close,
)
from soc_async.seeds import cards, persona_cards

CARDS = persona_cards()
THRESHOLD = 0.5  # the config's default (persona.dedup_threshold)


def name(card: str) -> str:
    found = re.search(r"^\*\*Name:\*\* (.+)$", card, re.M)
    assert found
    return found.group(1)


def paraphrase_of_lukas() -> str:
    """Seed 04 as a model copying a reference might return it: another name and town,
    a few sentences reworded, a trait and an example message changed."""
    lukas = CARDS[3]
    assert "Lukas Brandt" in lukas
    edits = {
        "Lukas Brandt": "Jonas Keller",
        "Lukas": "Jonas",
        "Chemnitz, Saxony, Germany": "Zwickau, Saxony, Germany",
        "Chemnitz": "Zwickau",
        "Jana": "Mira",
        "is broad and fair, with a short beard": "is tall and fair, with a trimmed beard",
        "so his sleep is a constant negotiation": "which means his sleep is always a compromise",
        "eats too much Bratwurst from the van outside the depot": (
            "eats too many sausages from the van by the depot gate"
        ),
        "He is steady, dependable and not very interested in talking about himself.": (
            "He is steady and dependable and has little interest in talking about himself."
        ),
        "- Patient with machines, less so with paperwork": "- Patient with engines, not paperwork",
        '- "training fällt aus, platz ist gesperrt"': '- "kein training heute, platz zu"',
        "He makes lists on the back of delivery notes.": (
            "He writes his lists on the backs of delivery notes."
        ),
    }
    text = lukas
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_a_paraphrase_of_an_accepted_card_is_refused() -> None:
    """The reworded copy of a card already in the index is found, by its id."""
    index = NearDuplicateIndex(THRESHOLD)
    for i, card in enumerate(CARDS):
        assert index.check_and_add(f"p-{i}", card, [name(card)]) is None
    copy = paraphrase_of_lukas()
    assert index.check_and_add("p-copy", copy, ["Jonas Keller"]) == "p-3"
    assert len(index) == len(CARDS)


def test_unrelated_cards_pass() -> None:
    """No two hand-written cards (or experiences) are near-duplicates of each other: their
    signatures' similarity is far under the threshold."""
    for texts in (CARDS, cards("experiences", ".txt")):
        index = NearDuplicateIndex(THRESHOLD)
        for i, text in enumerate(texts):
            assert index.check_and_add(str(i), text) is None, i
        for a, b in itertools.combinations(texts, 2):
            sa, sb = index.signature(a), index.signature(b)
            assert (sa == sb).mean() < THRESHOLD / 4


def test_the_format_and_the_names_do_not_count() -> None:
    """Headers, field labels and the names are left out of the comparison: two cards that
    share only the format have almost no shingle in common."""
    a = "<character>\n**Basic Information**\n**Name:** Ana Lima\n**Values**\nFamily first.\n"
    b = "<character>\n**Basic Information**\n**Name:** Bo Chen\n**Values**\nFamily first.\n"
    assert shingles(a, ["Ana Lima"]) == shingles(b, ["Bo Chen"])
    assert not any(
        b"basic" in s or b"values" in s or b"ana" in s for s in shingles(a, ["Ana Lima"])
    )


def test_rebuilt_index_refuses_what_the_first_run_would() -> None:
    """Resume rebuilds the index from the accepted records: the paraphrase is still caught."""
    rebuilt = NearDuplicateIndex.rebuilt(
        THRESHOLD, [(f"p-{i}", c, [name(c)]) for i, c in enumerate(CARDS)]
    )
    found = rebuilt.find(rebuilt.signature(paraphrase_of_lukas(), ["Jonas Keller"]))
    assert found is not None and found[0] == "p-3" and found[1] >= THRESHOLD


def test_too_close_is_at_or_above_the_threshold() -> None:
    """One rule for every similarity check: equal to the threshold is a copy, so 1.0
    still catches an exact copy, by MinHash and against the few-shot references."""
    assert too_close(0.5, 0.5) and too_close(1.0, 1.0) and not too_close(0.49, 0.5)
    assert is_near_duplicate(CARDS[0], [CARDS[0]], 1.0)
    assert not is_near_duplicate(CARDS[0], [CARDS[1]], 0.9)
    index = NearDuplicateIndex(1.0)
    index.add("p-0", index.signature(CARDS[0]))
    assert index.find(index.signature(CARDS[0])) == ("p-0", 1.0)


def test_the_batch_and_the_index_agree() -> None:
    """The run's index and the batch engine (report, merge) built alike find the same
    copy: one engine, two ways to feed it."""
    texts = [*CARDS, paraphrase_of_lukas()]
    names = [*(name(c) for c in CARDS), "Jonas Keller"]
    batch = NearDuplicates(threshold=THRESHOLD, num_perm=NUM_PERM, bands=None)
    index = NearDuplicateIndex(THRESHOLD)
    for i, (text, who) in enumerate(zip(texts, names, strict=True)):
        batch.add(f"p-{i}", text, [who])
    assert batch.bands == index.bands and batch.rows == index.rows
    [(later, earlier, similarity)] = batch.pairs()
    assert (batch.ids[later], batch.ids[earlier]) == (f"p-{len(CARDS)}", "p-3")
    found = NearDuplicateIndex.rebuilt(
        THRESHOLD, [(f"p-{i}", c, [name(c)]) for i, c in enumerate(CARDS)]
    ).find(index.signature(texts[-1], ["Jonas Keller"]))
    assert found == ("p-3", similarity)


def test_a_text_without_words_is_left_out() -> None:
    index = NearDuplicateIndex(THRESHOLD)
    assert index.signature("<character>...</character>") is None
    assert index.check_and_add("p-0", "<character>...</character>") is None and len(index) == 0
    batch = NearDuplicates()
    batch.add("x", "!!")
    assert batch.ids == []
