"""run.json: which run a directory belongs to. The one reader and writer of that file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import msgspec

from soc_async.errors import RunDirError
from soc_async.store.files import RUN
from soc_async.timestamps import utc_now


def run_key(seed: int) -> str:
    """The key two directories share only if they belong to one run.

    Ids derive from the seed alone (records.make_id), so the seed is the run's identity;
    targets may change between resumes, and shards of one run share the key.
    """
    return hashlib.blake2b(f"soc-async-run:{seed}".encode(), digest_size=8).hexdigest()


class _Identified(Protocol):
    seed: int
    shard: str


def run_identity(config: _Identified) -> RunIdentity:
    """The identity of a run configured by ``config`` (a RunConfig: its seed and shard)."""
    return RunIdentity.new(config.seed, config.shard)


class RunIdentity(msgspec.Struct, kw_only=True):
    """What run.json holds: which run a directory belongs to."""

    seed: int
    shard: str  # "i/n"
    key: str  # run_key(seed)
    created: str  # ISO time in UTC, for people

    @classmethod
    def new(cls, seed: int, shard: str = "0/1") -> RunIdentity:
        created = utc_now()
        return cls(seed=seed, shard=shard, key=run_key(seed), created=created)


def read_identity(directory: Path) -> RunIdentity:
    """The identity in ``directory``'s run.json; RunDirError naming what is wrong."""
    if not directory.is_dir():
        raise RunDirError(f"{directory}: no such run directory")
    try:
        return msgspec.json.decode((directory / RUN).read_bytes(), type=RunIdentity)
    except FileNotFoundError:
        raise RunDirError(f"{directory}: not a soc-async run directory (no {RUN})") from None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RunDirError(
            f"{directory / RUN}: unreadable ({exc}); is this a run directory?"
        ) from exc
