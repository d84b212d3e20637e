"""The reader's pace from the operator's side (issue 14): `subscribers pause --weeks`,
`subscribers set --timezone/--time-of-day`, `evening_window`, the history `subscribers show`
lists and what `preview --timeline` and `status` say, all checked against what `send`
delivers to a real aiosmtpd server at the instants docs/scheduling.md names. SQLite and
PostgreSQL where the database matters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clirun import listed, run, script, send
from mailserver import MailServer

ADA, BO = "ada@example.org", "bo@example.org"
# Monday 2 March 2026; the morning window opens at 09:00, the evening one at 18:00.
ADDED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def day(n: int, hour: int = 9, minute: int = 30) -> datetime:
    """`n` days after Monday 2 March 2026, at hour:minute UTC."""
    return (DAY0 + timedelta(days=n)).replace(hour=hour, minute=minute)


def at(env: dict[str, str], when: datetime, *args: str, code: int = 0) -> Any:
    """Run a command at the instant `when`; it must exit with `code`."""
    result = run({**env, "REKINDLE_NOW": when.isoformat()}, *args)
    assert result.exit_code == code, (args, result.output)
    return result


def due(env: dict[str, str], address: str) -> datetime | None:
    """`subscribers list --json`'s next_due, as an instant."""
    text = listed(env)[address]["next_due"]
    return datetime.fromisoformat(text) if text else None


def shown(env: dict[str, str], address: str) -> dict[str, Any]:
    result = run(env, "subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def local(zone: str, y: int, mo: int, d: int, h: int) -> datetime:
    return datetime(y, mo, d, h, tzinfo=ZoneInfo(zone))


@pytest.fixture
def mail_env(env: dict[str, str], smtp_server: MailServer) -> dict[str, str]:
    return {**env, "REKINDLE_SMTP_URL": smtp_server.url}


@pytest.fixture
def db_env(mail_env: dict[str, str], database_url: str) -> dict[str, str]:
    """`mail_env` on SQLite and on PostgreSQL."""
    return {**mail_env, "REKINDLE_DATABASE_URL": database_url}


def started(env: dict[str, str], *emails: str, zone: str = "UTC") -> None:
    """Add each at ADDED in `zone`; lesson 1 goes out at their first window (09:00 local)."""
    for address in emails:
        at(env, ADDED, "subscribers", "add", address, "--timezone", zone)


# --- a week off ---------------------------------------------------------------------------


def test_pause_weeks_moves_the_next_lesson_on_and_the_rest_follow_weekly(db_env, smtp_server):
    """`pause --weeks 1` after lesson 1: lesson 2 a week later (day 14), lesson 3 on day 21;
    the subscriber stays active; the history says the operator did it with the CLI."""
    started(db_env, ADA)
    send(db_env, day(0))
    assert due(db_env, ADA) == day(7, 9, 0)
    done = at(db_env, day(1), "subscribers", "pause", ADA, "--weeks", "1")
    assert "lesson 2 moves 1 week(s) on" in done.stdout
    row = listed(db_env)[ADA]
    assert row["status"] == "active" and due(db_env, ADA) == day(14, 9, 0)

    for n in (3, 7, 10, 13):
        send(db_env, day(n))
    assert smtp_server.keys(ADA) == ["lesson-1", "reminder-1"]  # no lesson 2 on day 7
    send(db_env, day(14, 8, 59))
    assert smtp_server.lessons(ADA) == ["lesson-1"]  # not a minute early
    send(db_env, day(14, 9, 0))
    send(db_env, day(21, 9, 0))
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2", "lesson-3"]
    dates = [m.message["Date"].datetime for m in smtp_server.to(ADA)]
    assert dates[-2:] == [day(14, 9, 0), day(21, 9, 0)]

    (entry,) = shown(db_env, ADA)["history"]
    assert (entry["by"], entry["via"], entry["change"]) == ("operator", "cli", "week off")
    assert entry["at"] == day(1).isoformat()
    assert "lesson 2 moves a week on, to Mon 2026-03-16 09:00 UTC" in entry["detail"]


def test_weeks_off_stop_at_four_per_lesson_and_start_again_with_the_next(mail_env, smtp_server):
    """Three weeks and then two are refused (one line, exit 1, nothing changes); a fourth is
    fine, a fifth is not; once that lesson went out, the next one may have four again."""
    started(mail_env, ADA)
    send(mail_env, day(0))
    at(mail_env, day(1), "subscribers", "pause", ADA, "--weeks", "3")
    assert due(mail_env, ADA) == day(28, 9, 0)
    refused = at(mail_env, day(1), "subscribers", "pause", ADA, "--weeks", "2", code=1)
    assert "3 week(s) off already; 1 more at most" in refused.output
    assert due(mail_env, ADA) == day(28, 9, 0)
    at(mail_env, day(1), "subscribers", "pause", ADA, "--weeks", "1")
    assert due(mail_env, ADA) == day(35, 9, 0)
    at(mail_env, day(1), "subscribers", "pause", ADA, "--weeks", "1", code=1)
    assert at(mail_env, day(1), "subscribers", "pause", ADA, "--weeks", "5", code=2)

    send(mail_env, day(35))
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2"]
    at(mail_env, day(36), "subscribers", "pause", ADA, "--weeks", "4")
    assert due(mail_env, ADA) == day(42 + 28, 9, 0)


def test_weeks_off_need_an_active_subscriber(mail_env):
    """A paused or unsubscribed subscriber cannot take weeks off: exit 1, one line, as a script."""
    started(mail_env, ADA, BO)
    at(mail_env, day(1), "subscribers", "pause", ADA)
    at(mail_env, day(1), "subscribers", "unsubscribe", BO)
    for address, status in ((ADA, "paused"), (BO, "unsubscribed")):
        done = script(
            {**mail_env, "REKINDLE_NOW": day(2).isoformat()},
            "subscribers",
            "pause",
            address,
            "--weeks",
            "1",
        )
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert f"is {status}, not active" in done.stderr


def test_a_week_off_across_the_clock_change_keeps_nine_oclock_local(mail_env, smtp_server):
    """New York: lesson 2 due Mon 2 March 09:00 EST; a week off makes it Mon 9 March 09:00
    EDT (13:00Z, not 14:00Z): seven local days, not 168 hours."""
    zone = "America/New_York"
    at(
        mail_env,
        datetime(2026, 2, 23, 12, tzinfo=UTC),
        "subscribers",
        "add",
        ADA,
        "--timezone",
        zone,
    )
    send(mail_env, datetime(2026, 2, 23, 14, tzinfo=UTC))
    at(mail_env, datetime(2026, 2, 24, tzinfo=UTC), "subscribers", "pause", ADA, "--weeks", "1")
    assert due(mail_env, ADA) == local(zone, 2026, 3, 9, 9)
    send(mail_env, datetime(2026, 3, 9, 12, 59, tzinfo=UTC))
    send(mail_env, datetime(2026, 3, 9, 13, 0, tzinfo=UTC))
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2"]
    assert smtp_server.to(ADA)[-1].message["Date"].datetime == datetime(2026, 3, 9, 13, tzinfo=UTC)


# --- time of day and time zone ------------------------------------------------------------


def test_evening_moves_the_next_lesson_and_the_queued_reminder_to_the_evening_window(
    db_env, smtp_server
):
    """`set --time-of-day evening` on day 1: reminder 1 (queued for day 3 09:00) and lesson 2
    keep their dates and come at 18:00; morning runs send nothing; the course goes on in
    the evenings; status predicts each run."""
    started(db_env, ADA, BO)
    send(db_env, day(0))
    done = at(db_env, day(1), "subscribers", "set", ADA, "--time-of-day", "evening")
    assert "evening (18:00-21:00) in UTC" in done.stdout
    assert listed(db_env)[ADA]["time_of_day"] == "evening"
    assert due(db_env, ADA) == day(7, 18, 0)

    for n in (3, 7, 10, 14):
        morning = json.loads(at(db_env, day(n), "status", "--json").stdout)
        assert morning["due_now"] == 1  # only Bo's
        assert send(db_env, day(n))["sent"] == 1
        evening = json.loads(at(db_env, day(n, 18, 0), "status", "--json").stdout)
        assert evening["due_now"] == 1  # only Ada's
        assert send(db_env, day(n, 18, 0))["sent"] == 1
    assert smtp_server.keys(ADA) == ["lesson-1", "reminder-1", "lesson-2", "reminder-2", "lesson-3"]
    hours = [m.message["Date"].datetime.hour for m in smtp_server.to(ADA)]
    assert hours == [9, 18, 18, 18, 18]
    assert smtp_server.keys(BO) == smtp_server.keys(ADA)  # Bo's in the mornings

    (entry,) = shown(db_env, ADA)["history"]
    assert entry["change"] == "time of day"
    assert entry["detail"] == (
        "morning -> evening (18:00-21:00); lesson 2 due Mon 2026-03-09 18:00 UTC"
    )


def test_a_new_zone_keeps_the_local_date_and_moves_to_that_zones_morning(db_env, smtp_server):
    """London -> Tokyo after lesson 1: lesson 2 stays on Monday 9 March, at 09:00 in Tokyo
    (00:00Z), and the next one a week after that, Tokyo time."""
    started(db_env, ADA, zone="Europe/London")
    send(db_env, day(0))
    at(db_env, day(2), "subscribers", "set", ADA, "--timezone", "Asia/Tokyo")
    row = listed(db_env)[ADA]
    assert row["timezone"] == "Asia/Tokyo" and row["next_due"] == "2026-03-09T09:00:00+09:00"
    send(db_env, datetime(2026, 3, 8, 23, 59, tzinfo=UTC))
    send(db_env, datetime(2026, 3, 9, 0, 0, tzinfo=UTC))
    send(db_env, datetime(2026, 3, 16, 0, 0, tzinfo=UTC))
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2", "lesson-3"]


def test_a_new_zone_whose_new_instant_has_passed_is_due_at_once_and_goes_in_the_window(
    mail_env, smtp_server
):
    """Los Angeles -> Tokyo on Mon 9 March at 12:00Z: 09:00 Tokyo that day has passed, so the
    lesson is due at once; it is 21:00 in Tokyo, outside the window, so it goes with the
    first run inside it (Tue 09:00 Tokyo). Nothing is sent twice, nothing skipped."""
    started(mail_env, ADA, zone="America/Los_Angeles")
    send(mail_env, datetime(2026, 3, 2, 17, tzinfo=UTC))  # 09:00 PST
    assert smtp_server.lessons(ADA) == ["lesson-1"]
    moved_at = datetime(2026, 3, 9, 12, tzinfo=UTC)  # 05:00 in Los Angeles: not yet due there
    at(mail_env, moved_at, "subscribers", "set", ADA, "--timezone", "Asia/Tokyo")
    assert due(mail_env, ADA) == moved_at
    send(mail_env, moved_at + timedelta(minutes=30))
    send(mail_env, datetime(2026, 3, 9, 16, tzinfo=UTC))  # 09:00 in Los Angeles: not theirs now
    assert smtp_server.lessons(ADA) == ["lesson-1"]
    send(mail_env, datetime(2026, 3, 10, 0, 0, tzinfo=UTC))
    send(mail_env, datetime(2026, 3, 10, 0, 30, tzinfo=UTC))
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2"]
    assert due(mail_env, ADA) == local("Asia/Tokyo", 2026, 3, 17, 9)


def test_zone_and_time_of_day_at_once_and_the_timeline_shows_the_effect(db_env):
    """`set --timezone --time-of-day` together: one move, two history entries; the timeline
    names the evening window and lists every letter at 18:00 Tokyo time; so does `show`."""
    started(db_env, ADA, zone="Europe/London")
    send(db_env, day(0))
    at(db_env, day(1), "subscribers", "pause", ADA, "--weeks", "1")
    at(
        db_env,
        day(1),
        "subscribers",
        "set",
        ADA,
        "--timezone",
        "Asia/Tokyo",
        "--time-of-day",
        "evening",
    )
    assert due(db_env, ADA) == local("Asia/Tokyo", 2026, 3, 16, 18)
    timeline = at(db_env, day(1), "preview", "--timeline", ADA).stdout.splitlines()
    assert timeline[0] == f"{ADA} reads in the evening (18:00-21:00 Asia/Tokyo time)"
    assert timeline[1] == "lesson 2 has 1 week(s) off"
    rows = [line for line in timeline if line[:3] in ("Mon", "Thu")]
    assert rows[0].startswith("Thu 2026-03-05 18:00  Asia/Tokyo  reminder-1")
    assert rows[1].startswith("Mon 2026-03-16 18:00  Asia/Tokyo  lesson-2")
    assert all(" 18:00 " in line for line in rows) and len(rows) == 11

    text = at(db_env, day(1), "subscribers", "show", ADA).stdout
    assert "time_of_day:  evening" in text and "reminders:    on" in text
    changes = [h["change"] for h in shown(db_env, ADA)["history"]]
    assert changes == ["week off", "time zone", "time of day"]
    assert "CHANGED AT" in text and "Europe/London -> Asia/Tokyo" in text


def test_set_refuses_nothing_to_set_an_unknown_zone_and_an_unknown_person(mail_env):
    """No option: usage (2); an unknown zone or address, or a time of day that is neither
    morning nor evening: exit 1 or 2, and nothing changes."""
    started(mail_env, ADA)
    before = listed(mail_env)
    assert at(mail_env, day(1), "subscribers", "set", ADA, code=2)
    bad_zone = at(mail_env, day(1), "subscribers", "set", ADA, "--timezone", "Mars/Olympus", code=1)
    assert "Mars/Olympus" in bad_zone.output
    at(mail_env, day(1), "subscribers", "set", "nobody@example.org", "--timezone", "UTC", code=1)
    at(mail_env, day(1), "subscribers", "set", ADA, "--time-of-day", "noon", code=2)
    assert listed(mail_env) == before
    assert shown(mail_env, ADA)["history"] == []


def test_evening_window_is_a_setting_with_a_default_and_a_clear_error(mail_env, smtp_server):
    """`evening_window` moves the evening (here 19:30-22:00); a bad value is one clear line."""
    started(mail_env, ADA)
    env = {**mail_env, "REKINDLE_EVENING_WINDOW": "19:30-22:00"}
    send(env, day(0))
    at(env, day(1), "subscribers", "set", ADA, "--time-of-day", "evening")
    assert due(env, ADA) == day(7, 19, 30)
    shown_settings = at(env, day(1), "config", "show").stdout
    assert "evening_window" in shown_settings and "19:30-22:00" in shown_settings
    assert "18:00-21:00" in at(mail_env, day(1), "config", "show").stdout
    bad = at({**mail_env, "REKINDLE_EVENING_WINDOW": "late"}, day(1), "status", code=1)
    assert "evening_window 'late' is not of the form HH:MM-HH:MM" in bad.output


def test_resume_and_unsubscribe_are_recorded_as_the_operators(db_env):
    """pause, resume, reminders and unsubscribe by the CLI each leave a history entry."""
    started(db_env, ADA)
    at(db_env, day(1), "subscribers", "pause", ADA)
    at(db_env, day(2), "subscribers", "resume", ADA)
    at(db_env, day(3), "subscribers", "reminders", ADA, "off")
    at(db_env, day(4), "subscribers", "unsubscribe", ADA)
    history = shown(db_env, ADA)["history"]
    assert [(h["change"], h["by"], h["via"]) for h in history] == [
        ("pause", "operator", "cli"),
        ("resume", "operator", "cli"),
        ("reminders", "operator", "cli"),
        ("unsubscribe", "operator", "cli"),
    ]
    assert [h["at"] for h in history] == [day(n).isoformat() for n in (1, 2, 3, 4)]
