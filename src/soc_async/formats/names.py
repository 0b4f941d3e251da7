"""Names as people write them: accents dropped, case folded, words told apart.

Models spell a persona's name with or without its accents ("Đức", "Duc"), in another
case, given name first or last. :func:`strip_accents` and :func:`fold` give forms that
compare equal across those spellings; :func:`name_tokens` gives the words of a name a
text can refer to a person by (given name, family name, each part of either).
"""

from __future__ import annotations

import re
import unicodedata

# Letters that Unicode does not decompose into a base letter and an accent.
_PLAIN = str.maketrans(
    {
        "Đ": "D",
        "đ": "d",
        "Ł": "L",
        "ł": "l",
        "Ø": "O",
        "ø": "o",
        "ı": "i",
        "Ħ": "H",
        "ħ": "h",
        "ß": "ss",
        "Æ": "Ae",
        "æ": "ae",
        "Œ": "Oe",
        "œ": "oe",
        "Þ": "Th",
        "þ": "th",
        "ð": "d",
        "’": "'",
        "ʼ": "'",
    }
)


def strip_accents(text: str) -> str:
    """``text`` with accents removed and case kept: "Phạm Minh Đức" -> "Pham Minh Duc"."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_PLAIN))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def fold(text: str) -> str:
    """Case-, accent- and spacing-insensitive form, for comparing names and headers."""
    return " ".join(strip_accents(text).casefold().split())


_WORD = re.compile(r"[^\W\d_](?:[\w'’.-]*\w)?")


def name_tokens(name: str) -> list[str]:
    """The capitalised words of a display name, accents stripped: "Phạm Minh Đức" ->
    ["Pham", "Minh", "Duc"]; particles written in lower case ("da", "van") are left out,
    as are single letters."""
    words = _WORD.findall(strip_accents(name))
    return [w for w in words if len(w) > 1 and w[0].isupper()]


__all__ = ["fold", "name_tokens", "strip_accents"]
