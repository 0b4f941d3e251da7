"""The run directory a report reads: its files streamed, its config, its identity.

Works on a run directory and on one written by ``soc-async merge`` (same data files; a
merged directory has no config.toml of its own, so the first shard's is read when it is
still where merge.json says, else the defaults, and the report says which). Files are
only read, never repaired: a torn last line (a run still writing, or killed) is left out
and named in the report.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from soc_async import config as config_mod
from soc_async.config import RunConfig
from soc_async.store import CONFIG, read_identity, read_records
from soc_async.store.runinfo import RunIdentity

__all__ = ["MERGE_SUMMARY", "RunSource", "config_hash", "soc_async_version"]

MERGE_SUMMARY = "merge.json"
R = TypeVar("R")

# Keys that say where a run ran, not what it made: left out of the config hash, so two
# runs with the same settings hash alike whatever their output paths and servers.
_PLACE_KEYS = ("out", "endpoints", "api_key", "shard")


def soc_async_version() -> str:
    try:
        return importlib.metadata.version("soc-async")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "unknown"


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


class RunSource:
    """One directory opened for reading; see the module docstring."""

    def __init__(
        self,
        path: Path,
        identity: RunIdentity,
        config: RunConfig,
        config_source: str,
        config_text: str | None,
        merged: bool,
    ) -> None:
        self.path = path
        self.identity = identity
        self.config = config
        self.config_source = config_source
        self.config_hash = config_hash(config_text) if config_text is not None else None
        self.merged = merged
        self.torn: list[str] = []

    @classmethod
    def open(cls, path: str | Path) -> RunSource:
        """Raises RunDirError for a directory that is not a run, ConfigError for a bad
        config.toml."""
        p = Path(path)
        identity = read_identity(p)
        merged = (p / MERGE_SUMMARY).is_file()
        found = cls._config_file(p, merged)
        if found is None:
            return cls(p, identity, RunConfig(), "defaults", None, merged)
        text = found.read_text(encoding="utf-8")
        return cls(p, identity, config_mod.load(found), str(found), text, merged)

    @staticmethod
    def _config_file(p: Path, merged: bool) -> Path | None:
        if (p / CONFIG).is_file():
            return p / CONFIG
        if merged:
            try:
                summary = msgspec.json.decode((p / MERGE_SUMMARY).read_bytes())
            except (OSError, msgspec.DecodeError):
                return None
            inputs = summary.get("inputs") if isinstance(summary, dict) else None
            for shard_dir in (inputs or {}).values():
                candidate = Path(str(shard_dir)) / CONFIG
                if candidate.is_file():
                    return candidate
        return None

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def records(self, name: str, kind: type[R]) -> Iterator[R]:
        """The records of one data file, streamed; none when the file does not exist."""
        path = self.path / name
        if not path.is_file():
            return
        for _, record in read_records(path, kind, on_torn=lambda n: self._torn(name, n)):
            yield record

    def _torn(self, name: str, lineno: int) -> None:
        self.torn.append(f"{name}:{lineno}")
