"""Mid-week reminders (issue 5, item 5) and the `status` figures (item 3), through the CLI."""

from __future__ import annotations

import json
import shutil
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clirun import add, listed, run, script, send, status
from mailserver import MailServer, Received, free_port

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
ADDED = "2026-03-01T22:00:00+00:00"  # Sunday night; lesson 1 is due Monday 2 March at 09:00
MONDAY = datetime(2026, 3, 2, 10, tzinfo=UTC)


def iso(instant: datetime) -> str:
    return instant.isoformat()


def cli_ok(env: dict[str, str], now: datetime | str, *args: str) -> str:
    """A CLI command at `now` that must succeed; its stdout."""
    result = run({**env, "REKINDLE_NOW": now if isinstance(now, str) else iso(now)}, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def history(env: dict[str, str], email: str) -> dict[str, str]:
    """`subscribers show --json`: key -> delivery status."""
    result = run(env, "subscribers", "show", email, "--json")
    assert result.exit_code == 0, result.output
    return {d["key"]: d["status"] for d in json.loads(result.stdout)["deliveries"]}


def reminders_to(server: MailServer, address: str) -> list[Received]:
    return [
        m for m in server.to(address) if str(m.message["X-Rekindle-Key"]).startswith("reminder-")
    ]


def parts(received: Received) -> tuple[str, str]:
    """(text, html) of a received message."""
    msg = received.message
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def course_copy(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the shipped course with one line of course.toml changed."""
    directory = tmp_path / "course"
    shutil.copytree(TEMPLATES, directory)
    manifest = directory / "course.toml"
    text = manifest.read_text(encoding="utf-8")
    assert f"\n{old}\n" in text
    manifest.write_text(text.replace(f"\n{old}\n", f"\n{new}\n"), encoding="utf-8")
    return directory


def test_reminder_one_goes_out_three_local_days_after_lesson_one_inside_the_window(
    env, smtp_server, database_url
):
    """Day 3, inside each subscriber's own window, reminder-1 arrives once; outside, it waits."""
    env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=smtp_server.url)
    add(env, "ada@example.org", "--name", "Ada", now=ADDED)
    add(env, "ken@example.org", "--name", "Ken", "--timezone", "Asia/Tokyo", now=ADDED)
    send(env, "2026-03-02T01:00:00+00:00")  # 10:00 on Monday in Tokyo: ken's lesson 1
    send(env, "2026-03-02T10:00:00+00:00")  # ada's lesson 1
    assert smtp_server.keys("ada@example.org") == ["lesson-1"]
    assert smtp_server.keys("ken@example.org") == ["lesson-1"]

    # Day 2 for both, inside the window (19:00 UTC; 08:00 on Thursday in Tokyo): too early.
    assert send(env, "2026-03-04T19:00:00+00:00")["sent"] == 0
    assert send(env, "2026-03-04T23:00:00+00:00")["sent"] == 0

    # Thursday 12:00 UTC is 21:00 in Tokyo: ada's reminder goes, ken's is due but waits.
    thursday = send(env, "2026-03-05T12:00:00+00:00")
    assert thursday["sent"] == 1 and thursday["waiting"] >= 1
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "reminder-1"]
    assert smtp_server.keys("ken@example.org") == ["lesson-1"]
    assert send(env, "2026-03-05T13:00:00+00:00")["sent"] == 0

    send(env, "2026-03-06T00:30:00+00:00")  # Friday 09:30 in Tokyo
    assert send(env, "2026-03-06T10:00:00+00:00")["sent"] == 0
    assert send(env, "2026-03-06T12:00:00+00:00")["sent"] == 0
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "reminder-1"]
    assert smtp_server.keys("ken@example.org") == ["lesson-1", "reminder-1"]
    assert history(env, "ada@example.org") == {"lesson-1": "sent", "reminder-1": "sent"}

    manifest = tomllib.loads((TEMPLATES / "course.toml").read_text(encoding="utf-8"))
    lesson1 = manifest["lessons"][0]
    source = (TEMPLATES / lesson1["reminder"]).read_text(encoding="utf-8")
    phrase = "Have you found fifteen quiet minutes yet to write down what"
    assert phrase in source
    for address, greeting, when in (
        ("ada@example.org", "Hi Ada,", "2026-03-05T12:00:00+00:00"),
        ("ken@example.org", "Hi Ken,", "2026-03-06T00:30:00+00:00"),
    ):
        lesson, reminder = smtp_server.to(address)
        msg = reminder.message
        assert msg["X-Rekindle-Key"] == "reminder-1"
        assert msg["Subject"] == lesson1["reminder_subject"]
        assert msg["Date"].datetime.isoformat() == when
        assert msg["Message-ID"] != lesson.message["Message-ID"]
        assert "https://rekindle.example.org/unsubscribe/" in msg["List-Unsubscribe"]
        for part in parts(reminder):
            assert phrase in part
            assert greeting in part
            assert "mid-week nudge · week 1" in part.lower()
            assert "https://rekindle.example.org/unsubscribe/" in part
        text, html = parts(reminder)
        assert "<em>you</em>" in html and "<em>" not in text


def test_no_reminder_for_someone_who_paused_or_unsubscribed_before_it_went_out(env, smtp_server):
    """Pausing or leaving after lesson 1 cancels its reminder; others still get theirs."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    for who in ("ada", "pat", "uma"):
        add(env, f"{who}@example.org", now=ADDED)
    assert send(env, MONDAY)["sent"] == 3
    cli_ok(env, "2026-03-03T12:00:00+00:00", "subscribers", "pause", "pat@example.org")
    cli_ok(env, "2026-03-03T12:00:00+00:00", "subscribers", "unsubscribe", "uma@example.org")
    assert send(env, MONDAY + timedelta(days=3))["sent"] == 1
    assert send(env, MONDAY + timedelta(days=4))["sent"] == 0
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "reminder-1"]
    assert smtp_server.keys("pat@example.org") == ["lesson-1"]
    assert smtp_server.keys("uma@example.org") == ["lesson-1"]
    assert history(env, "pat@example.org")["reminder-1"] == "cancelled"
    assert history(env, "uma@example.org")["reminder-1"] == "cancelled"


def test_reminder_is_cancelled_when_the_next_lesson_is_already_due(env, smtp_server):
    """No run between lesson 1 and lesson 2: that run sends lesson 2 alone, reminder-1 never."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ada@example.org", now=ADDED)
    add(env, "ken@example.org", "--timezone", "Asia/Tokyo", now=ADDED)
    send(env, "2026-03-02T01:00:00+00:00")  # ken's lesson 1
    send(env, MONDAY)  # ada's lesson 1
    # A week later, before ada's window opens (ken: 17:00, lesson 2 due since 09:00).
    early = send(env, "2026-03-09T08:00:00+00:00")
    assert early["sent"] == 1
    assert smtp_server.keys("ken@example.org") == ["lesson-1", "lesson-2"]
    assert smtp_server.keys("ada@example.org") == ["lesson-1"]
    assert send(env, MONDAY + timedelta(days=7))["sent"] == 1
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "lesson-2"]
    for address in ("ada@example.org", "ken@example.org"):
        assert history(env, address)["reminder-1"] == "cancelled"
    # Lesson 2's own reminder still comes three days on.
    send(env, "2026-03-12T01:00:00+00:00")
    send(env, MONDAY + timedelta(days=10))
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "lesson-2", "reminder-2"]
    assert smtp_server.keys("ken@example.org") == ["lesson-1", "lesson-2", "reminder-2"]


def test_reminders_switched_off_and_on_for_one_subscriber(env, smtp_server):
    """`subscribers reminders EMAIL off` stops their nudges (not their lessons); `on` restores."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    for who in ("ada", "bo"):
        add(env, f"{who}@example.org", now=ADDED)
    send(env, MONDAY)
    out = cli_ok(
        env, MONDAY + timedelta(days=1), "subscribers", "reminders", "ada@example.org", "off"
    )
    assert "off" in out and "ada@example.org" in out
    for day in (3, 7, 10):
        send(env, MONDAY + timedelta(days=day))
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "lesson-2"]
    assert smtp_server.keys("bo@example.org") == [
        "lesson-1",
        "reminder-1",
        "lesson-2",
        "reminder-2",
    ]

    cli_ok(env, MONDAY + timedelta(days=12), "subscribers", "reminders", "ada@example.org", "on")
    for day in (14, 17, 18):
        send(env, MONDAY + timedelta(days=day))
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "lesson-2", "lesson-3", "reminder-3"]
    assert smtp_server.keys("bo@example.org")[-2:] == ["lesson-3", "reminder-3"]
    unknown = run(env, "subscribers", "reminders", "nobody@example.org", "off")
    assert unknown.exit_code == 1


def test_reminders_false_in_the_manifest_sends_no_reminder_at_all(env, smtp_server, tmp_path):
    """A course whose course.toml says `reminders = false` sends lessons and never a nudge."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    env["REKINDLE_COURSE_DIR"] = str(course_copy(tmp_path, "reminders = true", "reminders = false"))
    for who in ("ada", "bo"):
        add(env, f"{who}@example.org", now=ADDED)
    for day in (0, 3, 4, 7, 10, 11):
        send(env, MONDAY + timedelta(days=day))
    for address in ("ada@example.org", "bo@example.org"):
        assert smtp_server.keys(address) == ["lesson-1", "lesson-2"]
    summary = status(env, MONDAY + timedelta(days=11))
    assert sorted(summary["deliveries"]) == ["lesson-1", "lesson-2"]


def test_switching_reminders_off_in_the_manifest_cancels_those_already_queued(
    env, smtp_server, tmp_path
):
    """A reminder queued under `reminders = true` is not sent once the manifest says false."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ada@example.org", now=ADDED)
    send(env, MONDAY)
    assert history(env, "ada@example.org") == {"lesson-1": "sent", "reminder-1": "queued"}
    env["REKINDLE_COURSE_DIR"] = str(course_copy(tmp_path, "reminders = true", "reminders = false"))
    assert send(env, MONDAY + timedelta(days=3))["sent"] == 0
    assert smtp_server.keys("ada@example.org") == ["lesson-1"]
    assert history(env, "ada@example.org")["reminder-1"] == "cancelled"


def test_dry_run_counts_only_what_the_real_run_would_send(env, smtp_server):
    """`send --dry-run` at lesson 2's run does not count the reminder that run will cancel."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ada@example.org", now=ADDED)
    add(env, "pat@example.org", now=ADDED)
    send(env, MONDAY)
    cli_ok(env, MONDAY + timedelta(days=1), "subscribers", "pause", "pat@example.org")
    week_on = iso(MONDAY + timedelta(days=7))
    dry = run(env, "send", "--now", week_on, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert len(smtp_server.messages) == 2  # a dry run sends nothing
    real = send(env, week_on)
    assert real["sent"] == 1  # ada's lesson 2; both reminder-1s are cancelled
    assert json.loads(dry.stdout)["sent"] == real["sent"]


def test_reminder_after_days_two_sends_the_nudge_on_day_two(env, smtp_server, tmp_path):
    """With `reminder_after_days = 2` the reminder goes out on the second local day, not before."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    env["REKINDLE_COURSE_DIR"] = str(
        course_copy(tmp_path, "reminder_after_days = 3", "reminder_after_days = 2")
    )
    add(env, "ada@example.org", now=ADDED)
    send(env, MONDAY)
    assert send(env, "2026-03-03T19:30:00+00:00")["sent"] == 0  # day 1, window open
    assert send(env, "2026-03-04T08:59:00+00:00")["sent"] == 0  # day 2, window not yet open
    assert send(env, "2026-03-04T09:00:00+00:00")["sent"] == 1
    assert send(env, "2026-03-05T10:00:00+00:00")["sent"] == 0
    [reminder] = reminders_to(smtp_server, "ada@example.org")
    assert reminder.message["X-Rekindle-Key"] == "reminder-1"
    assert reminder.message["Date"].datetime.isoformat() == "2026-03-04T09:00:00+00:00"


def test_every_lesson_has_its_reminder_and_lesson_six_reaches_a_completed_subscriber(
    env, smtp_server
):
    """Six weeks of runs: each lesson then its reminder; lesson 6 reminder after completion."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ada@example.org", now=ADDED)
    for week in range(6):
        monday = MONDAY + timedelta(weeks=week)
        assert send(env, monday)["sent"] == 1
        if week == 5:
            assert listed(env)["ada@example.org"]["status"] == "completed"
        assert send(env, monday + timedelta(days=3))["sent"] == 1
        assert send(env, monday + timedelta(days=4))["sent"] == 0
    assert smtp_server.keys("ada@example.org") == [
        key for k in range(1, 7) for key in (f"lesson-{k}", f"reminder-{k}")
    ]
    last = reminders_to(smtp_server, "ada@example.org")[-1]
    text, html = parts(last)
    assert "emergency services" in text and "emergency services" in html
    assert "mid-week nudge · week 6" in text.lower()
    assert listed(env)["ada@example.org"]["status"] == "completed"
    assert send(env, MONDAY + timedelta(weeks=7))["sent"] == 0


def test_status_reports_deliveries_per_key_due_lessons_and_the_last_run(
    env, smtp_server, database_url, tmp_path
):
    """status --json: per-key counts, what a run would send now / in the next 24h (lessons and
    queued mail alike, exactly what the run then sends), last run ok then unavailable."""
    env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=smtp_server.url)
    assert status(env, ADDED)["last_run"] is None
    for who in ("ada", "pat", "dan"):
        add(env, f"{who}@example.org", now=ADDED)
    add(env, "ken@example.org", "--timezone", "Asia/Tokyo", now=ADDED)
    smtp_server.script.rcpt["dan@example.org"] = "550 5.1.1 <dan@example.org>: no such user"
    send(env, "2026-03-02T01:00:00+00:00")  # ken's lesson 1
    send(env, MONDAY)  # ada's and pat's; dan bounces
    body = tmp_path / "note.md"
    body.write_text("Hello {{ first_name }}, a short **note**.", encoding="utf-8")
    bid = int(
        cli_ok(
            env,
            "2026-03-02T11:00:00+00:00",
            "broadcast",
            "create",
            "--subject",
            "Note",
            "--body",
            str(body),
        )
    )
    cli_ok(env, "2026-03-02T11:00:00+00:00", "broadcast", "send", str(bid))
    send(env, "2026-03-02T12:00:00+00:00")  # ada and pat get it; 21:00 in Tokyo: ken waits
    cli_ok(env, "2026-03-03T12:00:00+00:00", "subscribers", "pause", "pat@example.org")
    last = send(env, "2026-03-05T12:00:00+00:00")  # ada's reminder; ken's waits; pat's cancelled
    assert last["sent"] == 1
    add(env, "zed@example.org", now="2026-03-08T12:00:00+00:00")

    at = "2026-03-09T00:30:00+00:00"  # Monday 09:30 in Tokyo, still Sunday night in UTC
    summary = status(env, at)
    assert {k: v for k, v in summary["subscribers"].items() if v} == {
        "active": 3,
        "paused": 1,
        "bounced": 1,
    }
    assert summary["total_subscribers"] == 5
    counts = {
        key: {s: n for s, n in by_status.items() if n}
        for key, by_status in summary["deliveries"].items()
    }
    assert counts == {
        "broadcast-1": {"sent": 2, "queued": 1},
        "lesson-1": {"sent": 3, "failed": 1},
        "reminder-1": {"sent": 1, "queued": 1, "cancelled": 1},
    }
    assert all(
        set(v) >= {"sent", "failed", "queued", "deferred"} for v in summary["deliveries"].values()
    )
    # ken's lesson 2 has been due since 09:00 Tokyo, and the broadcast waited for his window;
    # ada's and zed's lessons come at 09:00 UTC; ken's reminder-1 comes too late: cancelled.
    assert summary["due"] == {
        "broadcast-1": {"now": 1, "next_24h": 0},
        "lesson-1": {"now": 0, "next_24h": 1},
        "lesson-2": {"now": 1, "next_24h": 1},
    }
    assert summary["due_now"] == 2
    moment = datetime.fromisoformat(at)
    expected: dict[str, dict[str, int]] = {}
    for row in listed(env).values():
        if row["status"] == "active" and row["next_due"]:
            due = datetime.fromisoformat(row["next_due"])
            if due <= moment + timedelta(hours=24):
                bucket = expected.setdefault(
                    f"lesson-{row['next_lesson']}", {"now": 0, "next_24h": 0}
                )
                bucket["now" if due <= moment else "next_24h"] += 1
    assert {k: v for k, v in summary["due"].items() if k.startswith("lesson-")} == expected
    run_ = summary["last_run"]
    assert (run_["outcome"], run_["sent"], run_["failed"], run_["message"]) == ("ok", 1, 0, None)
    assert run_["clock"] == "2026-03-05T12:00:00+00:00"
    [failure] = summary["recent_failures"]
    assert (failure["email"], failure["key"], failure["status"]) == (
        "dan@example.org",
        "lesson-1",
        "failed",
    )
    assert "550" in failure["reply"]

    # ken's run: lesson 2 and the broadcast, as status said; his reminder-1 is cancelled.
    ran = send(env, at)
    assert ran["sent_by_key"] == {"broadcast-1": 1, "lesson-2": 1}
    assert sorted(smtp_server.keys("ken@example.org")) == [
        f"broadcast-{bid}",
        "lesson-1",
        "lesson-2",
    ]
    after = status(env, at)
    assert after["deliveries"]["reminder-1"]["cancelled"] == 2
    assert after["deliveries"]["reminder-1"]["queued"] == 0
    assert after["deliveries"]["broadcast-1"]["sent"] == 3
    assert after["deliveries"]["lesson-2"]["sent"] == 1
    assert after["deliveries"]["reminder-2"]["queued"] == 1
    assert (after["last_run"]["outcome"], after["last_run"]["sent"]) == ("ok", 2)

    # The mail server is down: exit 75, and status tells the operator.
    down = {**env, "REKINDLE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    failed = script(down, "send", "--now", "2026-03-09T10:00:00+00:00")
    assert failed.returncode == 75, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    broken = status(env, "2026-03-09T10:00:00+00:00")
    assert broken["last_run"]["outcome"] == "unavailable"
    assert broken["last_run"]["message"]
    assert broken["last_run"]["clock"] == "2026-03-09T10:00:00+00:00"
    assert broken["last_run"]["sent"] == 0
    assert broken["due"]["lesson-1"]["now"] == 1 and broken["due"]["lesson-2"]["now"] == 1

    text = run(env, "status", "--now", "2026-03-09T10:00:00+00:00")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    [last_line] = [line for line in lines if line.startswith("Last run:")]
    assert "unavailable" in last_line and broken["last_run"]["message"] in last_line
    header = next(line for line in lines if line.startswith("KEY"))
    assert header.split() == [
        "KEY",
        "SENT",
        "FAILED",
        "DEFERRED",
        "QUEUED",
        "SENDING",
        "DUE",
        "NOW",
        "NEXT",
        "24H",
    ]
    rows = {
        line.split()[0]: line.split()[1:]
        for line in lines[lines.index(header) + 1 :]
        if line.strip()
    }
    assert rows["lesson-1"][:2] == ["3", "1"] and rows["lesson-1"][-2:] == ["1", "0"]
    assert rows["lesson-2"][0] == "1" and rows["lesson-2"][-2:] == ["1", "0"]
    assert rows["broadcast-1"][0] == "3"
    assert rows["reminder-1"][0] == "1"

    # Once the server is back, the due mail goes out.
    assert send(env, "2026-03-09T10:30:00+00:00")["sent"] == 2
    assert smtp_server.keys("ada@example.org")[-1] == "lesson-2"
    assert smtp_server.keys("zed@example.org") == ["lesson-1"]
    assert status(env, "2026-03-09T10:30:00+00:00")["last_run"]["outcome"] == "ok"
