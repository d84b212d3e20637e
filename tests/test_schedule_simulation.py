"""Nine weeks of cron runs every 4 hours, six zones, three DST changes (docs/scheduling.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from clirun import run, script

WINDOW = (time(9), time(20))
START = datetime(2026, 2, 20, 0, tzinfo=UTC)
END = datetime(2026, 4, 24, 0, tzinfo=UTC)
RUNS = [START + timedelta(hours=4 * i) for i in range(int((END - START) / timedelta(hours=4)) + 1)]


@dataclass
class Person:
    """A subscriber in the simulation and what happens to them."""

    email: str
    zone: str
    added: datetime
    pauses: list[tuple[datetime, datetime]] = field(default_factory=list)
    unsubscribed: datetime | None = None


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PEOPLE = [
    Person("london@example.org", "Europe/London", at("2026-02-20T10:00")),
    Person("newyork@example.org", "America/New_York", at("2026-02-21T03:00")),
    # 08:30 in Tokyo: lesson 1 is due at 09:00 the same morning, exactly on a run.
    Person("tokyo@example.org", "Asia/Tokyo", at("2026-02-20T23:30")),
    Person("sydney@example.org", "Australia/Sydney", at("2026-02-22T12:00")),
    Person("kolkata@example.org", "Asia/Kolkata", at("2026-02-23T05:00")),
    Person("la@example.org", "America/Los_Angeles", at("2026-02-20T18:00")),
    # Paused for two weeks across the European DST change.
    Person(
        "berlin@example.org",
        "Europe/Berlin",
        at("2026-02-20T09:00"),
        pauses=[(at("2026-03-10T13:00"), at("2026-03-24T13:00"))],
    ),
    # Paused and resumed within the same week: rule 2 still holds.
    Person(
        "osaka@example.org",
        "Asia/Tokyo",
        at("2026-02-24T13:00"),
        pauses=[(at("2026-03-03T13:00"), at("2026-03-04T13:00"))],
    ),
    Person(
        "quits@example.org",
        "America/New_York",
        at("2026-02-20T09:00"),
        unsubscribed=at("2026-03-12T13:00"),
    ),
]


def opening(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, WINDOW[0], tzinfo=zone).astimezone(UTC)


def first_opening_after(instant: datetime, zone: ZoneInfo) -> datetime:
    day = instant.astimezone(zone).date()
    while opening(day, zone) < instant:
        day += timedelta(days=1)
    return opening(day, zone)


def in_window(instant: datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone).time()
    return WINDOW[0] <= local < WINDOW[1]


def expected_sends(person: Person) -> list[datetime]:
    """docs/scheduling.md restated independently: the run at which each lesson must go out."""
    zone = ZoneInfo(person.zone)
    sends: list[datetime] = []
    due = first_opening_after(person.added, zone)
    for run_at in RUNS:
        if run_at < person.added or len(sends) == 6:
            continue
        if person.unsubscribed and run_at >= person.unsubscribed:
            break
        paused = False
        for start, end in person.pauses:
            if start <= run_at < end:
                paused = True
            elif run_at >= end and due < end:
                # Rule 5: next window after resume, never before rule 2 allows.
                rule2 = (
                    opening(sends[-1].astimezone(zone).date() + timedelta(days=7), zone)
                    if sends
                    else end
                )
                due = max(first_opening_after(end, zone), rule2)
        if paused:
            continue
        if run_at >= due and in_window(run_at, zone):
            sends.append(run_at)
            due = opening(run_at.astimezone(zone).date() + timedelta(days=7), zone)
    return sends


def expected_reminders(person: Person) -> list[tuple[str, datetime]]:
    """Each lesson's nudge: the first in-window run from 3 local days after it went out.

    Not sent (cancelled) when that run falls while the subscriber is paused or
    after they left; lesson 6's nudge still reaches someone who has completed.
    """
    zone = ZoneInfo(person.zone)
    out = []
    for k, sent in enumerate(expected_sends(person), start=1):
        due = opening(sent.astimezone(zone).date() + timedelta(days=3), zone)
        run_at = next((r for r in RUNS if r >= due and in_window(r, zone)), None)
        if run_at is None:
            continue
        if any(start <= run_at < end for start, end in person.pauses):
            continue
        if person.unsubscribed and run_at >= person.unsubscribed:
            continue
        out.append((f"reminder-{k}", run_at))
    return out


def test_oracle_covers_dst_and_window_edges():
    """The scenario really spans the DST changes and lands lessons in every zone."""
    assert RUNS[0] < datetime(2026, 3, 8, tzinfo=UTC) < datetime(2026, 4, 5, tzinfo=UTC) < RUNS[-1]
    for person in PEOPLE:
        sends = expected_sends(person)
        if person.unsubscribed:
            assert 0 < len(sends) < 6
        else:
            assert len(sends) == 6, person.email


def events() -> list[tuple[datetime, list[str]]]:
    """Every operator action of the scenario, as CLI arguments, at its instant."""
    out = []
    for p in PEOPLE:
        out.append(
            (
                p.added,
                [
                    "subscribers",
                    "add",
                    p.email,
                    "--name",
                    p.email.split("@")[0].title(),
                    "--timezone",
                    p.zone,
                ],
            )
        )
        for start, end in p.pauses:
            out.append((start, ["subscribers", "pause", p.email]))
            out.append((end, ["subscribers", "resume", p.email]))
        if p.unsubscribed:
            out.append((p.unsubscribed, ["subscribers", "unsubscribe", p.email]))
    return sorted(out, key=lambda e: e[0])


def iso(instant: datetime) -> str:
    return instant.isoformat()


@pytest.mark.slow
def test_nine_weeks_of_cron_runs_send_every_lesson_on_the_run_the_rules_name(env, smtp_server):
    """Every lesson goes on exactly the run docs/scheduling.md names: none early, late or twice."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    pending = events()
    per_run: list[dict] = []
    for run_at in RUNS:
        while pending and pending[0][0] <= run_at:
            when, args = pending.pop(0)
            result = run({**env, "REKINDLE_NOW": iso(when)}, *args)
            assert result.exit_code == 0, result.output
        result = run({**env, "REKINDLE_NOW": iso(run_at)}, "send", "--json")
        assert result.exit_code == 0, result.output
        per_run.append(json.loads(result.output))

    for person in PEOPLE:
        got = [
            (str(m.message["X-Rekindle-Key"]), m.message["Date"].datetime.astimezone(UTC))
            for m in smtp_server.to(person.email)
        ]
        want = [(f"lesson-{i}", t) for i, t in enumerate(expected_sends(person), start=1)]
        assert [g for g in got if g[0].startswith("lesson-")] == want, person.email
        reminders = [g for g in got if g[0].startswith("reminder-")]
        assert reminders == expected_reminders(person), person.email
    assert sum(len(expected_reminders(p)) for p in PEOPLE) >= 30  # they really were exercised

    assert sum(r["sent"] for r in per_run) == len(smtp_server.messages)
    assert all(r["failed"] == 0 and r["deferred"] == 0 for r in per_run)

    listed = {
        row["email"]: row for row in json.loads(run(env, "subscribers", "list", "--json").output)
    }
    for person in PEOPLE:
        row = listed[person.email]
        assert row["lessons_sent"] == len(expected_sends(person))
        expected_status = "unsubscribed" if person.unsubscribed else "completed"
        assert row["status"] == expected_status
        assert row["next_due"] is None

    again = run({**env, "REKINDLE_NOW": iso(RUNS[-1])}, "send", "--json")
    assert json.loads(again.output)["sent"] == 0


def test_installed_script_runs_the_first_weeks_like_cron(env, smtp_server):
    """The console script, run as cron would (subprocess, no TTY), follows the same schedule."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    person = PEOPLE[0]
    assert (
        script(
            {**env, "REKINDLE_NOW": iso(person.added)},
            "subscribers",
            "add",
            person.email,
            "--timezone",
            person.zone,
        ).returncode
        == 0
    )
    window = [t for t in RUNS if t < at("2026-03-08T00:00")]
    outputs = []
    for run_at in window:
        done = script(env, "send", "--now", iso(run_at))
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        outputs.append(done.stdout)
    assert all(line.count("\n") == 1 for line in outputs)  # only the summary line under cron
    got = [
        m.message["Date"].datetime.astimezone(UTC)
        for m in smtp_server.to(person.email)
        if str(m.message["X-Rekindle-Key"]).startswith("lesson-")
    ]
    assert got == [t for t in expected_sends(person) if t < at("2026-03-08T00:00")]
    assert len(got) == 3  # 21 Feb, 28 Feb and 7 Mar
