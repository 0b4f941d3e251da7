"""The xgrammar EBNF that constrains the next chat turn, derived from the chat's state.

Sent as ``structured_outputs: {"grammar": ...}``, it lets even a small model write only
replies of the right shape that also agree with the state machine where a grammar can:

- exactly one ``<turn>``, nothing around it;
- the expected state line as a literal, so the topic tracker cannot be argued with;
- ``<predefined_topics_exhausted/>`` offered only on turns where ending is allowed;
- ``min..max`` messages (exactly one count once the rollout has pinned the turn's rules
  to what its cadence's pacing drew: ``chat.state.paced``), each of an allowed type,
  one line of text that opens with a visible character and holds no ``<``, ``>`` or
  control characters;
- stamps inside the clock's window: every message of the turn falls between the clock
  and the clock plus the cadence's largest gap (the first one also waits the smallest
  gap), each day spelled as a literal ``DD.MM`` with only its allowed minutes. The
  chat's first turn may use any time of its start date.

What a context-free grammar cannot say is left to the validator
(``chat.state.apply_turn``), which runs on every reply regardless: that the
messages of one turn come in time order, the gaps inside the first turn, and that a
message does not open with a speaker's name.

The grammar is built for every request, so the parts that repeat are memoized by what
determines them, never by the state as a whole: the lines that depend only on the
:class:`ChatRules` (:func:`_fixed_rules`), the minutes of one day's window
(:func:`_minutes`, by its first and last minute) and the spelling of a day
(:func:`_day_attribute`). Each is a pure function of its arguments; :data:`CACHED` lists
them, and ``tests/chat/test_grammar_cache.py`` checks that a grammar built from warm
caches equals one built without them.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache

from soc_async.chat.state import (
    ChatRules,
    ChatState,
    IllegalMove,
    ending_allowed,
    expected_state_line,
    is_done,
    time_window,
)
from soc_async.formats.clock import day_windows, format_day
from soc_async.formats.ebnf import alternatives, literal
from soc_async.formats.turn import ENDING_TAG

# Characters a message may never hold: markup delimiters, control characters (newline
# included: one message is one line) and the two XML non-characters.
_NEVER = r"<>\x00-\x1f\ufffe\uffff"
# What Python's str.strip() removes, so a text the grammar allows is never empty once stripped.
_BLANK = r" \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# What follows a message's stamp, and how a day is spelled after its time.
_BODY = '" type=\\"" type "\\">" text "</message>\\n"'
_DAY_ATTRIBUTE = '" d="{}"'
_ENDING = literal(f"<{ENDING_TAG}/>\n")


def turn_grammar(state: ChatState, rules: ChatRules) -> str:
    """The EBNF (root rule ``root``) of every reply the next turn may be.

    Raises :class:`~soc_async.chat.state.IllegalMove` for a chat that has ended.
    """
    if is_done(state):
        raise IllegalMove(f"{state.chat_id} ended ({state.ended_by}); it has no next turn")
    ending = " ending?" if ending_allowed(state) else ""
    state_part = literal(f"<turn>\n<state>\n{expected_state_line(state)}\n")
    earliest, latest = time_window(state, rules)
    # After the first message the clock is the floor again; the reply gap is spent.
    floor = state.clock if state.clock is not None else earliest
    return (
        f'root ::= {state_part}{ending} "</state>\\n" messages "</turn>"\n'
        + _fixed_rules(rules)
        + (f"ending ::= {_ENDING}\n" if ending else "")
        + f"first_stamp ::= {_stamps(earliest, latest)}\n"
        + f"stamp ::= {_stamps(floor, latest)}\n"
    )


@lru_cache(maxsize=256)
def _fixed_rules(rules: ChatRules) -> str:
    """The rules that depend on the chat's rules alone, each line ended by a newline."""
    lines = [
        f"messages ::= first_message{_repeat('message', rules)}",
        f'first_message ::= "<message " first_stamp {_BODY}',
        f'message ::= "<message " stamp {_BODY}',
        f"type ::= {alternatives(list(rules.allowed_types))}",
        f"text ::= [^{_NEVER}{_BLANK}] [^{_NEVER}]{{0,{rules.max_text_chars - 1}}}",
    ]
    return "\n".join(lines) + "\n"


def _repeat(rule: str, rules: ChatRules) -> str:
    """`` rule{min-1,max-1}``: the messages after the first one."""
    low, high = rules.min_messages - 1, rules.max_messages - 1
    return f" {rule}{{{low},{high}}}" if high > 0 else ""


def _stamps(earliest: datetime, latest: datetime) -> str:
    """``t="HH:MM" d="DD.MM"`` for every minute from ``earliest`` to ``latest``."""
    days = [
        f"{_minutes(first, last)} {_day_attribute(day)}"
        for day, first, last in day_windows(earliest, latest)
    ]
    return f'"t=\\"" ({" | ".join(days)})'


@lru_cache(maxsize=4096)
def _day_attribute(day: date) -> str:
    """`` d="DD.MM"`` (what follows a stamp's time) as a literal."""
    return literal(_DAY_ATTRIBUTE.format(format_day(day)))


# A chat's windows are the clock plus its cadence's gaps, so the distinct (first, last)
# pairs are about 1,440 per gap length: a few cadences fit many times over.
@lru_cache(maxsize=65536)
def _minutes(first: int, last: int) -> str:
    """``HH:MM`` for the minutes of a day from ``first`` to ``last`` (both inclusive)."""
    (h1, m1), (h2, m2) = divmod(first, 60), divmod(last, 60)
    if h1 == h2:
        return f'("{h1:02d}:" {_two_digits(m1, m2)})'
    head = f'"{h1:02d}:" {_two_digits(m1, 59)}' if m1 > 0 else None
    tail = f'"{h2:02d}:" {_two_digits(0, m2)}' if m2 < 59 else None
    whole = range(h1 + (head is not None), h2 + (tail is None))  # hours with every minute
    body = f'{_two_digits(whole[0], whole[-1])} ":" {_two_digits(0, 59)}' if whole else None
    return "(" + " | ".join(p for p in (head, body, tail) if p) + ")"


def _two_digits(low: int, high: int) -> str:
    """The zero-padded two-digit numbers from ``low`` to ``high``: 07..42 is
    ``("0" [7-9] | [1-3] [0-9] | "4" [0-2])``, 00..59 is ``([0-5] [0-9])``."""
    (t1, u1), (t2, u2) = divmod(low, 10), divmod(high, 10)
    if t1 == t2:
        return f'("{t1}" {_digit(u1, u2)})'
    head = f'"{t1}" {_digit(u1, 9)}' if u1 > 0 else None
    tail = f'"{t2}" {_digit(0, u2)}' if u2 < 9 else None
    whole = range(t1 + (head is not None), t2 + (tail is None))  # tens with every unit
    body = f"{_digit(whole[0], whole[-1])} [0-9]" if whole else None
    return "(" + " | ".join(p for p in (head, body, tail) if p) + ")"


def _digit(low: int, high: int) -> str:
    return f'"{low}"' if low == high else f"[{low}-{high}]"


# The memoized pieces (each an ``lru_cache`` over a pure function, ``__wrapped__`` the
# function itself).
CACHED = (_fixed_rules, _minutes, _day_attribute)
