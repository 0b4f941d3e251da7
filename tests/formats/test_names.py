"""Accent stripping: the ASCII shortcut gives what the full Unicode path gives."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from soc_async.formats.names import _PLAIN, strip_accents


def reference(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_PLAIN))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@given(st.text(st.characters(max_codepoint=0x7F)) | st.text())
def test_strip_accents_equals_the_unicode_path(text: str) -> None:
    """For ASCII and any other text, the result is the translated, decomposed text
    without combining marks."""
    assert strip_accents(text) == reference(text)


def test_examples() -> None:
    """Accents go, case stays, letters Unicode does not decompose are spelled out."""
    assert strip_accents("Phạm Minh Đức") == "Pham Minh Duc"
    assert strip_accents("Ana's bike") == "Ana's bike"
    assert strip_accents("Łukasz Weiß") == "Lukasz Weiss"
