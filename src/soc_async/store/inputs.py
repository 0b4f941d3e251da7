"""The one reader of record files: stage inputs, resumed run directories, report, export.

Every line must be a JSON record of the expected kind; anything else is an
:class:`~soc_async.errors.InputError` naming ``FILE:LINE`` and what was expected, never a
line skipped in silence. A last line without its newline is a torn write (a file copied
while a run was appending to it): an error too, unless the caller allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec

from soc_async.errors import InputError
from soc_async.records import Conversation, Experience, Failure, Persona, Record, decode_line

KIND_NAMES: dict[type, str] = {
    Persona: "persona",
    Experience: "experience",
    Conversation: "conversation",
    Failure: "failure",
}


class _MetaHeader(msgspec.Struct, kw_only=True):
    model: str = ""


class RecordHeader(msgspec.Struct, kw_only=True):
    """The few fields of any record line that resume and status need, decoded cheaply."""

    kind: str = ""
    id: str | None = None
    chat_id: str | None = None
    stage: str | None = None  # failures
    reason: str | None = None  # failures
    retries: dict[str, int] = {}  # conversations and failures
    model: str = ""  # conversations
    meta: _MetaHeader | None = None  # personas and experiences: meta.model

    @property
    def item_id(self) -> str:
        return self.chat_id if self.chat_id is not None else self.id or ""

    @property
    def model_name(self) -> str:
        """The model that wrote the record ("" for failures and old records)."""
        return self.model or (self.meta.model if self.meta is not None else "")


header_decoder = msgspec.json.Decoder(RecordHeader)
R = TypeVar("R", Persona, Experience, Conversation, Failure, Record)


def _expected(kinds: tuple[type, ...]) -> str:
    return " or ".join(f"a {KIND_NAMES[k]} record" for k in kinds)


class TornLine(InputError):
    """The file's last line has no newline: it was being written when copied or killed."""


def read_records(
    path: str | Path,
    kinds: type[R] | tuple[type[R], ...],
    *,
    allow_torn: bool = False,
    on_torn: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, R]]:
    """(line number, record) for every line of ``path``, streamed.

    A line that is not JSON, not a record, or a record of another kind than ``kinds`` is
    an InputError naming ``path:line``; so is a missing or unreadable file. Blank lines are
    skipped. A torn last line raises :class:`TornLine` unless ``allow_torn`` or ``on_torn``
    (called with its line number) says to leave it out.
    """
    p = Path(path)
    wanted = kinds if isinstance(kinds, tuple) else (kinds,)
    try:
        f = p.open("rb")
    except FileNotFoundError:
        raise InputError(f"{p}: no such file (expected {_expected(wanted)} per line)") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror})") from exc
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                if on_torn is not None:
                    on_torn(lineno)
                if allow_torn or on_torn is not None:
                    return
                raise TornLine(
                    f"{p}:{lineno}: torn last line (no newline; the file was cut while being "
                    "written); pass --allow-torn to ignore it"
                )
            if not line.strip():
                continue
            yield lineno, _decode(p, lineno, line, wanted)


def _decode(p: Path, lineno: int, line: bytes, wanted: tuple[type[R], ...]) -> R:
    try:
        record = decode_line(line)
    except msgspec.ValidationError as exc:
        raise InputError(
            f"{p}:{lineno}: not a valid record ({exc}); expected {_expected(wanted)}"
        ) from exc
    except msgspec.DecodeError:
        raise InputError(f"{p}:{lineno}: not JSON; expected {_expected(wanted)}") from None
    if not isinstance(record, wanted):
        got = KIND_NAMES.get(type(record), type(record).__name__)
        raise InputError(f"{p}:{lineno}: a {got} record; expected {_expected(wanted)}")
    return record  # type: ignore[return-value]


__all__ = ["KIND_NAMES", "RecordHeader", "TornLine", "header_decoder", "read_records"]
