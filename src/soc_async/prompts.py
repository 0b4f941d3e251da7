"""Loads the Jinja2 templates of the top-level ``prompts/`` folder that every call kind renders.

Each call kind has a static system template (byte-identical across calls, so vLLM's
prefix cache shares it) and a per-call user template. The folder is found through
:func:`soc_async.resources.data_dir` (the wheel carries a copy).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from soc_async.resources import data_dir

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(data_dir("prompts")),
    undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,  # prompts are plain text, not HTML
)


@cache
def template(name: str) -> jinja2.Template:
    """The compiled template ``prompts/<name>`` (cached: rendering is on the hot path)."""
    return _ENV.get_template(name)


def render(name: str, /, **variables: Any) -> str:
    """``prompts/<name>`` rendered with ``variables``."""
    return template(name).render(**variables)
