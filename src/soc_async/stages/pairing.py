"""Which two personas an experience is written for.

Half the pairs (``region_match``) come from one region, so that local detail (a city, a
holiday, a school system) can be shared; the rest are drawn at random for cross-cultural
variety. A pair is a pure function of (seed, index, personas): a resumed run or another
shard of the same run pairs item ``index`` the same way.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from soc_async.errors import InputError
from soc_async.records import Persona

# Two personas who share a name make "Opens: Maria" ambiguous and a chat between them
# confusing, so such a draw is redrawn a few times before it is accepted anyway.
_NAME_REDRAWS = 8


class Pair(msgspec.Struct, frozen=True, kw_only=True):
    """Two distinct persona ids, in the order the experience prompt presents them."""

    a: str
    b: str
    # True when the pair was drawn from one region (the region-matched half), not
    # whenever the two happen to share a region by chance in the random half.
    region_matched: bool


class PersonaPool:
    """Personas deduplicated by id and grouped by region, built once for many pairings."""

    def __init__(self, personas: Sequence[Persona]) -> None:
        unique: dict[str, Persona] = {}
        for persona in personas:
            unique.setdefault(persona.id, persona)
        self.personas: list[Persona] = list(unique.values())
        if len(self.personas) < 2:
            raise InputError(
                f"pairing needs at least 2 distinct personas, got {len(self.personas)}; "
                "generate more personas or check the --personas file"
            )
        groups: dict[str, list[Persona]] = {}
        for persona in self.personas:
            groups.setdefault(persona.meta.region, []).append(persona)
        # Regions sorted by name: the region draw then does not depend on which region's
        # persona happened to come first in the file.
        self.regions: list[tuple[str, list[Persona]]] = sorted(
            ((region, members) for region, members in groups.items() if len(members) >= 2),
            key=lambda item: item[0],
        )

    def __len__(self) -> int:
        return len(self.personas)


def pair_for(
    index: int,
    seed: int,
    personas: Sequence[Persona] | PersonaPool,
    region_match: float,
) -> Pair:
    """The pair of personas for experience ``index`` of a run seeded with ``seed``.

    With probability ``region_match`` (and when some region has two personas) both come
    from one region, chosen with weight proportional to its persona count; otherwise two
    distinct personas are drawn uniformly. Raises ``InputError`` for fewer than 2 personas.
    """
    pool = personas if isinstance(personas, PersonaPool) else PersonaPool(personas)
    rng = random.Random(f"{seed}:pair:{index}")
    matched = bool(pool.regions) and rng.random() < region_match
    if matched:
        weights = [len(members) for _, members in pool.regions]
        _, candidates = rng.choices(pool.regions, weights=weights)[0]
    else:
        candidates = pool.personas
    a, b = rng.sample(candidates, 2)
    for _ in range(_NAME_REDRAWS):
        if _same_name(a, b):
            a, b = rng.sample(candidates, 2)
    return Pair(a=a.id, b=b.id, region_matched=matched)


def _same_name(a: Persona, b: Persona) -> bool:
    return " ".join(a.meta.name.split()).casefold() == " ".join(b.meta.name.split()).casefold()
