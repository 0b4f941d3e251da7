"""A finished (or paused) run directory read whole, for the viewer and the exporter.

Records reference each other by id: a conversation names its experience and its two
personas. :class:`RunData` holds the personas and experiences by id (they are what the
conversations are joined with) and the failures, and streams the conversations, which
are the bulk of a run and never needed all at once.

Reading is tolerant of what a run in progress or an older or newer soc-async leaves:

- a file that does not exist is empty (a run with no failures has no failures.jsonl);
- a torn last line (a run still appending) is left out;
- config.toml and run.json are read as plain data, a missing or unreadable one is ``{}``;
- fields added by later versions (persona ``meta.occupation`` and ``meta.band``,
  an experience's ``start``) are read with :func:`optional` so older records give None.

A directory with none of the data files is a :class:`~soc_async.errors.RunDirError`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from soc_async.errors import RunDirError
from soc_async.records import (
    Conversation,
    Experience,
    Failure,
    Persona,
    id_index,
    make_id,
)
from soc_async.store import (
    CONFIG,
    CONVERSATIONS,
    EXPERIENCES,
    FAILURES,
    PERSONAS,
    RUN,
    read_records,
)

__all__ = [
    "Packed",
    "RunData",
    "optional",
]

_DATA = (PERSONAS, EXPERIENCES, CONVERSATIONS, FAILURES)
R = TypeVar("R", bound=msgspec.Struct)
_encoder = msgspec.json.Encoder()


class Packed(Mapping[str, R]):
    """Records by id, kept as their JSON and decoded when looked up.

    A run has as many experiences as conversations, and each is read once per
    conversation that uses it; as bytes they take about half the memory of decoded
    Structs (100,000 experiences: docs/performance.md).
    """

    def __init__(self, kind: type[R]) -> None:
        self._raw: dict[str, bytes] = {}
        self._decoder = msgspec.json.Decoder(kind)

    def add(self, key: str, record: R) -> None:
        self._raw[key] = _encoder.encode(record)

    def __getitem__(self, key: str) -> R:
        return self._decoder.decode(self._raw[key])

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def optional(obj: object, name: str) -> Any:
    """``obj.name`` if the record type has that field (a later version's), else None."""
    return getattr(obj, name, None)


class RunData:
    """Personas, experiences and failures of a run directory in memory; chats streamed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: not a directory (expected a run directory)")
        if not any((self.path / name).exists() for name in _DATA):
            raise RunDirError(
                f"{self.path}: no {', '.join(_DATA)} (expected a run directory written by "
                "soc-async run or merge)"
            )
        self.personas: dict[str, Persona] = {p.id: p for p in self._read(PERSONAS, Persona)}
        self.experiences: Packed[Experience] = Packed(Experience)
        for e in self._read(EXPERIENCES, Experience):
            self.experiences.add(e.id, e)
        self.failures: list[Failure] = list(self._read(FAILURES, Failure))
        self.identity: dict[str, Any] = _json(self.path / RUN)
        self.config: dict[str, Any] = _toml(self.path / CONFIG)

    def _read(self, name: str, kind: type) -> Iterator[Any]:
        path = self.path / name
        if not path.exists():
            return
        for _, record in read_records(path, kind, allow_torn=True):
            yield record

    def conversations(self) -> Iterator[Conversation]:
        """Every conversation, in file order, streamed."""
        yield from self._read(CONVERSATIONS, Conversation)

    @property
    def seed(self) -> int | None:
        """The run's seed (run.json, else config.toml), which names its ids."""
        seed = self.identity.get("seed", self.config.get("seed"))
        return seed if isinstance(seed, int) else None

    def chat_failures(self) -> list[Failure]:
        return [f for f in self.failures if f.stage == "chats"]

    def experience_of_chat(self, chat_id: str) -> Experience | None:
        """The experience chat ``chat_id`` was (or would have been) rolled out from.

        Chat ``j`` is rolled out from experience ``j`` of the same seed, which is how a
        failed chat, which has no conversation record, finds its experience.
        """
        seed = self.seed
        if seed is None:
            return None
        try:
            index = id_index(chat_id)
        except (IndexError, ValueError):
            return None
        return self.experiences.get(make_id(seed, "experiences", index))


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
