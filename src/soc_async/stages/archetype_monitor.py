"""The persona stage's archetype monitor, made for a run and primed on resume.

A resumed run feeds the monitor the last cards it already holds, in the order they were
written, so its hints pick up where the interrupted run's left off.
"""

from __future__ import annotations

from collections.abc import Iterable

from soc_async.archetypes import ArchetypeMonitor, KeywordTable, inner_text, shares, written_label
from soc_async.config import ArchetypeConfig
from soc_async.records import Persona

__all__ = ["archetype_monitor"]


def archetype_monitor(
    config: ArchetypeConfig, existing: Iterable[Persona] = ()
) -> ArchetypeMonitor | None:
    """A monitor over ``config.coping``, primed with the last ``config.window`` of
    ``existing`` (by iteration); None when ``config.hint`` is off."""
    if not config.hint:
        return None
    monitor = ArchetypeMonitor(
        shares(config.coping), window=config.window, min_pool=config.min_pool, hint_z=config.hint_z
    )
    keywords = KeywordTable(config.coping)
    drawn = [p for p in existing if p.meta.coping in config.coping]
    drawn.sort(key=lambda p: p.meta.iteration)
    for p in drawn[-config.window :]:
        monitor.observe(written_label(inner_text(p.persona_text), keywords, p.meta.coping))
    return monitor
