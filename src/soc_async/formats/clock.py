"""The chat clock: ``t="HH:MM" d="DD.MM"`` stamps as datetimes, and the gaps allowed between them.

A turn's messages carry a time and a day but no year, because that is how chat apps show
them and what a model writes naturally. The year is inferred from the clock: a stamp means
the first matching day on or after the previous message's day, so ``31.12`` followed by
``01.01`` moves into the next year and a stamp can never land before the clock's own day
by accident. Whether it lands before the clock's *time* is the state machine's question.

Everything here is pure and works on naive datetimes (a chat has one local wall clock).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache

import msgspec

MINUTES_PER_DAY = 24 * 60

# A leap day recurs every 4 years, or 8 across a skipped century leap year (2100).
_LEAP_SEARCH_YEARS = 9


class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """Minutes allowed between consecutive messages for one cadence.

    ``min_minutes`` bounds the reply delay (a turn's first message after the previous
    turn's last); ``max_minutes`` bounds every step between consecutive messages.
    """

    min_minutes: int = 0
    max_minutes: int

    def __post_init__(self) -> None:
        # Stamps carry no year, so a gap of a year or more would make "DD.MM" ambiguous.
        if not 0 <= self.min_minutes <= self.max_minutes < 365 * MINUTES_PER_DAY:
            raise ValueError(
                f"gap must satisfy 0 <= min <= max < one year in minutes, "
                f"got [{self.min_minutes}, {self.max_minutes}]"
            )

    @property
    def min(self) -> timedelta:
        return _minutes(self.min_minutes)

    @property
    def max(self) -> timedelta:
        return _minutes(self.max_minutes)


@cache
def _minutes(n: int) -> timedelta:
    # A turn's checks and grammar ask a gap for its bounds several times; the few
    # cadences of a run give a handful of values.
    return timedelta(minutes=n)


# Every stamp a message can carry, read once: a turn's checks and its grammar read the
# same few stamps several times, and a lookup is a tenth of a match and a conversion.
_TIMES: dict[str, time] = {f"{h:02d}:{m:02d}": time(h, m) for h in range(24) for m in range(60)}
_DAYS: dict[str, tuple[int, int]] = {
    f"{d.day:02d}.{d.month:02d}": (d.day, d.month)
    for d in (date(2000, 1, 1) + timedelta(days=n) for n in range(366))  # 2000: a leap year
}


def parse_time(t: str) -> time | None:
    """``"HH:MM"`` (24-hour, zero-padded, ASCII digits) as a time, or None when it is not one."""
    return _TIMES.get(t)


def parse_day(d: str) -> tuple[int, int] | None:
    """``"DD.MM"`` as (day, month) when some year has that date (29.02 included), else None."""
    return _DAYS.get(d)


def parse_stamp(t: str, d: str, after: datetime) -> datetime | None:
    """The datetime a stamp means when it follows ``after``; None when the stamp is invalid.

    The year is the one that puts ``d`` on the earliest day on or after ``after``'s day:
    ``01.01`` after 31.12.2026 is 2027, ``29.02`` waits for the next leap year. The time
    may still fall before ``after`` on that same day; callers check that.
    """
    clock = parse_time(t)
    day_month = parse_day(d)
    if clock is None or day_month is None:
        return None
    day, month = day_month
    for year in range(after.year, after.year + _LEAP_SEARCH_YEARS):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue  # 29.02 in a common year
        if candidate >= after.date():
            return datetime.combine(candidate, clock)
    return None


def parse_stamp_before(t: str, d: str, before: datetime) -> datetime | None:
    """The latest datetime on or before ``before``'s day that the stamp could mean, or None.

    Used to tell a stamp that went back a day (``15.03`` after 16.03) from one that jumped
    almost a year ahead, which is what :func:`parse_stamp` reads it as.
    """
    clock = parse_time(t)
    day_month = parse_day(d)
    if clock is None or day_month is None:
        return None
    day, month = day_month
    for year in range(before.year, before.year - _LEAP_SEARCH_YEARS, -1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate <= before.date():
            return datetime.combine(candidate, clock)
    return None


def format_stamp(dt: datetime) -> tuple[str, str]:
    """``(t, d)`` as a message writes them: ``("22:51", "15.03")``."""
    # Formatted by hand: strftime costs more than the rest of a turn's clock work.
    return f"{dt.hour:02d}:{dt.minute:02d}", f"{dt.day:02d}.{dt.month:02d}"


def format_day(day: date) -> str:
    """A day as ``"DD.MM"``."""
    return f"{day.day:02d}.{day.month:02d}"


# English names by date.weekday(): strftime("%A") would follow the process's locale,
# and the prompts are English whatever the machine's LANG says.
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def weekday_name(day: date) -> str:
    """The English name of ``day``'s weekday ("Monday")."""
    return WEEKDAYS[day.weekday()]


def long_day(day: date) -> str:
    """A day as a prompt spells it: ``"15 March 2026"``."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def format_time(dt: datetime) -> str:
    """The ``"HH:MM"`` of a stamp."""
    return format_stamp(dt)[0]


def minute_of_day(dt: datetime) -> int:
    """Minutes since midnight, 0..1439."""
    return dt.hour * 60 + dt.minute


def day_windows(earliest: datetime, latest: datetime) -> list[tuple[date, int, int]]:
    """The days from ``earliest`` to ``latest`` with the minutes of each inside that span.

    Each item is ``(day, first_minute, last_minute)``, minutes since midnight, both
    inclusive: the first day starts at ``earliest``'s minute, the last ends at
    ``latest``'s, the days between are whole. Empty when ``latest < earliest``.
    """
    if latest < earliest:
        return []
    windows = []
    day = earliest.date()
    while day <= latest.date():
        first = minute_of_day(earliest) if day == earliest.date() else 0
        last = minute_of_day(latest) if day == latest.date() else MINUTES_PER_DAY - 1
        windows.append((day, first, last))
        day += timedelta(days=1)
    return windows


def describe_stamp(dt: datetime) -> str:
    """A stamp as people read it in a violation's detail: ``"14:02 on 15.03"``."""
    t, d = format_stamp(dt)
    return f"{t} on {d}"


def minutes_between(earlier: datetime, later: datetime) -> int:
    """Whole minutes from ``earlier`` to ``later`` (negative when they are the other way)."""
    return int((later - earlier).total_seconds() // 60)


def describe_span(minutes: int) -> str:
    """A length of time for a violation's detail: ``"50 min"``, ``"3 h 05 min"``, ``"2 d 4 h"``."""
    if minutes < 60:
        return f"{minutes} min"
    if minutes < MINUTES_PER_DAY:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes // MINUTES_PER_DAY} d {minutes % MINUTES_PER_DAY // 60} h"
