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
    # into a new dict for every call, and its Context lists them again; two templates are
    # rendered per chat turn, so the copy is made once per template instead.
    return dict(template(name).globals)


def render(name: str, /, **variables: Any) -> str:
    """``prompts/<name>`` rendered with ``variables``: what ``Template.render`` gives."""
    t = template(name)
    names = _globals(name)
    # What Template.new_context(shared=True) makes, given the globals as a plain dict.
    context = t.environment.context_class(
        t.environment, {**names, **variables}, t.name, t.blocks, globals=names
    )
    try:
        return t.environment.concat(t.root_render_func(context))  # type: ignore[attr-defined]
    except Exception:
        return t.environment.handle_exception()


def render_around(name: str, hole: str, /, **variables: Any) -> tuple[str, str]:
    """``prompts/<name>`` rendered with the variable ``hole`` left open: the text before
    and after the place its value goes, so a caller can put in a value it keeps in
    another form (already encoded, say) without rendering it again. The value stands in
    as a non-empty string, so a template's ``{% if hole %}`` takes its true branch."""
    marker = f"\x00{hole}\x00"
    # A value may be model text: the marker must be something none of them holds.
    while any(isinstance(v, str) and marker in v for v in variables.values()):
        marker += "\x00"
    text = render(name, **{hole: marker}, **variables)
    if text.count(marker) != 1:
        raise ValueError(f"prompts/{name}: {{{{ {hole} }}}} must appear exactly once")
    before, _, after = text.partition(marker)
    return before, after
