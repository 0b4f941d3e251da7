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


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _expected(kinds: tuple[type, ...]) -> str:
    return " or ".join(f"{_a(KIND_NAMES[k])} record" for k in kinds)


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
        raise InputError(f"{p}:{lineno}: {_a(got)} record; expected {_expected(wanted)}")
    return record  # type: ignore[return-value]


def check_stage_inputs(
    *,
    personas: Path | None = None,
    experiences: Path | None = None,
    min_personas: int = 0,
    allow_torn: bool = False,
) -> dict[str, int]:
    """Reads the input files of a single-stage command whole, before anything starts.

    Every line must be a record of the file's kind with an id not seen before in that
    file; ``personas`` must hold at least ``min_personas`` records; every persona an
    experience names must be in ``personas``. Returns the record count per kind; raises
    InputError naming the file (and the line) otherwise. Nothing is written.
    """
    counts: dict[str, int] = {}
    persona_ids: dict[str, int] = {}
    if personas is not None:
        for lineno, persona in read_records(personas, Persona, allow_torn=allow_torn):
            _unique(personas, lineno, persona.id, persona_ids)
        counts["personas"] = len(persona_ids)
        if len(persona_ids) < min_personas:
            found = "an empty file" if not persona_ids else f"{len(persona_ids)}"
            raise InputError(
                f"{personas}: {found} persona record(s); at least {min_personas} are needed "
                "(a personas.jsonl written by soc-async personas or run)"
            )
    if experiences is not None:
        seen: dict[str, int] = {}
        for lineno, experience in read_records(experiences, Experience, allow_torn=allow_torn):
            _unique(experiences, lineno, experience.id, seen)
            missing = [p for p in experience.persona_ids if p not in persona_ids]
            if personas is not None and missing:
                raise InputError(
                    f"{experiences}:{lineno}: experience {experience.id} names persona "
                    f"{missing[0]}, which is not in {personas}"
                )
        if not seen:
            raise InputError(
                f"{experiences}: no experience records (empty file); at least 1 is needed"
            )
        counts["experiences"] = len(seen)
    return counts


def _unique(path: Path, lineno: int, item_id: str, seen: dict[str, int]) -> None:
    first = seen.setdefault(item_id, lineno)
    if first != lineno:
        raise InputError(f"{path}:{lineno}: duplicate id {item_id} (first on line {first})")


__all__ = [
    "KIND_NAMES",
    "RecordHeader",
    "TornLine",
    "check_stage_inputs",
    "header_decoder",
    "read_records",
]
