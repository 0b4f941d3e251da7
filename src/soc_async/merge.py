"""``soc-async merge``: the shard directories of one job array joined into one dataset.

Shard ``i/n`` of a run writes only the items whose index is ``i`` modulo ``n`` (ids come
from ``records.make_id(seed, stage, index)``), so the shards of one run hold disjoint
ids and their union is the run. Merging checks that promise instead of trusting it:

- every input belongs to the same run (run key and seed of its run.json) and is split the
  same way (the same ``n``); a shard given twice, or a shard of another run, is refused;
- every record's index belongs to the shard it was found in, and no id appears twice;
- shards missing from the inputs are refused unless ``--allow-partial``.

Each shard's run kept its own near-duplicates out, but no shard saw another's. So the
merge runs the run's near-duplicate check (:mod:`soc_async.neardup`, the same tokenizer,
signatures and thresholds) over the cards and experiences of every shard together, in
shard order: an item close to one before it is dropped or flagged as the config's
``merge.near_duplicates`` says, a dropped persona takes the experiences that use it, and a
dropped experience its chats. ``near_duplicates.jsonl`` in the output lists each one
and why (:func:`near_duplicates` is pure over the records).

Planning (:func:`plan_merge`, :func:`check_ids`) is pure logic over identities and id
lists, so it is property-tested without files; :func:`merge` does the reading and writing.
Inputs are only read: a torn last line (a job killed mid-write) is left out of the output,
not cut off the shard. The output gets the data files, a run.json of the whole run
(shard ``0/1``, so ``soc-async status`` reads it) and ``merge.json``, written last as
the mark that the merge is complete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from soc_async import config as config_mod
from soc_async.config import RunConfig
from soc_async.errors import RunDirError
from soc_async.neardup import NUM_PERM, NearDuplicates
from soc_async.records import (
    Conversation,
    Experience,
    Failure,
    Persona,
    Record,
    encode_line,
    id_index,
    record_id,
)
from soc_async.store import DATA_FILES, RUN, RunIdentity
from soc_async.store.rundata import MERGE_SUMMARY, RunData
from soc_async.timestamps import utc_now

__all__ = [
    "MergePlan",
    "MergeSummary",
    "NearDuplicate",
    "ShardInput",
    "check_ids",
    "merge",
    "near_duplicates",
    "parse_shard",
    "plan_merge",
]

SUMMARY = MERGE_SUMMARY
NEAR_DUPLICATES = "near_duplicates.jsonl"
_ANY_RECORD = (Persona, Experience, Conversation, Failure)

_SHARD_RE = re.compile(r"(\d+)/(\d+)")


class ShardInput(msgspec.Struct, frozen=True, kw_only=True):
    """One input directory as its run.json describes it."""

    path: str
    key: str  # the run key: equal for every shard of one run
    seed: int
    index: int  # i of "i/n"
    count: int  # n of "i/n"

    @property
    def shard(self) -> str:
        return f"{self.index}/{self.count}"


class MergePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a merge will join: the shards in index order and the ones not given."""

    key: str
    seed: int
    count: int
    shards: tuple[ShardInput, ...]
    missing: tuple[int, ...]


class MergeSummary(msgspec.Struct, kw_only=True):
    """What ``merge.json`` holds."""

    key: str
    seed: int
    count: int  # n: how many shards the run was split into
    merged: list[str]  # "i/n" of every shard joined
    missing: list[str]  # "i/n" of every shard not given (only with --allow-partial)
    inputs: dict[str, str]  # "i/n" -> the directory it was read from (absolute)
    counts: dict[str, int]  # data file -> records written
    per_shard: dict[str, dict[str, int]]  # "i/n" -> data file -> records
    dropped_torn_lines: int  # torn last lines of inputs left out
    torn: list[str]  # where they were: "file:line"
    created: str
    near_duplicate_action: str = "off"  # merge.near_duplicates: drop, flag or off
    # data file -> records listed in near_duplicates.jsonl (dropped or flagged)
    near_duplicates: dict[str, int] = {}

    def line(self, out: Path) -> str:
        """The one-line summary printed after a merge."""
        counts = ", ".join(f"{n} {name.removesuffix('.jsonl')}" for name, n in self.counts.items())
        partial = f" ({len(self.missing)} missing)" if self.missing else ""
        found = sum(self.near_duplicates.values())
        dups = ""
        if self.near_duplicate_action != "off":
            verb = "dropped" if self.near_duplicate_action == "drop" else "flagged"
            dups = f"; {found} cross-shard near-duplicate records {verb} (see {NEAR_DUPLICATES})"
        return (
            f"merged {len(self.merged)}/{self.count} shards{partial} of run {self.key} "
            f"(seed {self.seed}) into {out}: {counts}{dups}"
        )


class NearDuplicate(msgspec.Struct, kw_only=True):
    """One line of near_duplicates.jsonl: a record the merge dropped or flagged, and why."""

    file: str  # the data file it is (or was) in
    id: str
    shard: str  # "i/n" it came from
    action: Literal["dropped", "flagged"]
    # "near_duplicate": close to ``duplicate_of``; "uses_dropped": it uses a record that
    # was dropped (``duplicate_of`` names that record).
    reason: Literal["near_duplicate", "uses_dropped"]
    duplicate_of: str
    duplicate_of_shard: str
    similarity: float | None = None  # the MinHash estimate, for "near_duplicate"


# -- pure planning -----------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)``; raises ``ValueError`` unless ``0 <= i < n``."""
    m = _SHARD_RE.fullmatch(text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"expected a shard as i/n with 0 <= i < n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def plan_merge(inputs: Sequence[ShardInput], *, allow_partial: bool = False) -> MergePlan:
    """The merge of ``inputs``, or a :class:`RunDirError` saying why they cannot be joined.

    The first input sets the run (key, seed, n); every other must match it and name a
    shard no earlier input named.
    """
    if not inputs:
        raise RunDirError("merge: no input directories given")
    first = inputs[0]
    seen: dict[int, ShardInput] = {}
    for item in inputs:
        if item.key != first.key or item.seed != first.seed:
            raise RunDirError(
                f"{item.path}: belongs to another run (seed {item.seed}, key {item.key}) "
                f"than {first.path} (seed {first.seed}, key {first.key}); "
                "merge only the shards of one run"
            )
        if item.count != first.count:
            raise RunDirError(
                f"{item.path}: is shard {item.shard} but {first.path} is shard {first.shard}; "
                "the shards of one run share n"
            )
        if item.index in seen:
            raise RunDirError(
                f"{item.path}: shard {item.shard} given twice (also {seen[item.index].path})"
            )
        seen[item.index] = item
    missing = tuple(i for i in range(first.count) if i not in seen)
    if missing and not allow_partial:
        names = ", ".join(f"{i}/{first.count}" for i in missing)
        raise RunDirError(
            f"merge: shard(s) {names} not given; add them, or pass --allow-partial "
            "to merge what is there"
        )
    return MergePlan(
        key=first.key,
        seed=first.seed,
        count=first.count,
        shards=tuple(seen[i] for i in sorted(seen)),
        missing=missing,
    )


def check_ids(
    plan: MergePlan, ids: Mapping[str, Mapping[str, Sequence[str]]]
) -> dict[str, dict[str, int]]:
    """Records per shard and data file, once every id is shown to be the shard's own and
    unique across all inputs; a :class:`RunDirError` names the first that is not.

    ``ids`` maps an input path to its data files' ids, in file order.
    """
    counts: dict[str, dict[str, int]] = {}
    for name in DATA_FILES:
        owner: dict[str, str] = {}  # id -> the input it was first seen in
        for shard in plan.shards:
            file_ids = ids.get(shard.path, {}).get(name, ())
            where = os.path.join(shard.path, name)
            for item_id in file_ids:
                try:
                    index = id_index(item_id)
                except (IndexError, ValueError):
                    raise RunDirError(f"{where}: {item_id!r} is not an id soc-async made") from None
                if index % plan.count != shard.index:
                    raise RunDirError(
                        f"{where}: {item_id} (index {index}) is not of shard {shard.shard}; "
                        "was this directory written by another shard or run?"
                    )
                if item_id in owner:
                    other = os.path.join(owner[item_id], name)
                    raise RunDirError(f"{where}: id {item_id} appears twice (also in {other})")
                owner[item_id] = shard.path
            counts.setdefault(shard.shard, {})[name] = len(file_ids)
    return counts


def near_duplicates(
    personas: Sequence[tuple[str, Persona]],
    experiences: Sequence[tuple[str, Experience]],
    conversations: Sequence[tuple[str, str, str]],
    config: RunConfig,
) -> list[NearDuplicate]:
    """What the merge drops or flags: near-duplicate cards and experiences over all shards
    (in the order given: shard by shard), then, when dropping, what uses a dropped record.

    ``personas`` and ``experiences`` are ``(shard, record)``; ``conversations`` are
    ``(shard, chat_id, experience_id)``. Empty when ``merge.near_duplicates`` is "off".
    """
    how = config.merge.near_duplicates
    if how == "off":
        return []
    action: Literal["dropped", "flagged"] = "dropped" if how == "drop" else "flagged"
    names = {p.id: p.meta.name for _, p in personas}
    found: list[NearDuplicate] = []

    def scan(file: str, threshold: float, items: Sequence[tuple[str, str, str, list[str]]]) -> None:
        if threshold <= 0:
            return  # the run's check is off for this kind, and so is the merge's
        index = NearDuplicates(threshold=threshold, num_perm=NUM_PERM, bands=None)
        shard_of: dict[str, str] = {}
        for shard, item_id, text, item_names in items:
            index.add(item_id, text, item_names)
            shard_of[item_id] = shard
        for i, j, similarity in index.pairs():
            later, earlier = index.ids[i], index.ids[j]
            found.append(
                NearDuplicate(
                    file=file,
                    id=later,
                    shard=shard_of[later],
                    action=action,
                    reason="near_duplicate",
                    duplicate_of=earlier,
                    duplicate_of_shard=shard_of[earlier],
                    similarity=round(similarity, 4),
                )
            )

    scan(
        "personas.jsonl",
        config.persona.dedup_threshold,
        [(s, p.id, p.persona_text, [p.meta.name]) for s, p in personas],
    )
    scan(
        "experiences.jsonl",
        config.experience.dedup_threshold,
        [
            (s, e.id, e.experience_text, [names[i] for i in e.persona_ids if i in names])
            for s, e in experiences
        ],
    )
    if action != "dropped":
        return found
    # What uses a dropped record goes too: an experience of a dropped persona would name
    # someone the dataset no longer has, a chat of a dropped experience the same.
    dropped = {d.id: d.shard for d in found}
    for shard, e in experiences:
        gone = next((i for i in e.persona_ids if i in dropped), None)
        if gone is not None and e.id not in dropped:
            found.append(
                NearDuplicate(
                    file="experiences.jsonl",
                    id=e.id,
                    shard=shard,
                    action="dropped",
                    reason="uses_dropped",
                    duplicate_of=gone,
                    duplicate_of_shard=dropped[gone],
                )
            )
            dropped[e.id] = shard
    for shard, chat_id, experience_id in conversations:
        if experience_id in dropped:
            found.append(
                NearDuplicate(
                    file="conversations.jsonl",
                    id=chat_id,
                    shard=shard,
                    action="dropped",
                    reason="uses_dropped",
                    duplicate_of=experience_id,
                    duplicate_of_shard=dropped[experience_id],
                )
            )
    return found


# -- reading and writing -----------------------------------------------------------------


def read_input(path: str | os.PathLike[str]) -> ShardInput:
    """The identity of the run directory at ``path``, from its run.json."""
    p = Path(path)
    identity = RunData(p).identity
    if identity is None:
        raise RunDirError(f"{p}: not a soc-async run directory (no {RUN})")
    try:
        index, count = parse_shard(identity.shard)
    except ValueError as exc:
        raise RunDirError(f"{p / RUN}: shard: {exc}") from None
    return ShardInput(path=str(p), key=identity.key, seed=identity.seed, index=index, count=count)


def _good_lines(shard: RunData, name: str) -> Iterator[tuple[bytes, Record]]:
    """(line, record) for the lines of a shard's file, read by the one run reader; a torn
    last line (a job killed mid-write) is left out and noted in ``shard.torn``, a file the
    shard never reached is empty, a bad line anywhere is an error."""
    for record in shard.records(name, _ANY_RECORD):
        yield encode_line(record), record


def _scan_ids(shard: RunData, name: str) -> list[str]:
    return [record_id(record) for _, record in _good_lines(shard, name)]


def encode_json_line(item: msgspec.Struct) -> bytes:
    return msgspec.json.encode(item) + b"\n"


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{out}: exists and is not empty; merge into a new directory")
    out.mkdir(parents=True, exist_ok=True)


def _write_file(path: Path, lines: Iterator[bytes]) -> None:
    """Write ``path`` whole or not at all: a .part file, fsync, rename."""
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        for line in lines:
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _run_config(plan: MergePlan, shards: Mapping[str, RunData]) -> RunConfig:
    """The run's config, as its first shard wrote it (every shard of a run shares it);
    the defaults when no shard has one."""
    for shard in plan.shards:
        data = shards[shard.path]
        if data.config_text is not None:
            return data.config
    return RunConfig()


def _found_near_duplicates(
    plan: MergePlan, shards: Mapping[str, RunData], config: RunConfig
) -> list[NearDuplicate]:
    """Reads the shards' cards, experiences and chats and runs :func:`near_duplicates`."""
    if config.merge.near_duplicates == "off":
        return []
    personas: list[tuple[str, Persona]] = []
    experiences: list[tuple[str, Experience]] = []
    chats: list[tuple[str, str, str]] = []
    for s in plan.shards:
        for name in ("personas.jsonl", "experiences.jsonl", "conversations.jsonl"):
            for _, record in _good_lines(shards[s.path], name):
                if isinstance(record, Persona):
                    personas.append((s.shard, record))
                elif isinstance(record, Experience):
                    experiences.append((s.shard, record))
                elif isinstance(record, Conversation):
                    chats.append((s.shard, record.chat_id, record.experience_id))
    return near_duplicates(personas, experiences, chats, config)


def merge(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    allow_partial: bool = False,
    near_duplicates_action: str | None = None,
) -> MergeSummary:
    """Joins the shard directories ``inputs`` into the new directory ``out``.

    ``near_duplicates_action`` ("drop", "flag", "off") replaces the run config's
    ``merge.near_duplicates``. Everything is checked before anything is written, so a
    refused merge leaves ``out`` as it was (absent or empty).
    """
    plan = plan_merge([read_input(p) for p in inputs], allow_partial=allow_partial)
    out_path = Path(out)
    for shard in plan.shards:
        if Path(shard.path).resolve() == out_path.resolve():
            raise RunDirError(f"{out_path}: is one of the inputs; merge into a new directory")
    shards = {s.path: RunData(s.path) for s in plan.shards}
    ids = {
        path: {name: _scan_ids(shard, name) for name in DATA_FILES}
        for path, shard in shards.items()
    }
    torn = [str(shard.path / where) for shard in shards.values() for where in shard.torn]
    per_shard = check_ids(plan, ids)
    config = _run_config(plan, shards)
    if near_duplicates_action is not None:
        config = config_mod.override(config, {"merge.near_duplicates": near_duplicates_action})
    found = _found_near_duplicates(plan, shards, config)
    dropped = {(d.file, d.id) for d in found if d.action == "dropped"}
    _prepare_out(out_path)
    counts: dict[str, int] = {}
    for name in DATA_FILES:
        _write_file(
            out_path / name,
            (
                line
                for s in plan.shards
                for line, record in _good_lines(shards[s.path], name)
                if (name, record_id(record)) not in dropped
            ),
        )
        gone = sum(1 for file, _ in dropped if file == name)
        counts[name] = sum(per_shard[s.shard][name] for s in plan.shards) - gone
    _write_file(out_path / NEAR_DUPLICATES, (encode_json_line(d) for d in found))
    now = utc_now()
    whole = RunIdentity(seed=plan.seed, shard="0/1", key=plan.key, created=now)
    (out_path / RUN).write_bytes(msgspec.json.encode(whole) + b"\n")
    summary = MergeSummary(
        key=plan.key,
        seed=plan.seed,
        count=plan.count,
        merged=[s.shard for s in plan.shards],
        missing=[f"{i}/{plan.count}" for i in plan.missing],
        inputs={s.shard: str(Path(s.path).resolve()) for s in plan.shards},
        counts=counts,
        per_shard=per_shard,
        dropped_torn_lines=len(torn),
        torn=torn,
        created=now,
        near_duplicate_action=config.merge.near_duplicates,
        near_duplicates={
            name: n for name in DATA_FILES if (n := sum(1 for d in found if d.file == name))
        },
    )
    _write_file(
        out_path / SUMMARY, iter([msgspec.json.format(msgspec.json.encode(summary)) + b"\n"])
    )
    return summary


# -- command line --------------------------------------------------------------------------
