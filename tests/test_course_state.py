"""Course state by hand and failures an operator can act on (issue 5, items 6 and 7).

`subscribers restart|jump|reminders`, a pause that shifts the remaining lessons,
`preview --timeline`, `test-send --all`, `deliveries list` and `send --retry-failed`,
all through the CLI at a real aiosmtpd server, on SQLite and PostgreSQL where the
database matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient

from clirun import listed, run, script, send
from mailer.runtime import Runtime
from mailer.web import courier_of, create_app
from mailserver import MailServer

ADA = "ada@example.org"
BO = "bo@example.org"
CY = "cy@example.org"
NY = "America/New_York"

# Monday 2 March 2026. Everyone is in UTC unless a test says otherwise, so the
# 09:00-20:00 window opens at 09:00Z and lesson k goes out on day 7*(k-1).
ADDED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def day(n: int, hour: int = 9, minute: int = 30) -> datetime:
    """`n` days after Monday 2 March 2026, at hour:minute UTC."""
    return (DAY0 + timedelta(days=n)).replace(hour=hour, minute=minute)


def iso(instant: datetime) -> str:
    return instant.isoformat()


# --- running the CLI ----------------------------------------------------------------------


@pytest.fixture
def mail_env(env: dict[str, str], smtp_server: MailServer) -> dict[str, str]:
    """CLI environment on SQLite, sending to the test SMTP server."""
    return {**env, "REKINDLE_SMTP_URL": smtp_server.url}


@pytest.fixture
def db_env(mail_env: dict[str, str], database_url: str) -> dict[str, str]:
    """`mail_env` on SQLite and on PostgreSQL."""
    return {**mail_env, "REKINDLE_DATABASE_URL": database_url}


def cli(env: dict[str, str], when: datetime, *args: str) -> Any:
    """Run a command at the instant `when`; it must succeed."""
    result = run({**env, "REKINDLE_NOW": iso(when)}, *args)
    assert result.exit_code == 0, result.output
    return result


def attempt(env: dict[str, str], when: datetime, *args: str) -> Any:
    """Run a command at the instant `when`, whatever its outcome."""
    return run({**env, "REKINDLE_NOW": iso(when)}, *args)


def add(env: dict[str, str], *emails: str, when: datetime = ADDED, zone: str = "UTC") -> None:
    for address in emails:
        cli(env, when, "subscribers", "add", address, "--timezone", zone)


def send_on(env: dict[str, str], *days: int, hour: int = 9, minute: int = 30) -> None:
    """One `send` on each of `days` (counted from DAY0) at hour:minute UTC."""
    for n in days:
        send(env, day(n, hour, minute))


# The days (from DAY0) on which lesson k and reminder k reach someone added at ADDED.
COURSE_DAYS = (0, 3, 7, 10, 14, 17, 21, 24, 28, 31, 35, 38)


def shown(env: dict[str, str], address: str) -> dict[str, Any]:
    result = run(env, "subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def history(env: dict[str, str], address: str) -> dict[str, dict[str, Any]]:
    """`subscribers show --json` deliveries keyed by key."""
    return {d["key"]: d for d in shown(env, address)["deliveries"]}


def received(server: MailServer, address: str, key: str) -> list[tuple[datetime, str]]:
    """(Date, Message-ID) of every copy of `key` that reached `address`, in order."""
    return [
        (m.message["Date"].datetime.astimezone(UTC), str(m.message["Message-ID"]))
        for m in server.to(address)
        if str(m.message["X-Rekindle-Key"]) == key
    ]


def sent_on(server: MailServer, address: str) -> list[tuple[str, date]]:
    """(key, UTC date) of every message `address` received, in order."""
    return [
        (str(m.message["X-Rekindle-Key"]), m.message["Date"].datetime.astimezone(UTC).date())
        for m in server.to(address)
    ]


def deliveries_list(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = run(env, "deliveries", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


ROW = re.compile(
    r"^(?P<dow>\w{3}) (?P<day>\d{4}-\d{2}-\d{2}) (?P<hm>\d{2}:\d{2})\s+(?P<zone>\S+)\s+(?P<key>\S+)"
)


def timeline(env: dict[str, str], address: str, when: datetime) -> tuple[list[str], list[tuple]]:
    """`preview --timeline`: the lines before the table, and (key, 'Dow YYYY-MM-DD HH:MM', zone)."""
    result = cli(env, when, "preview", "--timeline", address)
    lines = result.stdout.splitlines()
    head: list[str] = []
    rows: list[tuple] = []
    in_table = False
    for line in lines:
        if line.startswith("WHEN"):
            in_table = True
            continue
        if not in_table:
            head.append(line)
            continue
        m = ROW.match(line)
        assert m, f"not a timeline row: {line!r}"
        rows.append((m["key"], f"{m['dow']} {m['day']} {m['hm']}", m["zone"]))
    return head, rows


def local(instant: datetime, zone: str = "UTC") -> str:
    """How the timeline writes an instant: 'Mon 2026-03-02 09:00' in the subscriber's zone."""
    return f"{instant.astimezone(ZoneInfo(zone)):%a %Y-%m-%d %H:%M}"


# --- restart ------------------------------------------------------------------------------


def test_restart_after_three_lessons_resends_from_lesson_1_a_week_on_with_new_message_ids(
    db_env, smtp_server
):
    """Restart: lesson 1 again no sooner than rule 2 allows, weekly after, with new Message-IDs."""
    add(db_env, ADA)
    send_on(db_env, *COURSE_DAYS[:5])  # lessons 1-3, reminders 1-2
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2", "lesson-3"]
    first_ids = {k: received(smtp_server, ADA, k)[0][1] for k in smtp_server.lessons(ADA)}

    out = cli(db_env, day(15, 10, 0), "subscribers", "restart", ADA)
    # The next window is day 16, but rule 2 says a week after lesson 3 (day 14): day 21.
    assert "2026-03-23T09:00:00+00:00" in out.stdout
    me = listed(db_env)[ADA]
    assert (me["status"], me["lessons_sent"], me["next_lesson"]) == ("active", 0, 1)
    assert me["next_due"] == "2026-03-23T09:00:00+00:00"
    before = len(smtp_server.to(ADA))

    send_on(db_env, 16, 17, 20)  # reminder-3 (day 17) was queued for the old round: never sent
    assert len(smtp_server.to(ADA)) == before
    send(db_env, day(21))
    assert listed(db_env)[ADA]["lessons_sent"] == 1
    send_on(db_env, 24, 27, 28, 31, 34, 35)
    assert smtp_server.lessons(ADA) == [f"lesson-{k}" for k in (1, 2, 3, 1, 2, 3)]
    assert sent_on(smtp_server, ADA)[before:] == [
        ("lesson-1", day(21).date()),
        ("reminder-1", day(24).date()),
        ("lesson-2", day(28).date()),
        ("reminder-2", day(31).date()),
        ("lesson-3", day(35).date()),
    ]
    for key in ("lesson-1", "lesson-2", "lesson-3"):
        (_, first), (_, again) = received(smtp_server, ADA, key)
        assert again != first, key
    for key in ("reminder-1", "reminder-2"):
        (_, first), (_, again) = received(smtp_server, ADA, key)
        assert again != first, key

    me = listed(db_env)[ADA]
    assert (me["lessons_sent"], me["next_lesson"]) == (3, 4)
    rows = history(db_env, ADA)
    for key, message_id in first_ids.items():
        assert rows[f"r1/{key}"]["status"] == "sent"
        assert rows[f"r1/{key}"]["message_id"] == message_id
    assert rows["r1/reminder-3"]["status"] == "cancelled"
    assert rows["lesson-1"]["message_id"] == received(smtp_server, ADA, "lesson-1")[1][1]


def test_restarting_a_completed_subscriber_makes_them_active_on_lesson_1(db_env, smtp_server):
    """A subscriber who finished the course is active again after restart, and gets lesson 1."""
    add(db_env, ADA)
    send_on(db_env, *COURSE_DAYS)
    assert smtp_server.lessons(ADA) == [f"lesson-{k}" for k in range(1, 7)]
    assert listed(db_env)[ADA]["status"] == "completed"

    cli(db_env, day(38, 10, 0), "subscribers", "restart", ADA)
    me = listed(db_env)[ADA]
    assert (me["status"], me["lessons_sent"], me["next_lesson"]) == ("active", 0, 1)
    assert me["next_due"] == "2026-04-13T09:00:00+00:00"  # a week after lesson 6 (day 35)
    send_on(db_env, 39, 41, 42)
    assert smtp_server.lessons(ADA)[6:] == ["lesson-1"]
    assert sent_on(smtp_server, ADA)[-1] == ("lesson-1", day(42).date())


def test_restart_refuses_unsubscribed_bounced_pending_and_unknown_people(mail_env, smtp_server):
    """Restart exits 1 for anyone not on the course, and changes nothing for them."""
    add(mail_env, ADA, BO)
    cli(mail_env, ADDED, "subscribers", "add", CY, "--double-opt-in")
    cli(mail_env, ADDED, "subscribers", "unsubscribe", ADA)
    smtp_server.script.rcpt[BO] = "550 5.1.1 <bo@example.org>: no such user"
    send(mail_env, DAY0)
    before = {
        k: (v["status"], v["next_lesson"], v["next_due"]) for k, v in listed(mail_env).items()
    }
    assert {k: v[0] for k, v in before.items()} == {
        ADA: "unsubscribed",
        BO: "bounced",
        CY: "pending",
    }

    for address, status in ((ADA, "unsubscribed"), (BO, "bounced"), (CY, "pending")):
        result = attempt(mail_env, day(1), "subscribers", "restart", address)
        assert result.exit_code == 1, (address, result.output)
        assert status in result.stderr
    result = attempt(mail_env, day(1), "subscribers", "restart", "nobody@example.org")
    assert result.exit_code == 1
    assert "nobody@example.org" in result.stderr

    after = {k: (v["status"], v["next_lesson"], v["next_due"]) for k, v in listed(mail_env).items()}
    assert after == before
    send_on(mail_env, 1, 3, 7, 8)
    assert smtp_server.lessons(ADA) == smtp_server.lessons(BO) == smtp_server.lessons(CY) == []


def test_restart_of_an_unsubscribed_person_as_a_script_is_one_line_and_exit_1(
    mail_env, smtp_server
):
    """The installed script refuses a restart for someone who left with one line, no traceback."""
    add(mail_env, ADA)
    cli(mail_env, ADDED, "subscribers", "unsubscribe", ADA)
    done = script({**mail_env, "REKINDLE_NOW": iso(DAY0)}, "subscribers", "restart", ADA)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unsubscribed" in lines[0], done.stderr
    assert listed(mail_env)[ADA]["status"] == "unsubscribed"


# --- jump ---------------------------------------------------------------------------------


def test_jump_forward_skips_lessons_2_and_3_and_the_stale_reminder_never_arrives(
    db_env, smtp_server
):
    """After lesson 1, `jump 4`: lesson 4 a week after lesson 1, then 5 and 6; never 2, 3."""
    add(db_env, ADA)
    send(db_env, DAY0)
    out = cli(db_env, day(1, 10, 0), "subscribers", "jump", ADA, "4")
    assert "lesson 4" in out.stdout and "2026-03-09T09:00:00+00:00" in out.stdout
    me = listed(db_env)[ADA]
    assert (me["next_lesson"], me["next_due"]) == (4, "2026-03-09T09:00:00+00:00")

    send_on(db_env, 3, 6, 7, 10, 14, 17, 21, 24, 28, 35)
    assert sent_on(smtp_server, ADA) == [
        ("lesson-1", day(0).date()),
        # reminder-1 (day 3) belonged to the old position: cancelled, never sent
        ("lesson-4", day(7).date()),
        ("reminder-4", day(10).date()),
        ("lesson-5", day(14).date()),
        ("reminder-5", day(17).date()),
        ("lesson-6", day(21).date()),
        ("reminder-6", day(24).date()),
    ]
    me = listed(db_env)[ADA]
    assert (me["status"], me["lessons_sent"]) == ("completed", 4)
    assert history(db_env, ADA)["reminder-1"]["status"] == "cancelled"


def test_jump_back_resends_lessons_2_and_3_with_new_message_ids(db_env, smtp_server):
    """After lesson 3, `jump 2`: lessons 2 and 3 go out again (new Message-IDs), then 4-6."""
    add(db_env, ADA)
    send_on(db_env, *COURSE_DAYS[:5])
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2", "lesson-3"]
    before = len(smtp_server.to(ADA))

    out = cli(db_env, day(15, 10, 0), "subscribers", "jump", ADA, "2")
    assert "2026-03-23T09:00:00+00:00" in out.stdout  # a week after lesson 3, not sooner
    me = listed(db_env)[ADA]
    assert (me["lessons_sent"], me["next_lesson"]) == (1, 2)

    send_on(db_env, 17, 20, 21, 24, 27, 28, 31, 35, 38, 42, 45, 49)
    assert sent_on(smtp_server, ADA)[before:] == [
        # reminder-3 (queued for day 17) belonged to the old position: never sent
        ("lesson-2", day(21).date()),
        ("reminder-2", day(24).date()),
        ("lesson-3", day(28).date()),
        ("reminder-3", day(31).date()),
        ("lesson-4", day(35).date()),
        ("reminder-4", day(38).date()),
        ("lesson-5", day(42).date()),
        ("reminder-5", day(45).date()),
        ("lesson-6", day(49).date()),
    ]
    for key in ("lesson-2", "lesson-3", "reminder-2"):
        (_, first), (_, again) = received(smtp_server, ADA, key)
        assert again != first, key
    assert len(received(smtp_server, ADA, "lesson-1")) == 1
    me = listed(db_env)[ADA]
    assert (me["status"], me["lessons_sent"]) == ("completed", 6)
    rows = history(db_env, ADA)
    assert rows["r1/lesson-2"]["status"] == rows["r1/lesson-3"]["status"] == "sent"
    assert rows["r1/reminder-3"]["status"] == "cancelled"


@pytest.mark.parametrize("week", ["0", "7", "-1"])
def test_jump_outside_the_course_exits_1_and_changes_nothing(mail_env, smtp_server, week):
    """`jump` to a lesson the course does not have exits 1 naming the range; nothing moves."""
    add(mail_env, ADA)
    send(mail_env, DAY0)
    before = listed(mail_env)[ADA]
    result = attempt(mail_env, day(1), "subscribers", "jump", ADA, "--", week)
    assert result.exit_code == 1, result.output
    assert "1 to 6" in result.stderr
    assert listed(mail_env)[ADA] == before
    send(mail_env, day(3))
    assert smtp_server.keys(ADA) == ["lesson-1", "reminder-1"]  # the reminder still stands


def test_jump_as_a_script_refuses_lesson_7_with_one_line(mail_env):
    """The installed script answers `jump EMAIL 7` with exit 1 and one line, no traceback."""
    add(mail_env, ADA)
    done = script({**mail_env, "REKINDLE_NOW": iso(DAY0)}, "subscribers", "jump", ADA, "7")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- a pause shifts the remaining lessons -------------------------------------------------


def test_a_ten_day_pause_shifts_every_remaining_lesson_and_reminder_by_ten_days(
    db_env, smtp_server
):
    """Paused just before lesson 3 is due, resumed 10 days on: the rest moves by 10 days."""
    add(db_env, ADA)
    send_on(db_env, 0, 3, 7, 10, hour=9, minute=0)  # lessons 1-2, reminders 1-2, at 09:00Z
    pause_at, resume_at = day(14, 8, 0), day(24, 8, 0)
    rest = [f"{kind}-{k}" for k in range(3, 7) for kind in ("lesson", "reminder")]
    days = (14, 17, 21, 24, 28, 31, 35, 38)
    before = [(key, local(day(n, 9, 0)), "UTC") for key, n in zip(rest, days, strict=True)]
    shifted = [(key, local(day(n + 10, 9, 0)), "UTC") for key, n in zip(rest, days, strict=True)]
    assert timeline(db_env, ADA, pause_at)[1] == before
    assert before[0] == ("lesson-3", "Mon 2026-03-16 09:00", "UTC")

    cli(db_env, pause_at, "subscribers", "pause", ADA)
    head, paused = timeline(db_env, ADA, pause_at + timedelta(days=5))
    assert any("paused" in line and "if resumed now" in line for line in head), head
    assert paused[0] == ("lesson-3", "Sat 2026-03-21 09:00", "UTC")

    send_on(db_env, 14, 17, 21, 23, hour=9, minute=0)  # paused: nothing goes out
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2"]

    cli(db_env, resume_at, "subscribers", "resume", ADA)
    assert timeline(db_env, ADA, resume_at)[1] == shifted
    assert shifted[0] == ("lesson-3", "Thu 2026-03-26 09:00", "UTC")

    send_on(db_env, 24, 27, 30, 31, 34, 37, 38, 41, 44, 45, 48, hour=9, minute=0)
    got = [
        (str(m.message["X-Rekindle-Key"]), local(m.message["Date"].datetime))
        for m in smtp_server.to(ADA)
    ]
    assert got[4:] == [(key, when) for key, when, _ in shifted]


# --- preview --timeline -------------------------------------------------------------------


def ny_course(first: date) -> list[tuple[str, str]]:
    """Independently: lesson k at 09:00 New York time 7*(k-1) days after `first`,
    reminder k at 09:00 three days after lesson k."""
    zone = ZoneInfo(NY)
    rows = []
    for k in range(1, 7):
        lesson_day = first + timedelta(days=7 * (k - 1))
        for key, d in ((f"lesson-{k}", lesson_day), (f"reminder-{k}", lesson_day + timedelta(3))):
            rows.append((key, f"{datetime.combine(d, time(9), tzinfo=zone):%a %Y-%m-%d %H:%M}"))
    return rows


def test_timeline_in_new_york_across_the_march_dst_change_matches_the_runs(db_env, smtp_server):
    """The timeline names 09:00 New York time for every message, across DST, and the runs agree."""
    start = datetime(2026, 2, 23, 12, 0, tzinfo=UTC)  # Monday, 07:00 EST
    add(db_env, ADA, when=start, zone=NY)
    head, planned = timeline(db_env, ADA, start)
    assert head == []
    expected = ny_course(date(2026, 2, 23))
    assert [(key, when) for key, when, _ in planned] == expected
    assert {zone for _, _, zone in planned} == {NY}
    # Spelled out: 14:00Z while New York is on EST, 13:00Z from 8 March (EDT).
    assert expected[2] == ("lesson-2", "Mon 2026-03-02 09:00")
    assert expected[4] == ("lesson-3", "Mon 2026-03-09 09:00")

    utc_instants = [datetime(2026, 2, 23, 14), datetime(2026, 2, 26, 14)]
    utc_instants += [datetime(2026, 3, 2, 14), datetime(2026, 3, 5, 14)]
    edt = datetime(2026, 3, 9, 13)
    utc_instants += [edt + timedelta(days=7 * i + d) for i in range(4) for d in (0, 3)]
    # Send exactly when the timeline says: each run delivers exactly the message it names.
    for (key, _), instant in zip(expected, utc_instants, strict=True):
        instant = instant.replace(tzinfo=UTC)
        assert send(db_env, instant - timedelta(minutes=1))["sent"] == 0, key  # not a minute early
        report = send(db_env, instant)
        assert report["sent"] == 1, (key, report)
        assert smtp_server.keys(ADA)[-1] == key
        if key == "lesson-2":
            # Mid-course, the queued reminder and the lessons still ahead, in local time.
            _, rest = timeline(db_env, ADA, instant + timedelta(hours=1))
            assert [(k, w) for k, w, _ in rest] == expected[3:]
    assert listed(db_env)[ADA]["status"] == "completed"


def test_timeline_of_a_completed_or_unsubscribed_subscriber_has_nothing_scheduled(
    mail_env, smtp_server
):
    """Completed (after the last reminder) and unsubscribed people: 'nothing more is scheduled'."""
    add(mail_env, ADA, BO)
    send_on(mail_env, *COURSE_DAYS[:3])
    cli(mail_env, day(7, 12), "subscribers", "unsubscribe", BO)  # mid-course, after lesson 2
    send_on(mail_env, *COURSE_DAYS[3:])
    assert listed(mail_env)[ADA]["status"] == "completed"
    for address in (ADA, BO):
        result = cli(mail_env, day(39), "preview", "--timeline", address)
        assert "nothing more is scheduled" in result.stdout, result.stdout
        assert "WHEN" not in result.stdout


def test_timeline_right_after_lesson_6_still_lists_its_reminder_which_then_arrives(
    mail_env, smtp_server
):
    """After lesson 6 the subscriber is completed, but reminder-6 is still to come: it is listed."""
    add(mail_env, ADA)
    send_on(mail_env, *COURSE_DAYS[:-1])
    assert listed(mail_env)[ADA]["status"] == "completed"
    result = cli(mail_env, day(35, 12), "preview", "--timeline", ADA)
    assert "reminder-6" in result.stdout, result.stdout
    assert "Thu 2026-04-09 09:00" in result.stdout
    send(mail_env, day(38))
    assert smtp_server.keys(ADA)[-1] == "reminder-6"


def test_reminders_off_leaves_no_reminder_rows_in_the_timeline_and_none_arrives(
    mail_env, smtp_server
):
    """`reminders off` (even with a reminder already queued): no reminder rows, none sent."""
    add(mail_env, ADA, BO)
    cli(mail_env, ADDED, "subscribers", "reminders", BO, "off")
    _, planned = timeline(mail_env, BO, ADDED)
    assert [key for key, _, _ in planned] == [f"lesson-{k}" for k in range(1, 7)]

    send(mail_env, DAY0)  # lesson 1 to both; reminder-1 queued for ada
    out = cli(mail_env, day(1), "subscribers", "reminders", ADA, "off")
    assert "off" in out.stdout
    _, planned = timeline(mail_env, ADA, day(1))
    assert [key for key, _, _ in planned] == [f"lesson-{k}" for k in range(2, 7)]

    send_on(mail_env, 3, 7, 10, 14)
    assert smtp_server.keys(ADA) == smtp_server.keys(BO) == ["lesson-1", "lesson-2", "lesson-3"]

    # Back on after lesson 3: its nudge was never queued; lesson 4's is the next one.
    cli(mail_env, day(14, 12), "subscribers", "reminders", ADA, "on")
    _, planned = timeline(mail_env, ADA, day(14, 12))
    assert [key for key, _, _ in planned][:2] == ["lesson-4", "reminder-4"]
    send_on(mail_env, 17, 21, 24)
    assert smtp_server.keys(ADA)[3:] == ["lesson-4", "reminder-4"]


def test_timeline_with_an_unknown_address_exits_1(mail_env):
    """`preview --timeline` for someone who is not a subscriber exits 1 naming the address."""
    result = attempt(mail_env, ADDED, "preview", "--timeline", "nobody@example.org")
    assert result.exit_code == 1
    assert "nobody@example.org" in result.stderr


# --- test-send --all ----------------------------------------------------------------------

WHOLE_COURSE = ["confirm", "welcome"] + [
    f"{kind}-{k}" for k in range(1, 7) for kind in ("lesson", "reminder")
]


def test_test_send_all_delivers_the_whole_course_in_order_and_records_nothing(
    mail_env, smtp_server
):
    """`test-send EMAIL --all`: 14 messages in course order, one connection, no ledger rows."""
    cli(mail_env, ADDED, "subscribers", "add", ADA, "--name", "Ada Lovelace")
    before = listed(mail_env)[ADA]
    result = cli(mail_env, DAY0, "test-send", ADA, "--all")
    assert "14 messages" in result.stdout

    assert smtp_server.keys(ADA) == WHOLE_COURSE
    assert len(smtp_server.messages) == 14
    assert smtp_server.connections == 1
    # The confirmation never carries a name (it is not yet confirmed); the rest greet Ada.
    named = [m for m in smtp_server.messages if str(m.message["X-Rekindle-Key"]) != "confirm"]
    assert len(named) == 13
    assert all("Ada" in str(m.message["To"]) for m in named)
    assert len({str(m.message["Message-ID"]) for m in smtp_server.messages}) == 14

    status = json.loads(cli(mail_env, DAY0, "status", "--json").stdout)
    assert status["deliveries"] == {}
    assert listed(mail_env)[ADA] == before
    assert shown(mail_env, ADA)["deliveries"] == []
    # The course itself is untouched: lesson 1 still goes out on schedule.
    send(mail_env, DAY0)
    assert smtp_server.keys(ADA)[14:] == ["lesson-1"]


def test_test_send_all_to_an_address_that_is_not_a_subscriber(mail_env, smtp_server):
    """An operator's own inbox needs no subscription: it gets the 14 messages, nobody is stored."""
    cli(mail_env, DAY0, "test-send", "me@example.net", "--all")
    assert smtp_server.keys("me@example.net") == WHOLE_COURSE
    assert listed(mail_env) == {}


@pytest.mark.parametrize(
    ("args", "why"),
    [((ADA,), "neither WEEK nor --all"), ((ADA, "1", "--all"), "both WEEK and --all")],
)
def test_test_send_needs_exactly_one_of_week_and_all(mail_env, smtp_server, args, why):
    """`test-send EMAIL` with neither or both of WEEK and --all is a usage error (exit 2)."""
    done = script({**mail_env, "REKINDLE_NOW": iso(DAY0)}, "test-send", *args)
    assert done.returncode == 2, (why, done.stderr)
    assert "Traceback" not in done.stderr
    assert "--all" in done.stderr
    assert smtp_server.messages == []


# --- deliveries list ----------------------------------------------------------------------


def failing_setup(env: dict[str, str], server: MailServer) -> None:
    """ada's lesson 1 gets 554 at DATA (day 0); bo's lesson 2 gets 550 at RCPT (day 7)."""
    add(env, ADA, BO, CY)
    server.script.data.append("554 5.6.0 Message content rejected")
    assert send(env, DAY0)["failed"] == 1
    send(env, day(3))
    server.script.rcpt[BO] = "550 5.1.1 <bo@example.org>: Recipient address rejected"
    report = send(env, day(7))
    assert (report["failed"], report["bounced"]) == (1, 1)
    del server.script.rcpt[BO]


def test_deliveries_list_failed_shows_each_failure_with_its_last_reply_newest_first(
    db_env, smtp_server
):
    """`deliveries list --failed --json`: the 550 and the 554 with their replies, newest first."""
    failing_setup(db_env, smtp_server)
    rows = deliveries_list(db_env, "--failed")
    assert [(r["email"], r["key"], r["status"]) for r in rows] == [
        (BO, "lesson-2", "failed"),
        (ADA, "lesson-1", "failed"),
    ]
    assert rows[0]["last_reply"].startswith("550")
    assert "Recipient address rejected" in rows[0]["last_reply"]
    assert rows[0]["subscriber_status"] == "bounced"
    assert rows[1]["last_reply"].startswith("554")
    assert "Message content rejected" in rows[1]["last_reply"]
    assert rows[1]["subscriber_status"] == "active"
    assert rows[0]["updated_at"] > rows[1]["updated_at"]

    assert deliveries_list(db_env, "--failed", "--key", "lesson-1") == [rows[1]]
    assert deliveries_list(db_env, "--status", "failed") == rows
    sent = deliveries_list(db_env, "--status", "sent", "--key", "lesson-2")
    assert sorted(r["email"] for r in sent) == [ADA, CY]
    assert {r["status"] for r in sent} == {"sent"}
    assert {r["email"] for r in deliveries_list(db_env, "--status", "sent")} == {ADA, BO, CY}

    table = run(db_env, "deliveries", "list", "--failed")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["WHEN", "EMAIL", "KEY"]
    assert BO in lines[1] and "550" in lines[1]
    assert ADA in lines[2] and "554" in lines[2]


def test_deliveries_list_rejects_an_unknown_status(mail_env):
    """`deliveries list --status nonsense` is a usage error (exit 2)."""
    result = run(mail_env, "deliveries", "list", "--status", "nonsense")
    assert result.exit_code == 2


# --- send --retry-failed ------------------------------------------------------------------


def test_retry_failed_puts_the_554_lesson_back_and_the_course_continues_weekly(db_env, smtp_server):
    """A lesson refused at DATA goes out again (same Message-ID) and the course resumes weekly."""
    add(db_env, ADA, BO)
    smtp_server.script.data.append("554 5.6.0 Message content rejected")
    assert send(db_env, DAY0)["failed"] == 1  # ada's lesson 1; bo's goes out
    assert smtp_server.lessons(ADA) == []
    failed_id = history(db_env, ADA)["lesson-1"]["message_id"]

    result = run(db_env, "send", "--now", iso(day(1, 8, 30)), "--retry-failed", "--json")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr
    assert "1 failed deliveries back in the queue" in result.stderr
    assert deliveries_list(db_env, "--failed") == []
    me = listed(db_env)[ADA]
    assert (me["next_lesson"], me["next_due"]) == (1, "2026-03-03T09:00:00+00:00")

    send_on(db_env, 1, 4, 7, 8, 11, 15, 18, 22)
    assert sent_on(smtp_server, ADA) == [
        ("lesson-1", day(1).date()),
        ("reminder-1", day(4).date()),
        ("lesson-2", day(8).date()),
        ("reminder-2", day(11).date()),
        ("lesson-3", day(15).date()),
        ("reminder-3", day(18).date()),
        ("lesson-4", day(22).date()),
    ]
    assert received(smtp_server, ADA, "lesson-1")[0][1] == failed_id
    assert history(db_env, ADA)["lesson-1"]["status"] == "sent"
    assert listed(db_env)[ADA]["lessons_sent"] == 4
    # bo was never touched: his course kept its own rhythm.
    assert smtp_server.lessons(BO) == ["lesson-1", "lesson-2", "lesson-3", "lesson-4"]
    assert sent_on(smtp_server, BO)[0] == ("lesson-1", day(0).date())


def test_retry_failed_skips_the_bounced_and_the_lesson_the_course_moved_past_with_warnings(
    db_env, smtp_server
):
    """The 550'd (bounced) lesson and a failed lesson already followed by the next stay failed."""
    failing_setup(db_env, smtp_server)  # ada: lesson-1 554 then lesson-2 sent; bo bounced
    failed_before = deliveries_list(db_env, "--failed")

    result = run(db_env, "send", "--now", iso(day(8)), "--retry-failed", "--json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    assert len(warnings) == 2, result.stderr
    assert any(BO in w and "lesson-2" in w and "bounced" in w for w in warnings), warnings
    assert any(ADA in w and "lesson-1" in w for w in warnings), warnings
    assert json.loads(result.stdout)["sent"] == 0

    assert deliveries_list(db_env, "--failed") == failed_before
    assert listed(db_env)[BO]["status"] == "bounced"
    send_on(db_env, 10, 14, 17, 21)
    assert smtp_server.lessons(ADA) == ["lesson-2", "lesson-3", "lesson-4"]
    assert smtp_server.lessons(BO) == ["lesson-1"]


def test_dry_run_with_retry_failed_changes_nothing(db_env, smtp_server):
    """`send --dry-run --retry-failed` leaves the failures failed and sends nothing."""
    add(db_env, ADA)
    smtp_server.script.data.append("554 5.6.0 Message content rejected")
    send(db_env, DAY0)
    failed = deliveries_list(db_env, "--failed")
    before = listed(db_env)[ADA]

    result = run(db_env, "send", "--now", iso(day(1, 8, 30)), "--dry-run", "--retry-failed")
    assert result.exit_code == 0, result.output
    assert deliveries_list(db_env, "--failed") == failed
    assert listed(db_env)[ADA] == before
    assert smtp_server.messages == []


@contextmanager
def web_client(env: dict[str, str]) -> Iterator[FlaskClient]:
    """The real web face on `env` (its clock is env['REKINDLE_NOW'] at each request)."""
    runtime = Runtime(config_path=None, env=env)
    app = create_app(runtime)
    try:
        yield app.test_client()
    finally:
        courier_of(app).close()  # the welcome has been tried
        runtime.close()


def confirm_path(server: MailServer, address: str) -> str:
    text = server.to(address)[-1].message.get_body(("plain",)).get_content()
    match = re.search(r"https://rekindle\.example\.org(/confirm/[A-Za-z0-9_\-.]+)", text)
    assert match, text
    return match.group(1)


def test_retry_failed_requeues_a_failed_broadcast_and_welcome_and_each_arrives_once(
    db_env, smtp_server, tmp_path: Path
):
    """A broadcast and a welcome refused at DATA go out once after `send --retry-failed`."""
    add(db_env, ADA)
    send(db_env, DAY0)
    body = tmp_path / "note.md"
    body.write_text("Hello {{ first_name }},\n\nA short note between lessons.\n", encoding="utf-8")
    broadcast_id = cli(
        db_env, day(1), "broadcast", "create", "--subject", "A note", "--body", str(body)
    ).stdout.strip()
    cli(db_env, day(1), "broadcast", "send", broadcast_id)
    key = f"broadcast-{broadcast_id}"
    smtp_server.script.data.append("554 5.7.1 Spam detected")
    assert send(db_env, day(1))["failed"] == 1

    # bo signs up with double opt-in; his welcome is refused when he confirms.
    cli(db_env, day(1), "subscribers", "add", BO, "--double-opt-in")
    web = {**db_env, "REKINDLE_NOW": iso(day(1, 10))}
    smtp_server.script.data.append("554 5.7.1 Spam detected")
    with web_client(web) as client:
        assert client.post(confirm_path(smtp_server, BO)).status_code == 200
    assert smtp_server.keys(BO) == ["confirm"]
    failed = {(r["email"], r["key"]) for r in deliveries_list(db_env, "--failed")}
    assert failed == {(ADA, key), (BO, "welcome")}

    result = run(db_env, "send", "--now", iso(day(1, 11)), "--retry-failed", "--json")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr
    assert json.loads(result.stdout)["sent"] == 2
    assert smtp_server.keys(ADA) == ["lesson-1", key]
    assert smtp_server.keys(BO) == ["confirm", "welcome"]
    assert deliveries_list(db_env, "--failed") == []

    send(db_env, day(1, 12))
    send(db_env, day(1, 12), "--retry-failed")
    assert smtp_server.keys(ADA) == ["lesson-1", key]
    assert smtp_server.keys(BO) == ["confirm", "welcome"]
    assert history(db_env, ADA)[key]["status"] == "sent"
    assert history(db_env, BO)["welcome"]["status"] == "sent"


def test_retry_failed_leaves_a_failure_from_an_earlier_round_alone_with_a_warning(
    db_env, smtp_server
):
    """A failed lesson archived by `restart` (r1/lesson-1) is not 'put back': it is skipped."""
    add(db_env, ADA)
    smtp_server.script.data.append("554 5.6.0 Message content rejected")
    send(db_env, DAY0)
    send_on(db_env, 7)  # lesson 2
    cli(db_env, day(8), "subscribers", "restart", ADA)
    failed = deliveries_list(db_env, "--failed")
    assert [(r["email"], r["key"]) for r in failed] == [(ADA, "r1/lesson-1")]

    result = run(db_env, "send", "--now", iso(day(8, 10)), "--retry-failed", "--json")
    assert result.exit_code == 0, result.output
    assert "back in the queue" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning")]
    assert len(warnings) == 1 and "r1/lesson-1" in warnings[0], result.stderr
    assert deliveries_list(db_env, "--failed") == failed
