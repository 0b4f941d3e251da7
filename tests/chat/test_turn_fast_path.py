"""The hostile corpus read both ways: the canonical fast path of ``parse_turn`` is silent
or agrees with the markup reader on every reply small models really send."""

from __future__ import annotations

import hostile_turns
import pytest

from soc_async.formats.turn import _read_canonical, _read_markup

REPLIES = [h.reply for h in hostile_turns.CORPUS] + hostile_turns.SETUP


@pytest.mark.parametrize("reply", REPLIES)
def test_fast_path_agrees_with_markup_on_the_corpus(reply: str) -> None:
    """No reply of the corpus reads differently on the fast path than through lxml."""
    fast = _read_canonical(reply)
    assert fast is None or fast == _read_markup(reply)


def test_fast_path_takes_the_well_formed_replies() -> None:
    """The setup replies, spelled as the grammar spells them, take the fast path."""
    assert all(_read_canonical(reply) is not None for reply in hostile_turns.SETUP)
