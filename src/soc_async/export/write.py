"""Rows onto disk: one JSONL file per split, and Parquet files converted from them.

JSONL is written as rows come (msgspec encodes a row Struct directly), so an export
streams. Parquet is converted afterwards from each JSONL file by pyarrow's streaming
JSON reader with the format's explicit schema (schema.py), so it is bounded in memory
and its columns have exactly the types the dataset card states.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import msgspec

from soc_async.errors import InputError

__all__ = ["DATA_DIR", "SplitWriter", "jsonl_to_parquet"]

DATA_DIR = "data"
# The JSON reader keeps a few dozen blocks in flight, so memory follows the block size;
# a block must hold the longest line, so it grows with the longest row written.
_MIN_BLOCK = 1 << 20
_ROW_GROUP_BYTES = 32 << 20  # Arrow bytes per row group (ParquetWriter would buffer them all)


class SplitWriter:
    """Appends rows to ``OUT/data/<split>.jsonl``, one file per split, opened on first use."""

    def __init__(self, out: Path) -> None:
        self.dir = out / DATA_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self.counts: dict[str, int] = {}
        self.longest: dict[str, int] = {}  # bytes of the longest line per split
        self._encoder = msgspec.json.Encoder()
        self._buffer = bytearray()

    def path(self, split: str) -> Path:
        return self.dir / f"{split}.jsonl"

    def write(self, split: str, row: msgspec.Struct) -> None:
        f = self._files.get(split)
        if f is None:
            f = self._files[split] = self.path(split).open("wb")
            self.counts[split] = 0
        self._encoder.encode_into(row, self._buffer)
        self._buffer.extend(b"\n")
        f.write(self._buffer)
        self.counts[split] += 1
        if len(self._buffer) > self.longest.get(split, 0):
            self.longest[split] = len(self._buffer)

    def ensure(self, split: str) -> None:
        """Create ``split``'s file even when no row goes into it (an empty split)."""
        if split not in self._files:
            self._files[split] = self.path(split).open("wb")
            self.counts[split] = 0

    def close(self) -> dict[str, int]:
        for f in self._files.values():
            f.close()
        return dict(self.counts)


def block_size(longest_line: int) -> int:
    """The JSON reader's block for a file whose longest line has ``longest_line`` bytes."""
    block = _MIN_BLOCK
    while block < 2 * longest_line:
        block *= 2
    return block


def jsonl_to_parquet(jsonl: Path, parquet: Path, schema: Any, longest_line: int = 0) -> int:
    """Convert one JSONL file to Parquet with ``schema``; returns the number of rows.

    ``longest_line`` (bytes) sizes the reader's blocks; row groups hold about 32 MiB.

    Raises InputError when pyarrow (the ``export`` extra) is not installed.
    """
    try:
        import pyarrow as pa
        import pyarrow.json as pj
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("--parquet needs pyarrow: pip install 'soc-async[export]'") from None
    rows = 0
    with pq.ParquetWriter(parquet, schema, compression="zstd") as writer:
        if jsonl.stat().st_size == 0:
            writer.write_table(pa.Table.from_pylist([], schema=schema))
            return 0
        reader = pj.open_json(
            jsonl,
            read_options=pj.ReadOptions(block_size=block_size(longest_line)),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="error"
            ),
        )
        group: list[Any] = []
        for batch in reader:
            group.append(batch)
            rows += batch.num_rows
            if sum(b.nbytes for b in group) >= _ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(group))  # one row group, written now
                group = []
        if group:
            writer.write_table(pa.Table.from_batches(group))
    return rows
