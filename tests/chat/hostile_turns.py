"""A corpus of hostile turn replies, as data: what small models really send, and the reason
each must be refused with (``None``: a control the rules must accept).

Every reply is written against one chat, reached by replaying ``SETUP`` replies:

    Mia Chen opens, Tomás Rivera answers; structured, realtime (gaps up to 45 min);
    starts 15.03.2026; roadmap "Exam nerves" (2 turns), "Weekend plans" (2 turns).

    at "first"   no turn yet          expects "Exam nerves; 1 turn remaining; Weekend plans"
    at "middle"  after SETUP[:1]      expects "Exam nerves; 0 turns remaining; Weekend plans"
                 Tomás speaks, the clock reads 22:53 on 15.03
    at "last"    after SETUP[:3]      expects "Weekend plans; 0 turns remaining; end"
                 Tomás speaks, the clock reads 23:24 on 15.03, the ending tag is allowed
"""

# ruff: noqa: E501  (one reply per line reads best as a table)
from __future__ import annotations

from typing import NamedTuple

PERSONAS = {"p-mia": "Mia Chen", "p-tom": "Tomás Rivera"}
OPENER = "p-mia"
TOPICS = [("Exam nerves", 2), ("Weekend plans", 2)]
STYLE = "structured"
CADENCE = "realtime"
START = "2026-03-15"

SETUP = [
    """<turn>
<state>
Exam nerves; 1 turn remaining; Weekend plans
</state>
<message t="22:51" d="15.03" type="text">ok so i finally booked the stats resit</message>
<message t="22:53" d="15.03" type="text">tell me im not insane</message>
</turn>""",
    """<turn>
<state>
Exam nerves; 0 turns remaining; Weekend plans
</state>
<message t="23:01" d="15.03" type="text">you're not insane, you're prepared. different thing</message>
</turn>""",
    """<turn>
<state>
Weekend plans; 1 turn remaining; end
</state>
<message t="23:20" d="15.03" type="text">ok new topic. saturday?? i need to not think</message>
<message t="23:24" d="15.03" type="sticker">[cat rolling on a keyboard]</message>
</turn>""",
]
SETUP_AT = {"first": 0, "middle": 1, "last": 3}


class Hostile(NamedTuple):
    name: str
    at: str  # "first", "middle" or "last"
    reason: str | None  # the reason code it must be refused with; None: must be accepted
    reply: str


def _turn(state: str, *messages: str, ending: bool = False) -> str:
    tag = "\n<predefined_topics_exhausted/>" if ending else ""
    return "<turn>\n<state>\n" + state + tag + "\n</state>\n" + "\n".join(messages) + "\n</turn>"


def _msg(t: str, text: str, d: str = "15.03", kind: str = "text") -> str:
    return f'<message t="{t}" d="{d}" type="{kind}">{text}</message>'


MIDDLE = "Exam nerves; 0 turns remaining; Weekend plans"
LAST = "Weekend plans; 0 turns remaining; end"
FIRST = "Exam nerves; 1 turn remaining; Weekend plans"

# fmt: off
CORPUS: list[Hostile] = [
    # Controls: what a good reply looks like at each point, so refusals are for the flaw.
    Hostile("first ok", "first", None, _turn(FIRST, _msg("21:40", "are you up"))),
    Hostile("middle ok", "middle", None, _turn(MIDDLE, _msg("22:58", "never. breathe"))),
    Hostile("last ends", "last", None, _turn(LAST, _msg("23:30", "park at 11, bring the frisbee"), ending=True)),
    Hostile("last goes on", "last", None, _turn(LAST, _msg("23:30", "park at 11?"))),
    Hostile("chatter and fence", "middle", None, "Sure! Here is Tomás's reply:\n```xml\n" + _turn(MIDDLE, _msg("22:58", "lol")) + "\n```"),
    Hostile("hearts and ampersands", "middle", None, _turn(MIDDLE, _msg("22:58", "R&D exams <3 you got this"))),
    Hostile("sloppy state spacing", "middle", None, _turn("exam nerves ;0 TURNS remaining;  weekend plans", _msg("22:58", "ok"))),
    Hostile("past midnight", "middle", None, _turn(MIDDLE, _msg("23:30", "ok"), _msg("00:05", "still up", d="16.03"))),
    Hostile("addresses by name", "middle", None, _turn(MIDDLE, _msg("22:58", "Mia, seriously, go to sleep"))),
    # Time.
    Hostile("messages out of order", "middle", "clock_backwards", _turn(MIDDLE, _msg("23:10", "wait"), _msg("23:02", "what"))),
    Hostile("reply before the clock", "middle", "clock_backwards", _turn(MIDDLE, _msg("22:40", "hm"))),
    Hostile("reply on the day before", "middle", "clock_backwards", _turn(MIDDLE, _msg("23:00", "hm", d="14.03"))),
    Hostile("reply an hour late", "middle", "gap_too_long", _turn(MIDDLE, _msg("23:59", "sorry was in the shower"))),
    Hostile("long pause inside a turn", "middle", "gap_too_long", _turn(MIDDLE, _msg("22:55", "brb"), _msg("23:50", "back"))),
    Hostile("reply a day late", "middle", "gap_too_long", _turn(MIDDLE, _msg("22:55", "hm", d="16.03"))),
    Hostile("first message next day", "first", "wrong_date_start", _turn(FIRST, _msg("09:00", "morning", d="16.03"))),
    Hostile("hour 24", "middle", "bad_timestamp", _turn(MIDDLE, _msg("24:10", "late"))),
    Hostile("30 February", "middle", "bad_timestamp", _turn(MIDDLE, _msg("23:00", "late", d="30.02"))),
    Hostile("no day", "middle", "bad_timestamp", _turn(MIDDLE, '<message t="23:00" type="text">late</message>')),
    # Messages.
    Hostile("four messages", "middle", "too_many_messages", _turn(MIDDLE, *(_msg(f"22:5{i}", "and") for i in range(4, 8)))),
    Hostile("no message", "middle", "no_messages", _turn(MIDDLE)),
    Hostile("gif type", "middle", "unknown_type", _turn(MIDDLE, _msg("22:58", "[dancing dog]", kind="gif"))),
    Hostile("blank text", "middle", "empty_text", _turn(MIDDLE, _msg("22:58", "   "))),
    Hostile("self-closed message", "middle", "empty_text", _turn(MIDDLE, '<message t="22:58" d="15.03" type="text"/>')),
    Hostile("markup in text", "middle", "leftover_tag", _turn(MIDDLE, _msg("22:58", "you are <b>not</b> insane"))),
    Hostile("own name prefix", "middle", "speaker_prefix", _turn(MIDDLE, _msg("22:58", "Tomás: you're fine"))),
    Hostile("other full name prefix", "middle", "speaker_prefix", _turn(MIDDLE, _msg("22:58", "mia chen - you're fine"))),
    Hostile("prefix on a later message", "middle", "speaker_prefix", _turn(MIDDLE, _msg("22:58", "ok"), _msg("22:59", "TOMÁS RIVERA: jk"))),
    # State and endings.
    Hostile("moves on early", "middle", "state_mismatch", _turn("Weekend plans; 1 turn remaining; end", _msg("22:58", "anyway saturday"))),
    Hostile("repeats the last state", "middle", "state_mismatch", _turn(FIRST, _msg("22:58", "ok"))),
    Hostile("plural for one", "first", "state_mismatch", _turn("Exam nerves; 1 turns remaining; Weekend plans", _msg("21:40", "hey"))),
    Hostile("singular for zero", "middle", "state_mismatch", _turn("Exam nerves; 0 turn remaining; Weekend plans", _msg("22:58", "ok"))),
    Hostile("counts below zero", "last", "bad_state_line", _turn("Weekend plans; -1 turns remaining; end", _msg("23:30", "ok"))),
    Hostile("early ending tag", "middle", "early_ending", _turn(MIDDLE, _msg("22:58", "night!"), ending=True)),
    Hostile("ending on the first turn", "first", "early_ending", _turn(FIRST, _msg("21:40", "bye"), ending=True)),
    Hostile("no state", "middle", "missing_state", "<turn>\n" + _msg("22:58", "ok") + "\n</turn>"),
    Hostile("empty state", "middle", "missing_state", _turn("", _msg("22:58", "ok"))),
    Hostile("state as prose", "middle", "bad_state_line", _turn("still on exams, nearly done", _msg("22:58", "ok"))),
    # Structure.
    Hostile("plain chat line", "middle", "no_turn", "Tomás: you're not insane"),
    Hostile("two turns", "middle", "several_turns", _turn(MIDDLE, _msg("22:58", "ok")) + "\n" + _turn(LAST, _msg("23:30", "sat?"))),
    Hostile("cut off", "middle", "unclosed", _turn(MIDDLE, _msg("22:58", "ok so the thing is"))[:-30]),
    Hostile("message never closed", "middle", "unclosed", _turn(MIDDLE, '<message t="22:58" d="15.03" type="text">ok')),
    Hostile("state never closed", "middle", "unclosed", _turn(MIDDLE, _msg("22:58", "ok")).replace("</state>", "")),
]
# fmt: on
