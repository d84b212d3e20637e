"""`status --now T` predicts what `send --now T` then does, key by key, and both mean the same
thing by "deferred" (README, "What `status` and `send` count"). On SQLite and PostgreSQL.

The scenario has every kind of mail due at once: lessons from the cursors (one of them a
retry), mid-week reminders, a broadcast, confirmations that could not go when they were
asked for, readers in Tokyo whose window is closed, a run stopped early by a daily quota,
and a run in which the server puts one message off.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import Result

from clirun import run
from mailserver import MailServer, free_port

SUNDAY = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MONDAY = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # lesson 1: UTC at 09:00, Tokyo at 00:00
WEDNESDAY = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
THURSDAY = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # reminders due; 21:00 in Tokyo: closed
FRIDAY_TOKYO = datetime(2026, 3, 6, 0, 30, tzinfo=UTC)  # 09:30 in Tokyo, 00:30 in UTC
UTC_READERS = [f"reader{i:02d}@example.org" for i in range(20)]
TOKYO_READERS = [f"tokyo{i}@example.org" for i in range(3)]
LATE_READERS = [f"late{i}@example.org" for i in range(4)]
PENDING = ["pen0@example.org", "pen1@example.org"]
PUT_OFF = "451 4.7.1 Greylisted, try again later"


def iso(instant: datetime) -> str:
    return instant.isoformat()


def cli(env: dict[str, str], at: datetime, *args: str, code: int = 0) -> Result:
    result = run({**env, "REKINDLE_NOW": iso(at)}, *args)
    assert result.exit_code == code, (args, result.output)
    return result


def status(env: dict[str, str], at: datetime) -> dict[str, Any]:
    return json.loads(cli(env, at, "status", "--now", iso(at), "--json").stdout)


def send(env: dict[str, str], at: datetime, *, code: int = 0) -> dict[str, Any]:
    return json.loads(cli(env, at, "send", "--now", iso(at), "--json", code=code).stdout)


def due_now(summary: dict[str, Any]) -> dict[str, int]:
    """status's forecast: key -> messages a run at that instant sends."""
    return {key: n["now"] for key, n in summary["due"].items() if n["now"]}


def due_later(summary: dict[str, Any]) -> dict[str, int]:
    return {key: n["next_24h"] for key, n in summary["due"].items() if n["next_24h"]}


def deferred(summary: dict[str, Any]) -> dict[str, int]:
    """status's deferred column: key -> rows tried and put off."""
    return {key: n["deferred"] for key, n in summary["deliveries"].items() if n["deferred"]}


def import_csv(env: dict[str, str], tmp_path: Path, at: datetime, rows: list[str]) -> None:
    source = tmp_path / f"import-{at:%d%H}.csv"
    source.write_text("email,name,timezone\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    cli(env, at, "subscribers", "import", str(source))


def test_status_predicts_exactly_what_send_does_and_both_count_deferred_alike(
    env, database_url, smtp_server: MailServer, tmp_path
):
    """At every step status's "due now" is what send then sends, by key (a quota-stopped run
    sends part of it and leaves the rest due, none of it "deferred"); send's `deferred` is
    exactly how many rows it moved into status's deferred column."""
    env = {**env, "REKINDLE_DATABASE_URL": database_url, "REKINDLE_SMTP_URL": smtp_server.url}
    import_csv(
        env,
        tmp_path,
        SUNDAY,
        [f"{a},," for a in UTC_READERS] + [f"{a},,Asia/Tokyo" for a in TOKYO_READERS],
    )

    # Monday: every lesson 1 is due; the server puts reader00's off (451).
    assert due_now(status(env, MONDAY)) == {"lesson-1": 23}
    smtp_server.script.rcpt_once[UTC_READERS[0]] = [PUT_OFF]
    monday = send(env, MONDAY)
    assert (monday["sent_by_key"], monday["deferred"]) == ({"lesson-1": 22}, 1)
    assert deferred(status(env, MONDAY)) == {"lesson-1": 1}
    # Two minutes on, its retry time (5 minutes) has not come: due later, not now.
    soon = status(env, MONDAY + timedelta(minutes=2))
    assert (due_now(soon), due_later(soon)["lesson-1"]) == ({}, 1)
    assert send(env, MONDAY + timedelta(minutes=2))["sent_by_key"] == {}

    # Wednesday: four more readers, and a broadcast for everyone active.
    import_csv(env, tmp_path, WEDNESDAY, [f"{a},," for a in LATE_READERS])
    note = tmp_path / "note.md"
    note.write_text("Dear {{ first_name }}, a short note.\n", encoding="utf-8")
    cli(env, WEDNESDAY, "broadcast", "create", "--subject", "A note", "--body", str(note))
    cli(env, WEDNESDAY + timedelta(hours=4), "broadcast", "send", "1")
    # Thursday morning: two confirmations asked for while the relay was down stay queued.
    down = {**env, "REKINDLE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    for address in PENDING:
        cli(
            down,
            THURSDAY - timedelta(hours=3),
            "subscribers",
            "add",
            address,
            "--double-opt-in",
            code=75,
        )

    before = status(env, THURSDAY)
    expected = {"broadcast-1": 24, "confirm": 2, "lesson-1": 5, "reminder-1": 19}
    assert due_now(before) == expected
    assert due_later(before) == {"broadcast-1": 3, "reminder-1": 3}  # Tokyo: window closed
    assert before["due_now"] == sum(expected.values()) == 50
    assert deferred(before) == {"lesson-1": 1}
    dry = json.loads(
        cli(env, THURSDAY, "send", "--dry-run", "--json", "--now", iso(THURSDAY)).stdout
    )
    assert dry["sent_by_key"] == expected

    # A daily quota of 20 stops the run early (exit 75): the rest stays due, nothing deferred.
    quota = {**env, "REKINDLE_SMTP_URL": f"{smtp_server.url}?daily=20"}
    stopped = send(quota, THURSDAY, code=75)
    assert (stopped["sent"], stopped["deferred"], stopped["failed"]) == (20, 0, 0)
    after_stop = status(env, THURSDAY)
    left = due_now(after_stop)
    assert {k: left.get(k, 0) + stopped["sent_by_key"].get(k, 0) for k in expected} == expected
    assert after_stop["due_now"] == 30
    assert deferred(after_stop) == {"lesson-1": 1}  # still only Monday's 451
    assert after_stop["last_run"]["deferred"] == 0
    assert not any(
        f["status"] == "deferred" and "stopped" in (f["reply"] or "")
        for f in after_stop["recent_failures"]
    )

    # The next run sends the rest; the server puts one confirmation off.
    smtp_server.script.rcpt_once[PENDING[1]] = [PUT_OFF]
    rest = send(env, THURSDAY)
    assert rest["deferred"] == 1
    put_off = {"confirm": 1}
    assert {k: rest["sent_by_key"].get(k, 0) + put_off.get(k, 0) for k in left} == left
    done = status(env, THURSDAY)
    assert due_now(done) == {}
    assert deferred(done) == {"confirm": 1}  # exactly what send called deferred
    assert done["last_run"]["deferred"] == 1

    # Friday 09:30 in Tokyo: their reminders and broadcast, and the confirmation's retry.
    friday = status(env, FRIDAY_TOKYO)
    assert due_now(friday) == {"broadcast-1": 3, "confirm": 1, "reminder-1": 3}
    assert send(env, FRIDAY_TOKYO)["sent_by_key"] == due_now(friday)
    assert due_now(status(env, FRIDAY_TOKYO)) == {}
    assert deferred(status(env, FRIDAY_TOKYO)) == {}
    received: dict[str, int] = {}
    for message in smtp_server.messages:
        key = str(message.message["X-Rekindle-Key"])
        received[key] = received.get(key, 0) + 1
    assert received == {"lesson-1": 27, "reminder-1": 22, "broadcast-1": 27, "confirm": 2}
