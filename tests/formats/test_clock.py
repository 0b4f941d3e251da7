"""The chat clock: reading year-less stamps forward from the clock, and the gap bounds."""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soc_async.formats.clock import (
    Gap,
    day_windows,
    describe_span,
    describe_stamp,
    format_stamp,
    parse_stamp,
    parse_stamp_before,
)

MIN_DAY, MAX_DAY = date(2001, 1, 1), date(2098, 12, 31)
minutes = st.integers(min_value=0, max_value=24 * 60 - 1)
afters = st.builds(
    lambda day, minute: datetime.combine(day, datetime.min.time()) + timedelta(minutes=minute),
    st.dates(min_value=MIN_DAY, max_value=MAX_DAY),
    minutes,
)
valid_stamps = st.tuples(
    st.integers(0, 23), st.integers(0, 59), st.dates(date(2000, 1, 1), date(2000, 12, 31))
).map(lambda x: (f"{x[0]:02d}:{x[1]:02d}", x[2].strftime("%d.%m")))


def test_same_day_stamp_keeps_the_clock_day() -> None:
    """A stamp on the clock's own day is read on that day, in the clock's year."""
    assert parse_stamp("22:53", "15.03", datetime(2026, 3, 15, 22, 51)) == datetime(
        2026, 3, 15, 22, 53
    )


def test_past_midnight_moves_to_the_next_day() -> None:
    """After 23:50 on 15.03, "00:10 16.03" is ten minutes later, not a day earlier."""
    assert parse_stamp("00:10", "16.03", datetime(2026, 3, 15, 23, 50)) == datetime(
        2026, 3, 16, 0, 10
    )


def test_new_year_rolls_the_year() -> None:
    """After 31.12, "01.01" is the first of January of the next year."""
    assert parse_stamp("00:05", "01.01", datetime(2026, 12, 31, 23, 58)) == datetime(
        2027, 1, 1, 0, 5
    )


def test_earlier_time_on_the_clock_day_is_not_pushed_a_year_ahead() -> None:
    """An earlier time on the same day reads as that day, so the caller sees it went back."""
    stamp = parse_stamp("14:02", "15.03", datetime(2026, 3, 15, 14, 5))
    assert stamp == datetime(2026, 3, 15, 14, 2)


def test_earlier_day_reads_as_next_year_but_before_finds_it() -> None:
    """15.03 after 16.03 is next year's 15.03 forward, and this year's looking back."""
    clock = datetime(2026, 3, 16, 0, 19)
    assert parse_stamp("23:50", "15.03", clock) == datetime(2027, 3, 15, 23, 50)
    assert parse_stamp_before("23:50", "15.03", clock) == datetime(2026, 3, 15, 23, 50)


def test_leap_day_waits_for_a_leap_year() -> None:
    """29.02 after March 2026 is 29.02.2028; 2100 is skipped, being no leap year."""
    assert parse_stamp("12:00", "29.02", datetime(2026, 3, 1)) == datetime(2028, 2, 29, 12)
    assert parse_stamp("12:00", "29.02", datetime(2096, 3, 1)) == datetime(2104, 2, 29, 12)


@pytest.mark.parametrize(
    ("t", "d"),
    [
        ("25:00", "15.03"),
        ("12:60", "15.03"),
        ("9:05", "15.03"),
        ("12:00", "31.02"),
        ("12:00", "30.02"),
        ("12:00", "00.03"),
        ("12:00", "15.13"),
        ("12:00", "5.3"),
        ("12:00", "15/03"),
        ("", ""),
    ],
)
def test_invalid_stamps_are_none(t: str, d: str) -> None:
    """A time or day that does not exist is refused, never guessed at."""
    assert parse_stamp(t, d, datetime(2026, 3, 15)) is None
    assert parse_stamp_before(t, d, datetime(2026, 3, 15)) is None


def test_format_stamp_writes_zero_padded_fields() -> None:
    """format_stamp writes the stamp the way a message carries it."""
    assert format_stamp(datetime(2027, 1, 5, 7, 3)) == ("07:03", "05.01")
    assert describe_stamp(datetime(2027, 1, 5, 7, 3)) == "07:03 on 05.01"


@given(afters, st.integers(min_value=0, max_value=364 * 24 * 60))
def test_round_trip_within_a_year(after: datetime, ahead: int) -> None:
    """Any minute less than a year after the clock's day reads back as itself."""
    moment = after.replace(hour=0, minute=0) + timedelta(minutes=ahead)
    assert parse_stamp(*format_stamp(moment), after) == moment


@given(afters, valid_stamps)
def test_never_before_the_clock_day(after: datetime, stamp: tuple[str, str]) -> None:
    """Any real stamp lands on the clock's day or later, within about a year (or on a leap
    day), whatever midnight or new year lies between."""
    moment = parse_stamp(*stamp, after)
    assert moment is not None
    assert moment.date() >= after.date()
    if stamp[1] != "29.02":
        assert moment.date() - after.date() < timedelta(days=366)
    assert format_stamp(moment) == stamp


@given(afters)
def test_leap_day_is_the_earliest_one(after: datetime) -> None:
    """29.02 reads as the first leap day on or after the clock's day."""
    moment = parse_stamp("08:00", "29.02", after)
    assert moment is not None
    assert calendar.isleap(moment.year) and (moment.month, moment.day) == (2, 29)
    earlier = [
        y
        for y in range(after.year, moment.year)
        if calendar.isleap(y) and date(y, 2, 29) >= after.date()
    ]
    assert earlier == []


@given(afters, valid_stamps)
def test_before_is_never_after_the_clock_day(after: datetime, stamp: tuple[str, str]) -> None:
    """Read backwards, a stamp lands on the clock's day or earlier, and formats back."""
    moment = parse_stamp_before(*stamp, after)
    assert moment is not None
    assert moment.date() <= after.date()
    assert format_stamp(moment) == stamp


@given(afters, st.integers(min_value=0, max_value=5 * 24 * 60))
def test_day_windows_cover_every_minute_once(earliest: datetime, span: int) -> None:
    """The day windows from earliest to latest hold exactly the minutes between them."""
    latest = earliest + timedelta(minutes=span)
    windows = day_windows(earliest, latest)
    assert sum(last - first + 1 for _, first, last in windows) == span + 1
    assert windows[0][0] == earliest.date()
    assert windows[0][1] == earliest.hour * 60 + earliest.minute
    assert windows[-1][0] == latest.date()
    assert windows[-1][2] == latest.hour * 60 + latest.minute
    days = [day for day, _, _ in windows]
    assert days == [earliest.date() + timedelta(days=i) for i in range(len(days))]


def test_day_windows_empty_when_reversed() -> None:
    """No minute lies between a later earliest and an earlier latest."""
    assert day_windows(datetime(2026, 3, 15, 12), datetime(2026, 3, 15, 11)) == []


def test_day_windows_across_new_year() -> None:
    """A window from 31.12 into 01.01 names both days, the second in the next year."""
    windows = day_windows(datetime(2026, 12, 31, 23, 30), datetime(2027, 1, 1, 0, 15))
    assert windows == [(date(2026, 12, 31), 1410, 1439), (date(2027, 1, 1), 0, 15)]


@pytest.mark.parametrize(("low", "high"), [(10, 5), (-1, 5), (0, 365 * 24 * 60)])
def test_gap_refuses_impossible_bounds(low: int, high: int) -> None:
    """A gap must have 0 <= min <= max, and stay under a year (stamps have no year)."""
    with pytest.raises(ValueError, match="gap"):
        Gap(min_minutes=low, max_minutes=high)


def test_gap_bounds_as_timedeltas() -> None:
    """Gap exposes its bounds as durations for clock arithmetic."""
    gap = Gap(min_minutes=5, max_minutes=45)
    assert (gap.min, gap.max) == (timedelta(minutes=5), timedelta(minutes=45))


@pytest.mark.parametrize(
    ("minutes", "text"), [(0, "0 min"), (45, "45 min"), (125, "2 h 05 min"), (3000, "2 d 2 h")]
)
def test_describe_span(minutes: int, text: str) -> None:
    """Spans read the way a correction prompt can quote them."""
    assert describe_span(minutes) == text
