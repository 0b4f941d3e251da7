"""The sampling plan: which conversations (or A/B pairs) people rate, and in what order.

Pure functions over :class:`ItemFacts`; the plan is written once into the run directory
(annotate-plan.json, annotate-ab-plan.json), so every rater, and a server restarted,
rates the same sample.

- **Stratified**: conversations are grouped by (model, style, cadence) and each stratum
  gets its share of the sample by largest remainder, so a small stratum is not left out
  by chance. Within a stratum the picks are the smallest seeded hashes: the same seed
  picks the same conversations whatever the file order.
- **Overlap**: the first ``overlap`` fraction of the sample (by hash) is *shared*, shown
  to every rater, so inter-rater agreement can be measured on it; every other item is
  rated by the first rater who reaches it.
- **Order**: each rater has their own order (hash of rater and item), so raters do not
  all start on the same conversations and order effects average out.
- **A/B pairs**: a sampled conversation of run A is paired with the conversation of run B
  that matches it best: same style, cadence and turn-count band, else style and cadence,
  else style, else any; the match level is recorded. Sides are balanced exactly (half the
  pairs show A on the left) and shuffled by the seed, and each pair's side is recorded.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

__all__ = [
    "AB_PLAN_FILE",
    "PLAN_FILE",
    "ItemFacts",
    "Plan",
    "PlanItem",
    "allocate",
    "make_ab_plan",
    "make_rate_plan",
    "queue",
    "rater_order",
    "stratified_sample",
    "turn_band",
]

PLAN_FILE = "annotate-plan.json"
AB_PLAN_FILE = "annotate-ab-plan.json"
BANDS = ((1, 8), (9, 16), (17, 24), (25, 10**9))
Side = Literal["A", "B"]


class ItemFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the plan knows of a conversation."""

    chat_id: str
    model: str
    style: str
    cadence: str
    turns: int

    @property
    def stratum(self) -> str:
        return f"{self.model}|{self.style}|{self.cadence}"


class PlanItem(msgspec.Struct, kw_only=True):
    id: str  # the chat id; a pair's own id ("pair-0007") in A/B mode
    shared: bool  # shown to every rater (the overlap)
    stratum: str
    a: str = ""  # A/B: run A's chat id
    b: str = ""  # A/B: run B's chat id
    left: Side | None = None  # A/B: which run's conversation is drawn on the left
    match: str = ""  # A/B: what the pair shares: "style+cadence+turns", ... "none"


class Plan(msgspec.Struct, kw_only=True):
    mode: Literal["rate", "ab"]
    seed: int
    sample: int  # asked for
    overlap: float
    created: str
    items: list[PlanItem]
    strata: dict[str, int] = {}  # stratum -> items taken from it
    compare: str = ""  # A/B: run B's directory, as given
    compare_key: str = ""  # A/B: run B's run key (run.json)

    def item(self, item_id: str) -> PlanItem | None:
        return next((i for i in self.items if i.id == item_id), None)


def _rank(seed: int, *parts: str) -> bytes:
    return hashlib.blake2b(":".join((str(seed), *parts)).encode(), digest_size=8).digest()


def turn_band(turns: int) -> str:
    """The turn-count band pairs are matched on: 1-8, 9-16, 17-24, 25+."""
    for low, high in BANDS:
        if low <= turns <= high:
            return f"{low}-{high}" if high < 10**9 else f"{low}+"
    return "0"


def allocate(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """``n`` split over strata in proportion to their sizes (largest remainder; ties by
    name), never more than a stratum holds."""
    total = sum(sizes.values())
    n = min(n, total)
    if n <= 0 or total == 0:
        return dict.fromkeys(sizes, 0)
    exact = {k: n * v / total for k, v in sizes.items()}
    share = {k: math.floor(x) for k, x in exact.items()}
    left = n - sum(share.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - share[k]), k)):
        if left == 0:
            break
        if share[k] < sizes[k]:
            share[k] += 1
            left -= 1
    return share


def stratified_sample(facts: Iterable[ItemFacts], n: int, seed: int) -> list[ItemFacts]:
    """``n`` conversations, stratified by (model, style, cadence); in seeded hash order."""
    strata: dict[str, list[ItemFacts]] = defaultdict(list)
    for f in facts:
        strata[f.stratum].append(f)
    share = allocate({k: len(v) for k, v in strata.items()}, n)
    picked: list[ItemFacts] = []
    for k, members in strata.items():
        members.sort(key=lambda f: _rank(seed, f.chat_id))
        picked += members[: share[k]]
    picked.sort(key=lambda f: _rank(seed, f.chat_id))
    return picked


def _shared_count(n: int, overlap: float) -> int:
    return min(n, math.ceil(n * overlap)) if overlap > 0 else 0


def make_rate_plan(
    facts: Iterable[ItemFacts], *, n: int, overlap: float, seed: int, created: str
) -> Plan:
    """The plan of a rating session: the stratified sample, its shared part first."""
    sample = stratified_sample(facts, n, seed)
    shared = _shared_count(len(sample), overlap)
    items = [
        PlanItem(id=f.chat_id, shared=k < shared, stratum=f.stratum) for k, f in enumerate(sample)
    ]
    strata: dict[str, int] = defaultdict(int)
    for f in sample:
        strata[f.stratum] += 1
    return Plan(
        mode="rate",
        seed=seed,
        sample=n,
        overlap=overlap,
        created=created,
        items=items,
        strata=dict(sorted(strata.items())),
    )


_LEVELS = (
    ("style+cadence+turns", lambda f: (f.style, f.cadence, turn_band(f.turns))),
    ("style+cadence", lambda f: (f.style, f.cadence)),
    ("style", lambda f: (f.style,)),
    ("none", lambda f: ()),
)


def make_ab_plan(
    facts_a: Iterable[ItemFacts],
    facts_b: Iterable[ItemFacts],
    *,
    n: int,
    overlap: float,
    seed: int,
    created: str,
    compare: str,
    compare_key: str,
) -> Plan:
    """The plan of a blind comparison: up to ``n`` pairs, each of a conversation of A
    and the best-matching unused one of B (see the module docstring)."""
    sample = stratified_sample(facts_a, n, seed)
    pool = sorted(facts_b, key=lambda f: _rank(seed, "b", f.chat_id))
    used: set[str] = set()
    # One index per match level: key -> B conversations in rank order.
    index: list[dict[tuple[str, ...], list[ItemFacts]]] = []
    for _, key in _LEVELS:
        table: dict[tuple[str, ...], list[ItemFacts]] = defaultdict(list)
        for f in pool:
            table[key(f)].append(f)
        index.append(table)
    pairs: list[tuple[ItemFacts, ItemFacts, str]] = []
    for fa in sample:
        for (level, key), table in zip(_LEVELS, index, strict=True):
            candidates = table.get(key(fa), [])
            fb = next((f for f in candidates if f.chat_id not in used), None)
            if fb is not None:
                used.add(fb.chat_id)
                pairs.append((fa, fb, level))
                break
    sides: list[Side] = ["A" if k % 2 == 0 else "B" for k in range(len(pairs))]
    random.Random(seed).shuffle(sides)
    shared = _shared_count(len(pairs), overlap)
    items = [
        PlanItem(
            id=f"pair-{k:04d}",
            shared=k < shared,
            stratum=fa.stratum,
            a=fa.chat_id,
            b=fb.chat_id,
            left=sides[k],
            match=level,
        )
        for k, (fa, fb, level) in enumerate(pairs)
    ]
    strata: dict[str, int] = defaultdict(int)
    for fa, _, _ in pairs:
        strata[fa.stratum] += 1
    return Plan(
        mode="ab",
        seed=seed,
        sample=n,
        overlap=overlap,
        created=created,
        items=items,
        strata=dict(sorted(strata.items())),
        compare=compare,
        compare_key=compare_key,
    )


def rater_order(plan: Plan, rater: str) -> list[str]:
    """The plan's item ids in ``rater``'s own order (seeded by the plan and the name)."""
    return [i.id for i in sorted(plan.items, key=lambda i: _rank(plan.seed, "rater", rater, i.id))]


def queue(
    plan: Plan,
    rater: str,
    done: Mapping[str, Sequence[str]],
    claimed: Mapping[str, str] | None = None,
) -> list[str]:
    """What ``rater`` rates, in their order: every shared item, and each other item
    unless another rater has rated it (``done``: item -> raters) or holds it open now
    (``claimed``: item -> rater)."""
    claimed = claimed or {}
    shared = {i.id for i in plan.items if i.shared}
    out = []
    for item in rater_order(plan, rater):
        if item in shared:
            out.append(item)
            continue
        raters = done.get(item, ())
        holder = claimed.get(item)
        mine = rater in raters
        if mine or (not raters and holder in (None, rater)):
            out.append(item)
    return out
