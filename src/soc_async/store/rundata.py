"""The one reader of a finished (or paused, or still running) run directory.

Every command that reads a run it did not write goes through :class:`RunData`: report,
view, export, the report's judge, merge's inputs. It returns typed records
(soc_async.records), the run's identity as run.json holds it (``store.runinfo``, the one
reader of that file) and its config as ``soc_async.config.load`` reads it (the one
reader of a config.toml).

Records reference each other by id: a conversation names its experience and its two
personas. The personas, experiences and failures are read once, when first asked for,
and kept by id; the conversations, which are the bulk of a run and never needed all at
once, are streamed, as is any file through :meth:`RunData.records`.

Reading is tolerant of what a run in progress or a killed one leaves, and repairs
nothing:

- a data file that does not exist is empty (a run with no failures has no failures.jsonl);
- a torn last line (a run still appending) is left out and named in :attr:`RunData.torn`;
- a directory written by ``soc-async merge`` has no config.toml of its own: the first
  shard's is read when it is still where merge.json says, else the defaults, and
  :attr:`RunData.config_source` says which.

A path that is not a directory, or a directory with neither run.json nor any data file,
is a :class:`~soc_async.errors.RunDirError`; an unreadable run.json is one too, and a
config.toml that is not a valid config a :class:`~soc_async.errors.ConfigError`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from soc_async import config as config_mod
from soc_async.config import RunConfig
from soc_async.errors import RunDirError
from soc_async.records import (
    Conversation,
    Experience,
    Failure,
    Persona,
    id_index,
    make_id,
)
from soc_async.store.files import CONFIG, CONVERSATIONS, EXPERIENCES, FAILURES, PERSONAS, RUN
from soc_async.store.inputs import read_records
from soc_async.store.runinfo import RunIdentity, read_identity

__all__ = ["MERGE_SUMMARY", "Packed", "RunData", "config_hash"]

MERGE_SUMMARY = "merge.json"
_DATA = (PERSONAS, EXPERIENCES, CONVERSATIONS, FAILURES)
R = TypeVar("R", bound=msgspec.Struct)
_encoder = msgspec.json.Encoder()

# Keys that say where a run ran, not what it made: left out of the config hash, so two
# runs with the same settings hash alike whatever their output paths and servers.
_PLACE_KEYS = ("out", "endpoints", "endpoints_file", "api_key", "shard")


def config_hash(text: str) -> str:
    """sha256 of the config's settings (keys sorted; paths, servers and shard left out)."""
    data: dict[str, Any] = msgspec.toml.decode(text.encode())
    for key in _PLACE_KEYS:
        data.pop(key, None)
    data.get("server", {}).pop("port", None)
    for call in data.get("calls", {}).values():
        if isinstance(call, dict):
            call.pop("endpoints", None)
    return hashlib.sha256(msgspec.json.encode(data, order="sorted")).hexdigest()


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


class RunData:
    """One run directory opened for reading; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: not a directory (expected a run directory)")
        has_identity = (self.path / RUN).exists()
        if not has_identity and not any((self.path / name).exists() for name in _DATA):
            raise RunDirError(
                f"{self.path}: not a soc-async run directory (no {RUN} and no "
                f"{', '.join(_DATA)}; expected one written by soc-async run or merge)"
            )
        self.identity: RunIdentity | None = read_identity(self.path) if has_identity else None
        self.merged = (self.path / MERGE_SUMMARY).is_file()
        found = self._config_file()
        self.config_source = str(found) if found is not None else "defaults"
        self.config_text: str | None = (
            found.read_text(encoding="utf-8") if found is not None else None
        )
        self.config: RunConfig = config_mod.load(found) if found is not None else RunConfig()
        self.torn: list[str] = []  # "file:line" of each torn last line left out

    def _config_file(self) -> Path | None:
        own = self.path / CONFIG
        if own.is_file():
            return own
        if not self.merged:
            return None
        try:
            summary = msgspec.json.decode((self.path / MERGE_SUMMARY).read_bytes())
        except (OSError, msgspec.DecodeError):
            return None
        inputs = summary.get("inputs") if isinstance(summary, dict) else None
        for shard_dir in (inputs or {}).values():
            candidate = Path(str(shard_dir)) / CONFIG
            if candidate.is_file():
                return candidate
        return None

    @property
    def config_hash(self) -> str | None:
        """:func:`config_hash` of the config read; None when the defaults stand in."""
        return config_hash(self.config_text) if self.config_text is not None else None

    def config_data(self) -> dict[str, Any]:
        """The config read, as plain data without the API key; {} when there is none."""
        if self.config_text is None:
            return {}
        return msgspec.toml.decode(config_mod.dump(self.config).encode())

    # --- records ------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def records(self, name: str, kind: type[R] | tuple[type, ...]) -> Iterator[Any]:
        """The records of data file ``name``, streamed; none when the file does not exist.
        A line that is not a record of ``kind`` is an InputError naming file and line."""
        path = self.path / name
        if not path.is_file():
            return
        for _, record in read_records(path, kind, on_torn=functools.partial(self._torn, name)):
            yield record

    def _torn(self, name: str, lineno: int) -> None:
        where = f"{name}:{lineno}"
        if where not in self.torn:
            self.torn.append(where)

    @cached_property
    def personas(self) -> dict[str, Persona]:
        """Every persona by id."""
        return {p.id: p for p in self.records(PERSONAS, Persona)}

    @cached_property
    def experiences(self) -> Packed[Experience]:
        """Every experience by id (kept encoded: :class:`Packed`)."""
        packed: Packed[Experience] = Packed(Experience)
        for e in self.records(EXPERIENCES, Experience):
            packed.add(e.id, e)
        return packed

    @cached_property
    def failures(self) -> list[Failure]:
        return list(self.records(FAILURES, Failure))

    def conversations(self) -> Iterator[Conversation]:
        """Every conversation, in file order, streamed."""
        yield from self.records(CONVERSATIONS, Conversation)

    def conversations_by_id(self, wanted: Collection[str]) -> dict[str, Conversation]:
        """The conversations whose chat id is in ``wanted`` (one pass over the file)."""
        return {c.chat_id: c for c in self.conversations() if c.chat_id in wanted}

    # --- joins --------------------------------------------------------------------------

    @property
    def seed(self) -> int | None:
        """The run's seed (run.json, else config.toml), which names its ids; None when
        the directory has neither."""
        if self.identity is not None:
            return self.identity.seed
        return self.config.seed if self.config_text is not None else None

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
