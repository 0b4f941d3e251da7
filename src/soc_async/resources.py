"""Where the top-level ``prompts/`` and ``seeds/`` folders are found at run time.

In the repository they live beside ``src/``; a wheel carries them inside the package as
``soc_async/_data/prompts`` and ``soc_async/_data/seeds`` (pyproject's force-include),
so an installed soc-async finds them without the source tree and an editable install
reads the checkout's own folders.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from soc_async.errors import SeedError

_PACKAGE = Path(__file__).resolve().parent
FOLDERS = ("prompts", "seeds")


@cache
def data_dir(name: str) -> Path:
    """The folder ``name`` ("prompts" or "seeds"): the wheel's copy, else the checkout's."""
    if name not in FOLDERS:
        raise ValueError(f"unknown data folder {name!r}; expected one of {FOLDERS}")
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise SeedError(
        f"{name}/: not found in the installed package ({_PACKAGE / '_data'}) nor beside "
        f"the source tree ({_PACKAGE.parents[1]}); reinstall soc-async"
    )


__all__ = ["FOLDERS", "data_dir"]
