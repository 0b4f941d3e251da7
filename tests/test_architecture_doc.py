"""docs/architecture.md is kept true to the tree: its layout names every module of
src/soc_async, and every module it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "soc_async"


def _layout() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("## Layout")
    return text[start : text.index("\n## ", start + 1)]


def _listed() -> set[str]:
    """Module paths the layout block names, from its indentation: ``pkg/`` lines open a
    folder, ``name.py`` lines (or "a.py/b.py" and "a.py, b.py") name modules in it."""
    found: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in _layout().splitlines():
        m = re.match(r"^( +)(\S+)", line)
        if not m or not (m.group(2).endswith("/") or ".py" in m.group(2)):
            continue
        indent, word = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = "/".join(name for _, name in stack if name != "src/soc_async")
        if word.endswith("/"):
            stack.append((indent, word.rstrip("/")))
            continue
        head = line.strip().split("  ")[0]
        for name in re.findall(r"([\w]+\.py)", head):
            found.add(f"{prefix}/{name}".lstrip("/"))
    return found


def _modules() -> set[str]:
    return {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "_data" not in p.parts
    }


def test_every_module_is_in_the_layout() -> None:
    """A module added to src/soc_async without a line in docs/architecture.md fails."""
    assert sorted(_modules() - _listed()) == []


def test_every_module_in_the_layout_exists() -> None:
    """A line of the layout naming a module that is gone fails."""
    assert sorted(_listed() - _modules()) == []
