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
_BLOCK = 8 << 20  # the JSON reader's block must hold the longest line (one row)


class SplitWriter:
    """Appends rows to ``OUT/data/<split>.jsonl``, one file per split, opened on first use."""

    def __init__(self, out: Path) -> None:
        self.dir = out / DATA_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self.counts: dict[str, int] = {}
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

    def ensure(self, split: str) -> None:
        """Create ``split``'s file even when no row goes into it (an empty split)."""
        if split not in self._files:
            self._files[split] = self.path(split).open("wb")
            self.counts[split] = 0

    def close(self) -> dict[str, int]:
        for f in self._files.values():
            f.close()
        return dict(self.counts)


def jsonl_to_parquet(jsonl: Path, parquet: Path, schema: Any) -> int:
    """Convert one JSONL file to Parquet with ``schema``; returns the number of rows.

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
            read_options=pj.ReadOptions(block_size=_BLOCK),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="error"
            ),
        )
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows
