"""docs/guarantees.md under stress: `send` killed, overlapping runs, a run frozen past its lease.

Every run here is the installed console script in its own process, sending to
a real (deliberately slow) SMTP server on loopback; the database is a real
SQLite file or a real PostgreSQL schema. What the server received is the
evidence: who got lesson 1, how many times, and under which Message-ID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest

from clirun import SCRIPT, run, script
from slowserver import SlowServer

# A Monday: everyone is in UTC, so lesson 1 is due at 09:00 and the window is open at 09:30.
ADDED = "2026-03-02T08:00:00+00:00"
MONDAY = "2026-03-02T09:30:00+00:00"
WAIT = 30.0  # seconds any single wait may take before the test gives up
HEADERS = BytesParser(policy=compat32)  # headers only, quickly: a thousand messages to read


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    """A loopback SMTP server that waits 5 ms before accepting each message."""
    server = SlowServer(delay=0.005)
    server.start()
    try:
        yield server
    finally:
        server.handler.release.set()  # never leave a session hanging on a held reply
        server.stop()


def people(count: int) -> list[str]:
    return [f"reader{i:04d}@example.org" for i in range(count)]


def seed(env: dict[str, str], tmp_path: Path, count: int) -> list[str]:
    """Import `count` subscribers in UTC at ADDED (lesson 1 due Monday 09:00); their emails."""
    emails = people(count)
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name,timezone\n" + "".join(f"{e},Reader {i},UTC\n" for i, e in enumerate(emails)),
        encoding="utf-8",
    )
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(csv))
    assert result.exit_code == 0, result.output
    return emails


class Send:
    """`rekindle-mail send --now MONDAY --json` running in the background, output in files."""

    def __init__(self, env: dict[str, str], tmp_path: Path, name: str) -> None:
        if SCRIPT is None:
            pytest.fail("the rekindle-mail console script is not installed (pip install .)")
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [SCRIPT, "send", "--now", MONDAY, "--json"], env=env, stdout=out, stderr=err
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"send did not finish within {WAIT} s; stderr: {self.stderr}")

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def report(self) -> dict[str, Any]:
        """Its exit code must be 0; the --json object it printed."""
        code = self.wait()
        assert code == 0, (code, self.stdout, self.stderr)
        clean(self.stderr)
        value: dict[str, Any] = json.loads(self.stdout)
        return value

    def cleanup(self) -> None:
        """Never leave a stopped or running child behind."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()


@contextmanager
def sending(env: dict[str, str], tmp_path: Path, name: str) -> Iterator[Send]:
    """A background `send`, killed (and continued first, if stopped) when the block ends."""
    proc = Send(env, tmp_path, name)
    try:
        yield proc
    finally:
        proc.cleanup()


def send_now(env: dict[str, str]) -> dict[str, Any]:
    """A `send --json` run to completion, which must exit 0 with a clean stderr."""
    done = script(env, "send", "--now", MONDAY, "--json")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    clean(done.stderr)
    value: dict[str, Any] = json.loads(done.stdout)
    return value


def clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "database is locked" not in stderr, stderr


def wait_until(what: str, condition: Callable[[], bool], *procs: Send) -> None:
    """Poll `condition`; fail if any of `procs` exits first or WAIT seconds pass."""
    deadline = time.monotonic() + WAIT
    while not condition():
        for p in procs:
            if p.proc.poll() is not None:
                pytest.fail(
                    f"send exited ({p.proc.returncode}) while waiting for {what}: "
                    f"{p.stdout} {p.stderr}"
                )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def lesson_ones(server: SlowServer) -> tuple[Counter[str], dict[str, set[str]]]:
    """Per recipient: how many lesson-1 copies arrived, and their Message-IDs."""
    copies: Counter[str] = Counter()
    ids: dict[str, set[str]] = {}
    for received in list(server.messages):
        message = HEADERS.parsebytes(received.data, headersonly=True)
        assert str(message["X-Rekindle-Key"]) == "lesson-1", message["X-Rekindle-Key"]
        (recipient,) = received.rcpt_tos
        assert str(message["To"]).endswith(f"<{recipient}>") or str(message["To"]) == recipient
        copies[recipient] += 1
        ids.setdefault(recipient, set()).add(str(message["Message-ID"]))
    return copies, ids


def held_recipient(server: SlowServer) -> str:
    """The recipient of the message whose reply the server held back."""
    number = server.handler.hold_at
    assert number is not None
    (recipient,) = server.messages[number - 1].rcpt_tos
    return recipient


def ledger(env: dict[str, str]) -> dict[str, int]:
    """lesson-1's deliveries by status, from `status --json`."""
    result = run(env, "status", "--now", MONDAY, "--json")
    assert result.exit_code == 0, result.output
    value: dict[str, int] = json.loads(result.stdout)["deliveries"].get("lesson-1", {})
    return value


def lessons_sent(env: dict[str, str]) -> dict[str, int]:
    result = run(env, "subscribers", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["email"]: row["lessons_sent"] for row in json.loads(result.stdout)}


def assert_all_sent_once(env: dict[str, str], emails: list[str]) -> None:
    """The ledger and the subscribers' cursors both say: lesson 1 sent to each, nothing pending."""
    rows = ledger(env)
    assert rows.get("sent") == len(emails), rows
    assert sum(rows.values()) == len(emails), rows  # nothing 'sending', deferred or failed
    assert lessons_sent(env) == dict.fromkeys(emails, 1)


def busy_message(pid: int) -> str:
    return f"another send run is active (pid {pid} on {socket.gethostname()})"


@pytest.fixture
def mail_env(env: dict[str, str], slow_server: SlowServer) -> dict[str, str]:
    """CLI environment sending to the slow server (SQLite unless a test says otherwise)."""
    return {**env, "REKINDLE_SMTP_URL": slow_server.url}


# --- 1. kill -9 in the middle of a run ------------------------------------------------------


@pytest.mark.parametrize("moment", ["reply-held", "free-running"])
def test_kill_9_mid_run_then_the_next_run_delivers_the_rest_with_at_most_one_duplicate(
    mail_env, database_url, slow_server, tmp_path, moment
):
    """A `send` killed with -9 after ~100 of 400 lessons loses nothing and doubles at most one.

    'reply-held': the server keeps message 101 and holds back its reply while the
    run is killed, the one case where a duplicate is unavoidable. 'free-running':
    the kill lands wherever the run happens to be. The next run, started at
    once, hands back the dead run's claims (JSON "recovered"), sends exactly what
    the ledger had not recorded as sent, and a resent copy keeps its Message-ID.
    """
    env = {**mail_env, "REKINDLE_DATABASE_URL": database_url}
    emails = seed(env, tmp_path, 400)
    if moment == "reply-held":
        slow_server.handler.hold_at = 101

    with sending(env, tmp_path, "first") as first:
        if moment == "reply-held":
            wait_until("message 101 to reach the server", slow_server.handler.holding.is_set, first)
        else:
            wait_until(
                "~110 messages to reach the server", lambda: slow_server.count() >= 110, first
            )
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    slow_server.handler.release.set()

    before = ledger(env)
    assert before.get("sending", 0) > 0, before  # the dead run's claims are still there
    assert before.get("sent", 0) >= 100, before

    second = send_now(env)
    assert second["recovered"] == before["sending"], (second, before)
    assert second["recovered"] > 0
    assert second["sent"] == len(emails) - before["sent"], (second, before)
    assert (second["failed"], second["busy"], second["skipped"]) == (0, 0, None), second

    copies, ids = lesson_ones(slow_server)
    assert set(copies) == set(emails)
    doubled = [who for who, n in copies.items() if n > 1]
    assert len(doubled) <= 1, doubled
    assert max(copies.values()) <= 2
    if moment == "reply-held":
        assert doubled == [held_recipient(slow_server)]
    assert all(len(mids) == 1 for mids in ids.values()), {
        who: mids for who, mids in ids.items() if len(mids) > 1
    }
    assert len({mid for mids in ids.values() for mid in mids}) == len(emails)
    assert_all_sent_once(env, emails)


# --- 2. two overlapping runs on SQLite ---------------------------------------------------


def test_two_overlapping_runs_on_sqlite_send_each_lesson_once(mail_env, slow_server, tmp_path):
    """A second `send` started while the first is busy either waits its turn or steps aside.

    300 subscribers are due; the second starts once 200 lessons are out. Both exit
    0 with no traceback and no 'database is locked'; each subscriber gets lesson 1
    exactly once. The second either got the run lock when the first finished
    (and found nothing left) or gave up after 5 s saying another run is active.
    """
    emails = seed(mail_env, tmp_path, 300)
    with sending(mail_env, tmp_path, "first") as first:
        wait_until("the first run to be well on", lambda: slow_server.count() >= 200, first)
        second = send_now(mail_env)
        report = first.report()

    assert report["skipped"] is None
    if second["skipped"] is not None:
        assert second["skipped"] == busy_message(first.pid), second
        assert (second["sent"], second["recovered"]) == (0, 0), second
    else:
        assert second["recovered"] == 0, second
    assert report["sent"] + second["sent"] == len(emails), (report, second)
    copies, _ = lesson_ones(slow_server)
    assert copies == Counter(dict.fromkeys(emails, 1))
    assert_all_sent_once(mail_env, emails)


def test_run_that_cannot_get_the_sqlite_lock_in_5_s_says_so_and_exits_0(
    mail_env, slow_server, tmp_path
):
    """While one `send` is held up, others wait 5 s for the run lock, then exit 0 and say why.

    The plain run prints 'nothing sent: another send run is active (pid N on
    host)' naming the first run; the --json run reports it in "skipped". Neither
    sends or records anything, and the first run then finishes all 120 alone.
    """
    emails = seed(mail_env, tmp_path, 120)
    slow_server.handler.hold_at = 10
    with sending(mail_env, tmp_path, "first") as first:
        wait_until("the first run to be sending", slow_server.handler.holding.is_set, first)
        # Both latecomers at once, so the test waits out the 5 s only once.
        plain = subprocess.Popen(
            [str(SCRIPT), "send", "--now", MONDAY],
            env=mail_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            as_json = script(mail_env, "send", "--now", MONDAY, "--json")
            out, err = plain.communicate(timeout=WAIT)
        finally:
            if plain.poll() is None:
                plain.kill()
                plain.wait()
        assert first.proc.poll() is None  # still holding the lock
        assert slow_server.count() == 10
        slow_server.handler.release.set()
        report = first.report()

    assert plain.returncode == 0, (out, err)
    clean(err)
    assert out.strip() == f"nothing sent: {busy_message(first.pid)}"
    assert as_json.returncode == 0, (as_json.stdout, as_json.stderr)
    clean(as_json.stderr)
    skipped = json.loads(as_json.stdout)
    assert skipped["skipped"] == busy_message(first.pid)
    assert (skipped["sent"], skipped["failed"], skipped["deferred"]) == (0, 0, 0)

    assert report["sent"] == len(emails)
    copies, _ = lesson_ones(slow_server)
    assert copies == Counter(dict.fromkeys(emails, 1))
    assert_all_sent_once(mail_env, emails)


# --- 3. four runs at once on PostgreSQL ----------------------------------------------------


def test_four_concurrent_runs_on_postgresql_share_the_work_and_send_each_lesson_once(
    mail_env, pg_url, slow_server, tmp_path
):
    """Four `send` processes over 1,000 due subscribers on PostgreSQL split the work cleanly.

    The server holds every reply until all four have connected, so the runs
    really overlap. All exit 0 without a traceback; each subscriber receives
    lesson 1 exactly once (counted by recipient and by Message-ID); the four
    "sent" figures add up to 1,000, every run sent some, and none 'recovered'
    claims from another (all four were alive).
    """
    env = {**mail_env, "REKINDLE_DATABASE_URL": pg_url}
    emails = seed(env, tmp_path, 1000)
    slow_server.handler.gate = lambda: slow_server.connections >= 4
    runs: list[Send] = []
    try:
        for i in range(4):
            runs.append(Send(env, tmp_path, f"run{i}"))
        codes = [r.wait() for r in runs]
    finally:
        for r in runs:
            r.cleanup()
    copies, ids = lesson_ones(slow_server)
    assert codes == [0, 0, 0, 0], {
        "exit codes and last error lines": [
            (c, r.stderr.strip().splitlines()[-1:]) for c, r in zip(codes, runs, strict=True)
        ],
        "subscribers without lesson 1": len(set(emails) - set(copies)),
        "subscribers with two copies": sorted(who for who, n in copies.items() if n > 1),
        "ledger": ledger(env),
    }
    reports = [r.report() for r in runs]

    assert sum(r["sent"] for r in reports) == len(emails), reports
    assert all(r["sent"] > 0 for r in reports), [r["sent"] for r in reports]
    assert all(r["recovered"] == 0 and r["skipped"] is None for r in reports), reports
    assert all(r["failed"] == 0 for r in reports), reports
    assert copies == Counter(dict.fromkeys(emails, 1))
    assert len({mid for mids in ids.values() for mid in mids}) == len(emails)
    assert_all_sent_once(env, emails)


# --- 4. a run frozen past its lease ---------------------------------------------------------


def test_run_stopped_past_its_lease_on_postgresql_does_not_send_what_it_lost(
    mail_env, pg_url, slow_server, tmp_path
):
    """A SIGSTOPped run whose 2 s lease ran out loses its claims and, resumed, sends none of them.

    Run A is frozen while the server holds the reply to its 30th message. After
    the lease ends, run B takes over ("recovered" > 0) and sends the rest. A,
    continued, gets its reply, records nothing over B's work and sends nothing
    more. Only the message in flight at the freeze can arrive twice (same
    Message-ID); the two runs' "sent" add up to 120 and the ledger is all 'sent'.
    """
    env = {**mail_env, "REKINDLE_DATABASE_URL": pg_url, "REKINDLE_CLAIM_LEASE": "2"}
    emails = seed(env, tmp_path, 120)
    slow_server.handler.hold_at = 30
    with sending(env, tmp_path, "A") as a:
        wait_until("A's 30th message", slow_server.handler.holding.is_set, a)
        os.kill(a.pid, signal.SIGSTOP)
        slow_server.handler.release.set()  # the reply waits in A's socket
        time.sleep(3.0)  # past the 2 s lease (A renews it at most every 2/3 s)
        frozen = ledger(env)
        assert frozen.get("sending", 0) > 0, frozen
        b = send_now(env)
        assert a.proc.poll() is None  # A is still there, frozen
        os.kill(a.pid, signal.SIGCONT)
        report_a = a.report()

    assert b["recovered"] == frozen["sending"], (b, frozen)
    assert b["sent"] == len(emails) - frozen["sent"], (b, frozen)
    assert report_a["sent"] == frozen["sent"], (report_a, frozen)
    assert report_a["sent"] + b["sent"] == len(emails)

    copies, ids = lesson_ones(slow_server)
    assert set(copies) == set(emails)
    doubled = [who for who, n in copies.items() if n > 1]
    assert set(doubled) <= {held_recipient(slow_server)}, doubled
    assert max(copies.values()) <= 2
    assert all(len(mids) == 1 for mids in ids.values())
    assert_all_sent_once(env, emails)


def test_run_stopped_past_its_lease_on_sqlite_keeps_its_claims_and_finishes_alone(
    mail_env, slow_server, tmp_path
):
    """On SQLite a frozen run still holds the run lock, so nobody takes its work.

    With a 2 s lease, A is SIGSTOPped mid-message for longer than the lease; B
    waits 5 s, exits 0 and says another run (A's pid) is active. A, continued,
    renews its claims and sends all 120 lessons, each exactly once.
    """
    env = {**mail_env, "REKINDLE_CLAIM_LEASE": "2"}
    emails = seed(env, tmp_path, 120)
    slow_server.handler.hold_at = 30
    with sending(env, tmp_path, "A") as a:
        wait_until("A's 30th message", slow_server.handler.holding.is_set, a)
        os.kill(a.pid, signal.SIGSTOP)
        slow_server.handler.release.set()
        time.sleep(3.0)  # past the 2 s lease
        b = send_now(env)
        assert a.proc.poll() is None
        os.kill(a.pid, signal.SIGCONT)
        report_a = a.report()

    assert b["skipped"] == busy_message(a.pid), b
    assert (b["sent"], b["recovered"]) == (0, 0), b
    assert report_a["sent"] == len(emails), report_a
    assert report_a["busy"] == 0, report_a
    copies, _ = lesson_ones(slow_server)
    assert copies == Counter(dict.fromkeys(emails, 1))
    assert_all_sent_once(env, emails)


# --- 5. several connections in one run ------------------------------------------------------


def test_four_connections_send_each_lesson_once_and_queue_every_reminder(
    mail_env, database_url, slow_server, tmp_path
):
    """`send` with four SMTP connections: each lesson once, one Message-ID each, and every
    lesson's mid-week reminder queued (answers are recorded in groups)."""
    env = {**mail_env, "REKINDLE_DATABASE_URL": database_url, "REKINDLE_SMTP_CONNECTIONS": "4"}
    emails = seed(env, tmp_path, 300)
    report = send_now(env)
    assert (report["sent"], report["failed"], report["deferred"]) == (300, 0, 0), report
    copies, ids = lesson_ones(slow_server)
    assert copies == Counter(dict.fromkeys(emails, 1))
    assert len({mid for mids in ids.values() for mid in mids}) == 300
    assert slow_server.connections >= 2  # the work was shared between connections
    assert_all_sent_once(env, emails)
    result = run(env, "status", "--now", MONDAY, "--json")
    reminders = json.loads(result.stdout)["deliveries"]["reminder-1"]
    assert {k: v for k, v in reminders.items() if v} == {"queued": 300}


def test_kill_9_with_four_connections_doubles_at_most_one_message_per_connection(
    mail_env, database_url, slow_server, tmp_path
):
    """Killed mid-run with four connections open: nothing lost, at most four duplicates
    (one per connection, the message its server had just accepted), each with its first
    copy's Message-ID."""
    env = {**mail_env, "REKINDLE_DATABASE_URL": database_url, "REKINDLE_SMTP_CONNECTIONS": "4"}
    emails = seed(env, tmp_path, 400)
    with sending(env, tmp_path, "first") as first:
        wait_until("~110 messages to reach the server", lambda: slow_server.count() >= 110, first)
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    before = ledger(env)
    second = send_now(env)
    assert second["sent"] == len(emails) - before.get("sent", 0), (second, before)
    copies, ids = lesson_ones(slow_server)
    assert set(copies) == set(emails)
    doubled = [who for who, n in copies.items() if n > 1]
    assert len(doubled) <= 4, doubled
    assert max(copies.values()) <= 2
    assert all(len(mids) == 1 for mids in ids.values())
    assert_all_sent_once(env, emails)
