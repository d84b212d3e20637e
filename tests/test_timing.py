"""docs/scheduling.md at the library level: send windows and when lessons are due."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailer.errors import ConfigError, InvalidInput
from mailer.timing import (
    SendWindow,
    first_lesson_due,
    next_lesson_due,
    parse_instant,
    resumed_due,
)

# Zones whose clocks change (some by 30 minutes, some at midnight, one that stopped in 2022).
DST_ZONES = [
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "America/Santiago",
    "America/Havana",
    "America/St_Johns",
    "Asia/Tehran",
    "Africa/Casablanca",
]
# 'localtime' depends on the machine running the tests.
ALL_ZONES = sorted(available_timezones() - {"localtime"})
FIRST = datetime(2020, 1, 1)
LAST = datetime(2030, 12, 31)

zones = st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(ALL_ZONES)).map(ZoneInfo)
dst_zones = st.sampled_from(DST_ZONES).map(ZoneInfo)
instants = st.datetimes(min_value=FIRST, max_value=LAST, timezones=st.just(UTC))
# Whole hours are favoured so window starts land on DST gaps (01:00, 02:00, 00:00) often.
minutes_of_day = st.one_of(st.integers(0, 23).map(lambda h: h * 60), st.integers(0, 1439))
delays = st.integers(0, 10 * 24 * 60).map(lambda m: timedelta(minutes=m))
PROPERTY = settings(max_examples=300, deadline=None)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def windows(draw: st.DrawFn) -> SendWindow:
    """Any valid window: crossing midnight, ending at 24:00, or the whole day."""
    start = draw(minutes_of_day)
    end = draw(st.one_of(minutes_of_day.map(lambda m: m + 1), st.integers(1, 1440)))
    if end == start:
        end += 1
    return SendWindow.parse(f"{hhmm(start)}-{hhmm(end)}")


@st.composite
def dst_windows(draw: st.DrawFn) -> SendWindow:
    """Windows opening between 04:00 and 22:59: outside every DST gap and repeated hour."""
    start = draw(st.integers(4 * 60, 23 * 60 - 1))
    length = draw(st.integers(1, 20 * 60))
    end = start + length
    return SendWindow.parse(f"{hhmm(start)}-{hhmm(end if end <= 1440 else end - 1440)}")


# --- an independent restatement of "the window opens on local date d" -----------------------


def opening(day: date, window: SendWindow, zone: ZoneInfo) -> datetime:
    """The instant the window opens on local date `day` (zoneinfo resolves gaps with fold=0)."""
    return datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)


def exists(day: date, clock: time, zone: ZoneInfo) -> bool:
    """False when the wall-clock time `clock` is skipped on `day` (a DST gap)."""
    naive = datetime.combine(day, clock)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def first_opening(instant: datetime, window: SendWindow, zone: ZoneInfo) -> tuple[datetime, date]:
    """The earliest opening at or after `instant` (a day either side), and its date."""
    here = local_day(instant, zone)
    candidates = [
        (opening(here + timedelta(days=d), window, zone), here + timedelta(days=d))
        for d in range(-1, 3)
    ]
    return min(c for c in candidates if c[0] >= instant)


def assert_opens_window(due: datetime, day: date, window: SendWindow, zone: ZoneInfo) -> None:
    """`due` is the window start on local date `day`: 09:00 reads 09:00 unless 09:00 is skipped."""
    local = due.astimezone(zone)
    if exists(day, window.start, zone):
        assert (local.date(), local.time()) == (day, window.start), local.isoformat()
    else:
        assert due == opening(day, window, zone)


def transitions(zone: str) -> list[datetime]:
    """Days (UTC noon) on which `zone`'s UTC offset changes, 2020-2030."""
    tz = ZoneInfo(zone)
    days = [
        FIRST.replace(hour=12, tzinfo=UTC) + timedelta(days=i) for i in range((LAST - FIRST).days)
    ]
    return [
        b for a, b in pairwise(days) if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset()
    ]


TRANSITIONS = {zone: transitions(zone) for zone in DST_ZONES}


@st.composite
def before_a_transition(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    """A DST zone and a start 1-30 days before one of its clock changes."""
    name = draw(st.sampled_from(DST_ZONES))
    change = draw(st.sampled_from(TRANSITIONS[name]))
    before = draw(st.integers(2 * 24 * 60, 30 * 24 * 60).map(lambda m: timedelta(minutes=m)))
    return ZoneInfo(name), change - before


# --- SendWindow.parse -------------------------------------------------------------------------


def test_parse_default_window():
    """'09:00-20:00' is 09:00 up to (not including) 20:00 and prints back the same."""
    window = SendWindow.parse("09:00-20:00")
    assert (window.start, window.end) == (time(9), time(20))
    assert str(window) == "09:00-20:00"
    assert window.contains(time(9)) and window.contains(time(19, 59, 59))
    assert not window.contains(time(8, 59, 59)) and not window.contains(time(20))


def test_parse_window_crossing_midnight():
    """'22:00-06:00' is open late in the evening and early in the morning, closed at midday."""
    window = SendWindow.parse("22:00-06:00")
    assert (window.start, window.end) == (time(22), time(6))
    assert str(window) == "22:00-06:00"
    for inside in (time(22), time(23, 30), time(0), time(5, 59)):
        assert window.contains(inside), inside
    for outside in (time(6), time(12), time(21, 59)):
        assert not window.contains(outside), outside


def test_parse_whole_day_window():
    """'00:00-24:00' is open at every minute of the day and prints back as 00:00-24:00."""
    window = SendWindow.parse("00:00-24:00")
    assert str(window) == "00:00-24:00"
    assert all(window.contains(time(h, m)) for h in range(24) for m in (0, 30, 59))
    zone = ZoneInfo("Asia/Tokyo")
    start = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert first_lesson_due(start, window, zone) == datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def test_parse_window_ending_at_midnight():
    """'18:00-24:00' runs to the end of the day."""
    window = SendWindow.parse("18:00-24:00")
    assert window.contains(time(23, 59, 59)) and window.contains(time(18))
    assert not window.contains(time(0)) and not window.contains(time(17, 59))
    assert str(window) == "18:00-24:00"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9-20", "HH:MM-HH:MM"),
        ("25:00-26:00", "impossible"),
        ("09:60-10:00", "impossible"),
        ("24:00-24:00", "impossible"),
        ("09:00-24:30", "impossible"),
        ("09:00-09:00", "empty"),
        ("00:00-00:00", "empty"),
        ("", "HH:MM-HH:MM"),
        ("09:00 to 20:00", "HH:MM-HH:MM"),
    ],
)
def test_parse_rejects_bad_windows(text, reason):
    """A malformed, impossible or empty window is a ConfigError that quotes the value."""
    with pytest.raises(ConfigError) as caught:
        SendWindow.parse(text)
    message = str(caught.value)
    assert "send_window" in message and repr(text) in message and reason in message


@given(windows())
@PROPERTY
def test_parsed_windows_print_back_as_written(window):
    """Every valid window round-trips through str() and parse()."""
    assert SendWindow.parse(str(window)) == window


# --- worked examples (the properties below generalise them) ---------------------------------


def test_first_lesson_next_morning_and_weekly_across_spring_forward():
    """New York, Sat 10:00 EST start: lesson 1 Sun 09:00 EDT, lesson 2 a week later 09:00."""
    zone, window = ZoneInfo("America/New_York"), SendWindow.parse("09:00-20:00")
    start = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # Sat 10:00 EST, after the window opened
    due = first_lesson_due(start, window, zone)
    assert due == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)  # Sun 09:00 EDT (clocks changed 02:00)
    sent = due + timedelta(hours=3)
    assert next_lesson_due(sent, window, zone) == datetime(2026, 3, 15, 13, 0, tzinfo=UTC)


def test_next_lesson_across_fall_back_keeps_nine_oclock():
    """London, sent 09:00 BST on 20 Oct: the next is 27 Oct 09:00 GMT, 7 days and 1 hour later."""
    zone, window = ZoneInfo("Europe/London"), SendWindow.parse("09:00-20:00")
    sent = datetime(2026, 10, 20, 8, 0, tzinfo=UTC)
    due = next_lesson_due(sent, window, zone)
    assert due == datetime(2026, 10, 27, 9, 0, tzinfo=UTC)
    assert due.astimezone(zone).time() == time(9)


def test_start_exactly_at_the_opening_is_due_then():
    """A start at the very instant the window opens makes lesson 1 due at that instant."""
    zone, window = ZoneInfo("Asia/Kolkata"), SendWindow.parse("09:00-20:00")
    start = datetime(2026, 3, 2, 3, 30, tzinfo=UTC)  # 09:00 IST
    assert first_lesson_due(start, window, zone) == start
    assert first_lesson_due(start + timedelta(microseconds=1), window, zone) == start + timedelta(
        days=1
    )


def test_late_send_moves_the_next_lesson_not_catches_up():
    """Lesson sent three days late (outage): the next is 7 local days after the actual send."""
    zone, window = ZoneInfo("Australia/Sydney"), SendWindow.parse("09:00-20:00")
    sent = datetime(2026, 5, 13, 1, 0, tzinfo=UTC)  # Wed 11:00 AEST, three days after Sunday's due
    assert next_lesson_due(sent, window, zone) == datetime(2026, 5, 19, 23, 0, tzinfo=UTC)


def test_resume_waits_for_rule_two_and_for_the_next_window():
    """resume: the next window after now, unless rule 2's earliest date is later."""
    zone, window = ZoneInfo("Europe/Berlin"), SendWindow.parse("09:00-20:00")
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 13:00 CET, window open
    tomorrow = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    assert resumed_due(None, now, window, zone) == tomorrow
    later = datetime(2026, 3, 14, 8, 0, tzinfo=UTC)
    assert resumed_due(later, now, window, zone) == later
    earlier = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    assert resumed_due(earlier, now, window, zone) == tomorrow


# --- properties across zones, years and windows ---------------------------------------------


@given(zone=zones, start=instants, window=windows())
@example(
    zone=ZoneInfo("America/New_York"),
    start=datetime(2026, 3, 8, 5, tzinfo=UTC),
    window=SendWindow.parse("02:30-20:00"),
)
@example(
    zone=ZoneInfo("America/Santiago"),
    start=datetime(2026, 9, 5, 12, tzinfo=UTC),
    window=SendWindow.parse("00:00-06:00"),
)
@example(
    zone=ZoneInfo("Australia/Lord_Howe"),
    start=datetime(2026, 10, 3, 12, tzinfo=UTC),
    window=SendWindow.parse("02:00-20:00"),
)
@PROPERTY
def test_rule1_first_lesson_is_the_first_opening_at_or_after_start(zone, start, window):
    """Rule 1: lesson 1 is due at a window start, at or after the start, with none in between."""
    due = first_lesson_due(start, window, zone)
    assert due >= start
    expected, day = first_opening(start, window, zone)
    assert due == expected
    assert day in (local_day(start, zone), local_day(start, zone) + timedelta(days=1))
    assert_opens_window(due, day, window, zone)


@given(zone=zones, sent=instants, window=windows())
@PROPERTY
def test_rule2_next_lesson_opens_the_window_seven_local_days_after_sending(zone, sent, window):
    """Rule 2: the next lesson is due at the window start on sent's local date + 7 days."""
    due = next_lesson_due(sent, window, zone)
    day = local_day(sent, zone) + timedelta(days=7)
    assert_opens_window(due, day, window, zone)
    assert due > sent + timedelta(days=5)


@given(zone=zones, start=instants, window=windows(), late=st.lists(delays, min_size=5, max_size=5))
@PROPERTY
def test_rule2_consecutive_lessons_are_a_week_apart_however_late_they_went(
    zone, start, window, late
):
    """Rule 2: lesson k+1 is due >= 6 days 22 hours after lesson k and 7+ local dates later."""
    due = first_lesson_due(start, window, zone)
    dues = [due]
    for delay in late:
        sent = dues[-1] + delay
        dues.append(next_lesson_due(sent, window, zone))
        assert dues[-1] > sent
    for a, b in pairwise(dues):
        assert b - a >= timedelta(days=6, hours=22), (a, b)
        assert (local_day(b, zone) - local_day(a, zone)).days >= 7, (a, b)


@given(
    case=before_a_transition(), window=dst_windows(), late=st.lists(delays, min_size=5, max_size=5)
)
@PROPERTY
def test_rule6_every_due_across_a_clock_change_reads_the_window_start(case, window, late):
    """Rule 6: across DST changes each lesson is due at exactly the window start, local time."""
    zone, start = case
    due = first_lesson_due(start, window, zone)
    dues = [due]
    for delay in late:
        dues.append(next_lesson_due(dues[-1] + delay, window, zone))
    offsets = {d.astimezone(zone).utcoffset() for d in dues}
    assert len(offsets) > 1, "the six lessons should straddle a clock change"
    for d in dues:
        assert d.astimezone(zone).time() == window.start, d.astimezone(zone).isoformat()
        assert window.is_open(d, zone)


@given(case=before_a_transition(), window=dst_windows())
@PROPERTY
def test_rule6_on_time_sends_are_exactly_seven_local_days_apart(case, window):
    """Rule 6: sent on time, six lessons share weekday and time despite a clock change."""
    zone, start = case
    dues = [first_lesson_due(start, window, zone)]
    for _ in range(5):
        dues.append(next_lesson_due(dues[-1], window, zone))
    local = [d.astimezone(zone) for d in dues]
    assert [(b.date() - a.date()).days for a, b in pairwise(local)] == [7] * 5
    assert {d.time() for d in local} == {window.start}
    gaps = {b - a for a, b in pairwise(dues)}
    assert gaps - {timedelta(days=7)}, "some interval should absorb the clock change"


@given(zone=zones, earliest=st.none() | instants, now=instants, window=windows())
@PROPERTY
def test_rule5_resume_is_the_later_of_the_next_window_and_rule_two(zone, earliest, now, window):
    """Rule 5: after resume, due at the next opening, never before rule 2's earliest."""
    due = resumed_due(earliest, now, window, zone)
    next_window, _ = first_opening(now, window, zone)
    assert due >= next_window
    if earliest is None:
        assert due == next_window
    else:
        assert due >= earliest
        assert due in (earliest, next_window)


@given(zone=zones, instant=instants, window=windows())
@example(
    zone=ZoneInfo("UTC"),
    instant=datetime(2026, 3, 2, 20, tzinfo=UTC),
    window=SendWindow.parse("09:00-20:00"),
)
@example(
    zone=ZoneInfo("UTC"),
    instant=datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=UTC),
    window=SendWindow.parse("00:00-24:00"),
)
@PROPERTY
def test_rule3_is_open_matches_the_local_clock(zone, instant, window):
    """Rule 3: is_open is true exactly when the local wall-clock time lies in [start, end)."""
    local = instant.astimezone(zone)
    day = 24 * 3600
    seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    start = window.start.hour * 3600 + window.start.minute * 60
    end = window.end.hour * 3600 + window.end.minute * 60
    length = (end - start) % day or day  # start == end only for the whole day
    assert window.is_open(instant, zone) == ((seconds - start) % day < length)


# --- parse_instant ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:30:00+00:00", datetime(2026, 3, 2, 9, 30, tzinfo=UTC)),
        ("2026-03-02T09:30:00Z", datetime(2026, 3, 2, 9, 30, tzinfo=UTC)),
        ("2026-03-02T10:30:00+01:00", datetime(2026, 3, 2, 9, 30, tzinfo=UTC)),
        (" 2026-03-02T04:30:00-05:00 ", datetime(2026, 3, 2, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_instant_accepts_offsets_and_z(text, expected):
    """An ISO-8601 instant with an offset or 'Z' is parsed and returned in UTC."""
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-03-02T09:30:00", "needs a UTC offset"),
        ("2026-03-02", "needs a UTC offset"),
        ("next tuesday", "not an ISO-8601 instant"),
        ("2026-13-02T09:30:00+00:00", "not an ISO-8601 instant"),
        ("", "not an ISO-8601 instant"),
    ],
)
def test_parse_instant_rejects_naive_and_garbage(text, reason):
    """A time without an offset, or not a time at all, is InvalidInput naming what was wrong."""
    with pytest.raises(InvalidInput) as caught:
        parse_instant(text, "--now")
    message = str(caught.value)
    assert message.startswith(f"--now {text!r}") and reason in message
    assert "2026-03-02T09:30:00+00:00" in message
