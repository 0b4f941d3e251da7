"""Persona cards and experiences (markdown inside an XML element) as HTML, for the viewer.

A card is ``<character>`` around markdown whose sections open with a ``**Header**`` line;
an experience is ``<experience>`` around prose, labelled lines (``Conversation style:``
...) and bullet lists. The element is taken off (export/extract.py's ``unwrap``), the
known section headers and labels are turned into markdown headings and bold labels, and
markdown-it-py (already a dependency of rich) renders the rest with raw HTML disabled:
whatever markup a model wrote into a card is shown as text, never run as HTML.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from soc_async.export.extract import card_sections, unwrap

__all__ = ["card_html", "experience_html"]

_MD = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False})
_LABEL = re.compile(
    r"^(Conversation style|Message cadence|Opens|Initial state)\s*:\s*(.*)$", re.IGNORECASE
)
_LIST_HEAD = re.compile(
    r"^(The conversation will likely cover the following topics|Possible instant events)\s*:?\s*$",
    re.IGNORECASE,
)


def card_html(text: str) -> str:
    """A ``<character>`` card as HTML: one ``<h4>`` per section, its markdown rendered."""
    sections = card_sections(text)
    if not sections:  # not a card in the expected layout: render it as it is
        return _MD.render(unwrap(text, "character"))
    parts = []
    for header, body in sections.items():
        parts.append(f"#### {header}\n\n{body}\n")
    return _MD.render("\n".join(parts))


def experience_html(text: str) -> str:
    """An ``<experience>`` as HTML: prose paragraphs, bold labels, headed lists."""
    lines = []
    for line in unwrap(text, "experience").splitlines():
        stripped = line.strip()
        label = _LABEL.match(stripped)
        if label:
            # A line of its own even inside a paragraph: the two spaces make a hard break.
            lines.append(f"**{label.group(1)}:** {_escape_md(label.group(2))}  ")
        elif _LIST_HEAD.match(stripped):
            lines += ["", f"##### {stripped.rstrip(':')}", ""]
        else:
            lines.append(line)
    return _MD.render("\n".join(lines))


def _escape_md(text: str) -> str:
    """Text put after a markdown label, with emphasis characters taken literally."""
    return re.sub(r"([*_`\\])", r"\\\1", text)
