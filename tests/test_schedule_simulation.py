"""Nine weeks of cron runs every 4 hours, seven zones, four DST changes (docs/scheduling.md).

Besides pauses and a reader who leaves, readers set their own pace (issue 14): one takes
weeks off across the European change, two move zones while the clocks of the old and the
new zone disagree (one of them on the morning the next letter is due), one switches to
evenings in Chicago across the American change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clirun import run, script

WINDOW = (time(9), time(20))
EVENING = (time(18), time(21))
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
    weeks_off: list[tuple[datetime, int]] = field(default_factory=list)
    moves: list[tuple[datetime, str | None, str | None]] = field(default_factory=list)  # zone, tod


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
# The reader's own pace (issue 14), through the operator's equivalents of the course page.
PACED = [
    # A week off after lesson 2, then two more after lesson 4, across the 29 March change.
    Person(
        "weekoff@example.org",
        "Europe/Paris",
        at("2026-02-20T08:00"),
        weeks_off=[(at("2026-03-01T12:00"), 1), (at("2026-03-20T12:00"), 2)],
    ),
    # New York (already on summer time) to London (not yet): the same local date, 09:00 there.
    Person(
        "mover@example.org",
        "America/New_York",
        at("2026-02-20T12:00"),
        moves=[(at("2026-03-10T12:00"), "Europe/London", None)],
    ),
    # London to Tokyo on the morning lesson 6 is due: 09:00 in Tokyo has passed, so it is
    # due at once and goes with that very run (13:00 in Tokyo); its nudge follows in Tokyo.
    Person(
        "tokyo-bound@example.org",
        "Europe/London",
        at("2026-02-23T08:00"),
        moves=[(at("2026-03-30T04:00"), "Asia/Tokyo", None)],
    ),
    # Evenings in Chicago (18:00-21:00: the 00:00Z run), before reminder 1 and lesson 2.
    Person(
        "evening@example.org",
        "America/Chicago",
        at("2026-02-20T16:00"),
        moves=[(at("2026-02-24T00:00"), None, "evening")],
    ),
]
EVERYONE = PEOPLE + PACED


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


def opens(day: date, zone: ZoneInfo, window: tuple[time, time]) -> datetime:
    return datetime.combine(day, window[0], tzinfo=zone).astimezone(UTC)


def inside(instant: datetime, zone: ZoneInfo, window: tuple[time, time]) -> bool:
    return window[0] <= instant.astimezone(zone).time() < window[1]


def expected_mail(person: Person) -> list[tuple[str, datetime]]:
    """docs/scheduling.md restated once more, for every reader: each lesson and each nudge
    with the run that sends it, following pauses, weeks off, new zones and times of day."""
    zone, window = ZoneInfo(person.zone), WINDOW
    changes: list[tuple[datetime, str, Any]] = [(t, "weeks", n) for t, n in person.weeks_off]
    changes += [(t, "move", (z, tod)) for t, z, tod in person.moves]
    for start, end in person.pauses:
        changes += [(start, "pause", None), (end, "resume", None)]
    changes.sort(key=lambda c: c[0])
    due = opens(person.added.astimezone(zone).date(), zone, window)
    if due < person.added:
        due = opens(person.added.astimezone(zone).date() + timedelta(days=1), zone, window)
    sent: list[tuple[str, datetime]] = []
    lessons: list[datetime] = []
    nudges: dict[int, datetime] = {}  # week -> when it is due
    paused = False
    for run_at in RUNS:
        if run_at < person.added:
            continue
        if person.unsubscribed and run_at >= person.unsubscribed:
            break
        while changes and changes[0][0] <= run_at:
            when, kind, value = changes.pop(0)
            if kind == "pause":
                paused = True
            elif kind == "resume":
                paused = False
                later = [opens(lessons[-1].astimezone(zone).date() + timedelta(7), zone, window)]
                first = opens(when.astimezone(zone).date(), zone, window)
                if first < when:
                    first = opens(when.astimezone(zone).date() + timedelta(1), zone, window)
                due = max([first, *later])
            elif kind == "weeks":
                local = due.astimezone(zone)
                later_day = local.date() + timedelta(days=7 * value)
                due = datetime.combine(later_day, local.time(), tzinfo=zone).astimezone(UTC)
            else:  # a new zone and/or time of day: same local date, the new window's start
                new_zone = ZoneInfo(value[0]) if value[0] else zone
                new_window = EVENING if value[1] == "evening" else window
                due = max(opens(due.astimezone(zone).date(), new_zone, new_window), when)
                nudges = {
                    w: max(opens(d.astimezone(zone).date(), new_zone, new_window), when)
                    for w, d in nudges.items()
                }
                zone, window = new_zone, new_window
        for week, nudge in sorted(nudges.items()):  # queued mail goes before lessons
            if run_at >= nudge and inside(run_at, zone, window):
                del nudges[week]
                next_due_passed = len(lessons) < 6 and due <= run_at
                if not paused and len(lessons) == week and not next_due_passed:
                    sent.append((f"reminder-{week}", run_at))
        if paused or len(lessons) == 6 or run_at < due or not inside(run_at, zone, window):
            continue
        lessons.append(run_at)
        sent.append((f"lesson-{len(lessons)}", run_at))
        day_sent = run_at.astimezone(zone).date()
        nudges[len(lessons)] = opens(day_sent + timedelta(days=3), zone, window)
        due = opens(day_sent + timedelta(days=7), zone, window)
    return sent


def test_the_general_oracle_agrees_with_the_first_one():
    """expected_mail restates expected_sends and expected_reminders for the first readers."""
    for person in PEOPLE:
        lessons = [(f"lesson-{i}", t) for i, t in enumerate(expected_sends(person), start=1)]
        both = sorted(lessons + expected_reminders(person), key=lambda m: m[1])
        assert sorted(expected_mail(person), key=lambda m: m[1]) == both, person.email


def test_the_paced_readers_are_really_paced():
    """Each paced reader's course differs from the plain one it would have been, as planned."""
    for person in PACED:
        plain = Person(person.email, person.zone, person.added)
        paced = expected_mail(person)
        assert len([k for k, _ in paced if k.startswith("lesson-")]) == 6, person.email
        assert paced != expected_mail(plain), person.email
    by = {p.email: expected_mail(p) for p in PACED}
    weekoff = dict(by["weekoff@example.org"])
    assert weekoff["lesson-3"] - weekoff["lesson-2"] == timedelta(days=14)
    assert weekoff["lesson-5"] - weekoff["lesson-4"] == timedelta(days=21)
    assert dict(by["tokyo-bound@example.org"])["lesson-6"] == at("2026-03-30T04:00")
    assert all(t.hour == 0 for k, t in by["evening@example.org"][2:])  # 18:00/19:00 Chicago


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
    for p in EVERYONE:
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
        for when, weeks in p.weeks_off:
            out.append((when, ["subscribers", "pause", p.email, "--weeks", str(weeks)]))
        for when, zone, time_of_day in p.moves:
            change = ["--timezone", zone] if zone else []
            change += ["--time-of-day", time_of_day] if time_of_day else []
            out.append((when, ["subscribers", "set", p.email, *change]))
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

    for person in EVERYONE:
        got = [
            (str(m.message["X-Rekindle-Key"]), m.message["Date"].datetime.astimezone(UTC))
            for m in smtp_server.to(person.email)
        ]
        assert got == expected_mail(person), person.email
    assert sum(len(expected_reminders(p)) for p in PEOPLE) >= 30  # they really were exercised

    assert sum(r["sent"] for r in per_run) == len(smtp_server.messages)
    assert all(r["failed"] == 0 and r["deferred"] == 0 for r in per_run)

    listed = {
        row["email"]: row for row in json.loads(run(env, "subscribers", "list", "--json").output)
    }
    for person in EVERYONE:
        row = listed[person.email]
        lessons = [key for key, _ in expected_mail(person) if key.startswith("lesson-")]
        assert row["lessons_sent"] == len(lessons)
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
