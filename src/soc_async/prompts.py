"""Loads the Jinja2 templates of ``soc_async/templates`` that every call kind renders.

Each call kind has a static system template (byte-identical across calls, so vLLM's
prefix cache shares it) and a per-call user template. Templates ship inside the package
so an installed soc-async finds them without the source tree.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("soc_async", "templates"),
    undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # prompts are plain text, not HTML
)


@cache
def template(name: str) -> jinja2.Template:
    """The compiled template ``templates/<name>`` (cached: rendering is on the hot path)."""
    return _ENV.get_template(name)


def render(name: str, /, **variables: Any) -> str:
    """``templates/<name>`` rendered with ``variables``."""
    return template(name).render(**variables)
