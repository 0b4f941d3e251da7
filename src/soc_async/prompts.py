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


@cache
def _globals(name: str) -> dict[str, Any]:
    # Template.render copies the template's globals (a ChainMap over the environment's)
    # into a new dict for every call; two templates are rendered per chat turn, so the
    # copy is made once per template and merged with the variables instead.
    return dict(template(name).globals)


def render(name: str, /, **variables: Any) -> str:
    """``prompts/<name>`` rendered with ``variables``: what ``Template.render`` gives."""
    t = template(name)
    context = t.new_context({**_globals(name), **variables}, shared=True)
    try:
        return t.environment.concat(t.root_render_func(context))  # type: ignore[attr-defined]
    except Exception:
        return t.environment.handle_exception()
