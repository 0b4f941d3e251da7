"""Held-out splits grouped by persona: no persona speaks on both sides of a split.

Personas are the nodes of a graph and conversations its edges. A split that keeps every
persona on one side can only take conversations whose two personas are both on that
side; a conversation between the sides is *dropped* (counted, never written). The plan,
for each held-out split in the order given, seeded:

1. whole connected components, in a seeded shuffle, go to the split while they fit in
   what it still needs (no conversation lost);
2. if that is not enough, the split grows a set of personas inside the largest
   remaining component, starting from a seeded persona and adding each time the persona
   with the most conversations into the set (ties by the seeded order), until the
   conversations inside the set reach the target; conversations from the set to the
   rest of the component are dropped. Growing along dense edges keeps that cut small.

Everything not held out is ``train``. Personas in no conversation are held out with
the split's fraction by a seeded draw. Pure: ids in, assignments out.
"""

from __future__ import annotations

import heapq
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import msgspec

from soc_async.errors import InputError

__all__ = ["TRAIN", "SplitPlan", "parse_splits", "plan_split"]

TRAIN = "train"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class SplitPlan(msgspec.Struct, kw_only=True):
    """Where each conversation and persona goes; a conversation absent from ``chats`` is
    dropped (its personas ended up on two sides)."""

    chats: dict[str, str]  # chat id -> split name
    personas: dict[str, str]  # persona id -> split name
    dropped: int


def parse_splits(specs: Sequence[str]) -> dict[str, float]:
    """``["validation=0.05", "test=0.05"]`` (or comma-joined) as {name: fraction}.

    InputError for a malformed spec, a repeated or reserved name, a fraction outside
    (0, 1) or fractions summing to 1 or more.
    """
    out: dict[str, float] = {}
    for spec in (s for arg in specs for s in arg.split(",") if s.strip()):
        name, sep, value = spec.strip().partition("=")
        if not sep or not _NAME.fullmatch(name):
            raise InputError(f"--split {spec!r}: expected NAME=FRACTION, e.g. validation=0.05")
        if name == TRAIN or name in out:
            raise InputError(f"--split {spec!r}: {name!r} is train or given twice")
        try:
            fraction = float(value)
        except ValueError:
            raise InputError(f"--split {spec!r}: {value!r} is not a number") from None
        if not 0 < fraction < 1:
            raise InputError(f"--split {spec!r}: the fraction must lie in (0, 1)")
        out[name] = fraction
    if sum(out.values()) >= 1:
        raise InputError("--split: the held-out fractions must sum to less than 1")
    return out


class _Components:
    """Connected components of the persona graph (union-find with path halving)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def plan_split(
    chats: Iterable[tuple[str, str, str]],
    personas: Iterable[str],
    fractions: dict[str, float],
    seed: int,
) -> SplitPlan:
    """Assign ``chats`` ((chat id, persona a, persona b)) and ``personas`` to ``train`` and
    the held-out splits of ``fractions`` ({name: share of the conversations})."""
    edges = list(chats)
    rng = random.Random(f"soc-async-split:{seed}")
    uf = _Components()
    for _, a, b in edges:
        uf.union(a, b)
    comp_edges: dict[str, list[int]] = defaultdict(list)
    for i, (_, a, _b) in enumerate(edges):
        comp_edges[uf.find(a)].append(i)
    comp_nodes: dict[str, list[str]] = defaultdict(list)
    for node in sorted(uf.parent):
        comp_nodes[uf.find(node)].append(node)
    node_split: dict[str, str] = {}
    pool = sorted(comp_edges)  # components still in train
    for name, fraction in fractions.items():
        need = round(fraction * len(edges))
        rng.shuffle(pool)
        kept = []
        for root in pool:
            if 0 < len(comp_edges[root]) <= need:
                need -= len(comp_edges[root])
                node_split.update(dict.fromkeys(comp_nodes[root], name))
            else:
                kept.append(root)
        pool = kept
        if need > 0 and pool:
            biggest = max(pool, key=lambda r: (len(comp_edges[r]), r))
            grown = _grow(biggest, comp_edges[biggest], edges, need, rng)
            node_split.update(dict.fromkeys(grown, name))
            pool.remove(biggest)  # what is left of it stays train: never grown twice
    plan_chats: dict[str, str] = {}
    dropped = 0
    for chat_id, a, b in edges:
        sa, sb = node_split.get(a, TRAIN), node_split.get(b, TRAIN)
        if sa == sb:
            plan_chats[chat_id] = sa
        else:
            dropped += 1
    plan_personas = {}
    for pid in sorted(set(personas) | set(uf.parent)):
        if pid in uf.parent:
            plan_personas[pid] = node_split.get(pid, TRAIN)
        else:
            plan_personas[pid] = _draw(rng.random(), fractions)
    return SplitPlan(chats=plan_chats, personas=plan_personas, dropped=dropped)


def _draw(u: float, fractions: dict[str, float]) -> str:
    for name, fraction in fractions.items():
        if u < fraction:
            return name
        u -= fraction
    return TRAIN


def _grow(
    root: str,
    edge_ids: list[int],
    edges: list[tuple[str, str, str]],
    need: int,
    rng: random.Random,
) -> set[str]:
    """Personas of one component, grown greedily until ``need`` conversations lie inside."""
    adjacency: dict[str, list[str]] = defaultdict(list)
    for i in edge_ids:
        _, a, b = edges[i]
        adjacency[a].append(b)
        adjacency[b].append(a)
    order = sorted(adjacency)
    rng.shuffle(order)
    rank = {node: k for k, node in enumerate(order)}
    inside: set[str] = set()
    gain: dict[str, int] = defaultdict(int)  # conversations from a node into the set
    heap: list[tuple[int, int, str]] = [(0, rank[order[0]], order[0])]
    internal = 0
    while heap and internal < need:
        neg, _, node = heapq.heappop(heap)
        if node in inside or -neg != gain[node]:
            continue  # taken already, or a stale entry
        inside.add(node)
        internal += gain[node]
        for other in adjacency[node]:
            if other not in inside:
                gain[other] += 1
                heapq.heappush(heap, (-gain[other], rank[other], other))
    return inside
