"""Records and ports the tests use, written once: a test states only what it cares
about (an id, a name, a region, a card's text) and takes the rest from here."""

from __future__ import annotations

from soc_async.llm.server import pick_free_port
from soc_async.records import Persona, PersonaMeta

__all__ = ["free_port", "persona"]

free_port = pick_free_port  # one way to find a port for a test server


def persona(
    pid: str | int,
    *,
    name: str | None = None,
    region: str = "r",
    subregion: str = "s",
    gender: str = "f",
    age: int = 30,
    text: str = "<character>...</character>",
    iteration: int | None = None,
    time_taken: float = 0.1,
) -> Persona:
    """A persona record. An int ``pid`` makes the id ``p-{pid}`` and the iteration ``pid``."""
    item_id = f"p-{pid}" if isinstance(pid, int) else pid
    if iteration is None:
        iteration = pid if isinstance(pid, int) else 0
    meta = PersonaMeta(
        iteration=iteration,
        model="m",
        region=region,
        subregion=subregion,
        name=f"Name {pid}" if name is None else name,
        gender=gender,
        age=age,
        time_taken=time_taken,
    )
    return Persona(id=item_id, persona_text=text, meta=meta)
