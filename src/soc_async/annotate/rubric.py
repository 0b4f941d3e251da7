"""The rubric raters answer: criteria on scales with anchors, quick flags, a comment.

A rubric is a TOML file (default_rubric.toml beside this module is the default). It is
read strictly: an unknown key, an unknown scale, a point of a scale without its anchor,
an anchor outside the scale, two criteria with one key are each refused with the file
and the line they are on, so a rater never meets a scale nobody described.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec

from soc_async.errors import InputError, validation_key

__all__ = [
    "DEFAULT_RUBRIC",
    "RESERVED_KEYS",
    "RUBRIC_FILE",
    "SCALES",
    "Criterion",
    "Rubric",
    "default_rubric",
    "load_rubric",
    "parse_rubric",
    "run_rubric",
]

DEFAULT_RUBRIC = "default_rubric.toml"
RUBRIC_FILE = "annotate-rubric.toml"  # the rubric in use, kept in the run directory
# The scales a page knows how to draw and a report how to measure (ordinal, 1 to n).
SCALES: dict[str, tuple[int, int]] = {"1-3": (1, 3), "1-5": (1, 5), "1-7": (1, 7)}
# Keys the page keeps for itself (navigation, comment, state lines, context, help).
RESERVED_KEYS = frozenset("npcsehjk?")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

Key = Annotated[str, msgspec.Meta(pattern=_KEY.pattern)]


class Criterion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: Key
    label: str
    question: str = ""
    scale: str = "1-5"
    anchors: dict[str, str]
    judge: str | None = None  # the judge's criterion this one is compared with

    @property
    def low(self) -> int:
        return SCALES[self.scale][0]

    @property
    def high(self) -> int:
        return SCALES[self.scale][1]


class Rubric(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    criteria: Annotated[list[Criterion], msgspec.Meta(min_length=1)]
    flags: list[str] = []
    comment: bool = True
    flag_keys: dict[str, str] = {}  # flag -> its keyboard key; filled by parse_rubric
    text: str = ""  # the file as read; kept in the run directory beside the answers

    def criterion(self, key: str) -> Criterion | None:
        return next((c for c in self.criteria if c.key == key), None)


class _Lines:
    """Where things are in a rubric file, for errors that name FILE:LINE.

    TOML parsers give values, not positions; the file's own lines are scanned instead:
    each ``[[criteria]]`` block's header and the lines of its keys (its anchors table's
    too), and the top-level keys.
    """

    def __init__(self, text: str) -> None:
        self.top: dict[str, int] = {}
        self.blocks: list[dict[str, int]] = []
        table: dict[str, int] | None = self.top
        prefix = ""
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if line.startswith("[[criteria]]"):
                self.blocks.append({"": n})
                table, prefix = self.blocks[-1], ""
            elif line.startswith("[criteria.anchors]") and self.blocks:
                table, prefix = self.blocks[-1], "anchors."
                table["anchors"] = n
            elif line.startswith("["):
                table, prefix = None, ""
            elif "=" in line and table is not None:
                key = line.split("=", 1)[0].strip().strip('"')
                table.setdefault(prefix + key, n)
                if key == "anchors":
                    table.setdefault("anchors", n)

    def of(self, criterion: int | None, key: str = "") -> int:
        if criterion is None or criterion >= len(self.blocks):
            return self.top.get(key, 1)
        block = self.blocks[criterion]
        return block.get(key) or block.get(key.split(".", 1)[0]) or block[""]


def _flag_keys(flags: list[str]) -> dict[str, str]:
    """A keyboard key per flag: the first letter of its words not taken yet, else any."""
    taken = set(RESERVED_KEYS)
    keys: dict[str, str] = {}
    for flag in flags:
        words = re.findall(r"[a-z]", flag.lower())
        choice = next((ch for ch in words if ch not in taken), None)
        if choice is None:
            choice = next(ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch not in taken)
        taken.add(choice)
        keys[flag] = choice
    return keys


def parse_rubric(text: str, source: str) -> Rubric:
    """The rubric in ``text`` (``source`` names it in errors); InputError "FILE:LINE: ..."."""
    lines = _Lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"line (\d+)", str(exc))
        raise InputError(
            f"{source}:{at.group(1) if at else 1}: not valid TOML ({exc}); expected a rubric "
            "(docs/annotate.md)"
        ) from exc
    try:
        rubric = msgspec.convert(data, Rubric)
    except msgspec.ValidationError as exc:
        key, what = validation_key(exc)
        m = re.match(r"criteria\[(\d+)\]\.?(.*)", key)
        line = lines.of(int(m.group(1)), m.group(2)) if m else lines.of(None, key)
        raise InputError(f"{source}:{line}: {key}: {what}") from exc
    for own in ("flag_keys", "text"):  # set here, never by the file
        if own in data:
            raise InputError(f"{source}:{lines.of(None, own)}: {own}: unknown key")
    seen: set[str] = set()
    for i, c in enumerate(rubric.criteria):
        where = f"criteria[{i}] ({c.key})"
        if c.scale not in SCALES:
            raise InputError(
                f"{source}:{lines.of(i, 'scale')}: {where}: unknown scale {c.scale!r}; "
                f"expected one of {', '.join(SCALES)}"
            )
        points = [str(p) for p in range(c.low, c.high + 1)]
        missing = [p for p in points if not c.anchors.get(p, "").strip()]
        if missing:
            raise InputError(
                f"{source}:{lines.of(i, 'anchors')}: {where}: no anchor for "
                f"{', '.join(missing)}; expected one sentence for every point {c.scale}"
            )
        extra = sorted(set(c.anchors) - set(points))
        if extra:
            raise InputError(
                f"{source}:{lines.of(i, 'anchors.' + extra[0])}: {where}: anchor "
                f"{extra[0]} is outside the scale {c.scale}"
            )
        if c.key in seen:
            raise InputError(f"{source}:{lines.of(i, 'key')}: {where}: a second criterion {c.key}")
        seen.add(c.key)
    if len(set(rubric.flags)) != len(rubric.flags):
        raise InputError(f"{source}:{lines.of(None, 'flags')}: flags: a flag named twice")
    rubric.flag_keys = _flag_keys(rubric.flags)
    rubric.text = text
    return rubric


def load_rubric(path: str | Path | None) -> Rubric:
    """The rubric file at ``path``, or the default one when None."""
    if path is None:
        return default_rubric()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"--rubric {p}: cannot read ({exc.strerror}); expected a TOML file"
        ) from exc
    return parse_rubric(text, str(p))


def run_rubric(run_dir: Path) -> Rubric:
    """The rubric a run directory's answers were given on (the default if none is kept)."""
    path = run_dir / RUBRIC_FILE
    return (
        parse_rubric(path.read_text(encoding="utf-8"), str(path))
        if path.is_file()
        else default_rubric()
    )


def default_rubric() -> Rubric:
    text = (resources.files("soc_async.annotate") / DEFAULT_RUBRIC).read_text(encoding="utf-8")
    return parse_rubric(text, DEFAULT_RUBRIC)
