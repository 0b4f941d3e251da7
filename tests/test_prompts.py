"""Prompt rendering: the fast path of ``prompts.render`` gives exactly what Jinja's own
``Template.render`` gives, and a missing variable is still an error."""

from __future__ import annotations

import jinja2
import pytest

from soc_async.calls import prompts

TAIL = {
    "speaker": "Ana Sousa",
    "listener": "Kofi Mensah",
    "state_line": "Broken bike; 1 turn remaining; Band practice",
    "first_turn": False,
    "start_day": "15.03",
    "weekday": "Sunday",
    "opens": "19:00 on 15.03",
    "closes": "20:00 on 15.03",
    "last_time": "22:50",
    "last_day": "15.03",
    "ending_allowed": True,
    "event": "the bus breaks down",
    "messages": 2,
    "correction": "expected state 'x'. Write the turn again following the rules.",
}


@pytest.mark.parametrize(
    ("name", "variables"),
    [
        ("chat_tail.j2", TAIL),
        (
            "chat_tail.j2",
            {**TAIL, "first_turn": True, "event": None, "correction": "", "messages": None},
        ),
        ("chat_user.j2", {"summary": "", "transcript": ""}),
        ("chat_user.j2", {"summary": "They met.", "transcript": "Ana:\n  hi"}),
        ("chat_fixed.j2", {"people": [{"name": "A", "card": "c 😀"}], "experience_text": "e"}),
        ("chat_system.j2", {}),
    ],
)
def test_render_equals_jinja_render(name: str, variables: dict[str, object]) -> None:
    """Byte for byte what Template.render returns, for every branch of the chat templates."""
    assert prompts.render(name, **variables) == prompts.template(name).render(**variables)


def test_missing_variable_raises() -> None:
    """StrictUndefined still applies: a variable the template needs and did not get raises."""
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("chat_tail.j2", speaker="Ana")


@pytest.mark.parametrize("summary", ["", "They met. 😀", "odd model text \x00transcript\x00"])
def test_render_around_leaves_the_hole_where_the_value_goes(summary: str) -> None:
    """The text before and after the transcript, with any transcript put between them,
    is what rendering with that transcript gives."""
    before, after = prompts.render_around("chat_user.j2", "transcript", summary=summary)
    for transcript in ("Ana:\n  [15.03 10:00] hi", "x\n\ny 😀"):
        whole = prompts.render("chat_user.j2", summary=summary, transcript=transcript)
        assert before + transcript + after == whole


def test_render_around_needs_the_hole_once() -> None:
    """A variable the template does not print cannot be left open."""
    with pytest.raises(ValueError, match="must appear exactly once"):
        prompts.render_around("chat_system.j2", "transcript")
