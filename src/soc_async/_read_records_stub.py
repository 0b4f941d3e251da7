"""STUB of ``soc_async.store.read_records`` until main's store package is merged; delete then."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from soc_async.errors import InputError
from soc_async.records import decode_line


def read_records(
    path: str | Path, kinds: Any, *, allow_torn: bool = False
) -> Iterator[tuple[int, Any]]:
    p = Path(path)
    wanted = kinds if isinstance(kinds, tuple) else (kinds,)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from exc
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                if allow_torn:
                    return
                raise InputError(f"{p}:{lineno}: torn last line")
            if not line.strip():
                continue
            try:
                record = decode_line(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise InputError(f"{p}:{lineno}: not a valid record ({exc})") from exc
            if not isinstance(record, wanted):
                raise InputError(f"{p}:{lineno}: a record of another kind")
            yield lineno, record
