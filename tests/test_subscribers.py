"""The subscriber store through the CLI: add, import, list, show, pause, leave, erase, export."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest

import clirun
from clirun import listed, run, script, send

ADDED = "2026-03-02T07:00:00+00:00"  # a Monday, before the 09:00-20:00 window
IN_WINDOW = "2026-03-02T09:30:00+00:00"
LATER_THAT_DAY = "2026-03-02T10:00:00+00:00"
NEXT_MORNING = "2026-03-03T09:30:00+00:00"
NEXT_WEEK = "2026-03-09T09:30:00+00:00"


add = partial(clirun.add, now=ADDED)


def act(env: dict[str, str], verb: str, email: str, now: str = ADDED) -> None:
    result = run({**env, "REKINDLE_NOW": now}, "subscribers", verb, email)
    assert result.exit_code == 0, result.output


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def rejected(stderr: str) -> dict[int, str]:
    """Line number -> reason, from the import's per-row reports on stderr."""
    found = {}
    for line in stderr.splitlines():
        m = re.search(r"\bline (\d+)\b:?\s*(.*)", line)
        assert m, f"not a row report: {line!r}"
        found[int(m.group(1))] = m.group(2)
    return found


# --- add -----------------------------------------------------------------------------------


def test_add_normalises_and_stores_an_active_subscriber(env):
    """Whitespace is trimmed, the domain lower-cased, and the subscriber starts active."""
    result = run(
        {**env, "REKINDLE_NOW": ADDED},
        "subscribers",
        "add",
        "  Ann.Lee@EXAMPLE.Org  ",
        "--name",
        "  Ann Lee ",
    )
    assert result.exit_code == 0, result.output
    rows = listed(env)
    assert list(rows) == ["Ann.Lee@example.org"]
    row = rows["Ann.Lee@example.org"]
    assert (row["name"], row["timezone"], row["status"]) == ("Ann Lee", "UTC", "active")
    assert (row["lessons_sent"], row["next_lesson"]) == (0, 1)
    assert row["next_due"] == "2026-03-02T09:00:00+00:00"


@pytest.mark.parametrize("again", ["ann@example.org", "ANN@EXAMPLE.ORG", " Ann@example.org"])
def test_adding_the_same_address_twice_is_refused(env, again):
    """A second add of the same address, in any case, exits 1 'already a subscriber'."""
    add(env, "Ann@Example.org", "--name", "First")
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", again, "--name", "Second")
    assert result.exit_code == 1
    assert "already a subscriber" in result.stderr
    rows = listed(env)
    assert len(rows) == 1
    assert rows["Ann@example.org"]["name"] == "First"


def test_duplicate_add_from_the_script_is_one_error_line(env):
    """The installed script reports a duplicate as one Error: line and exit status 1."""
    add(env, "ann@example.org")
    done = script(env, "subscribers", "add", "ANN@example.org")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and len(done.stderr.splitlines()) == 1
    assert "already a subscriber" in done.stderr


@pytest.mark.parametrize(
    "name",
    ["Ann\nBcc: victim@example.org", "Ann\r\nLee", "Ann\x00Lee", "Ann\x1bLee", "Ann\u2028Lee"],
    ids=["LF-header", "CRLF", "NUL", "ESC", "line-separator"],
)
def test_names_with_control_characters_are_rejected(env, name):
    """A name that could break a header line is refused and nothing is stored."""
    result = run(
        {**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", "a@example.org", "--name", name
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "name" in result.stderr
    assert listed(env) == {}


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("europe/berlin", "Europe/Berlin"),
        ("AMERICA/NEW_YORK", "America/New_York"),
        (" Asia/Tokyo ", "Asia/Tokyo"),
        ("utc", "UTC"),
    ],
)
def test_timezone_is_matched_without_case_and_stored_canonically(env, given, canonical):
    """--timezone accepts any case and stores the IANA spelling."""
    add(env, "a@example.org", "--timezone", given)
    assert listed(env)["a@example.org"]["timezone"] == canonical


@pytest.mark.parametrize(
    ("email", "tz"),
    [("not-an-address", "UTC"), ("a@example.org", "Mars/Olympus")],
    ids=["bad-address", "unknown-zone"],
)
def test_add_refuses_bad_input_and_stores_nothing(env, email, tz):
    """A malformed address or an unknown time zone exits 1 and leaves the store empty."""
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", email, "--timezone", tz)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ")
    assert listed(env) == {}


# --- import --------------------------------------------------------------------------------


def test_import_reads_any_column_order_and_tolerates_a_bom(env, tmp_path):
    """Header columns may come in any order and case; a UTF-8 BOM is ignored; all rows stored."""
    people = write(
        tmp_path / "people.csv",
        "\ufeffTimezone,Email,Name\r\n"
        "Europe/Berlin,ann@Example.org,Ann\r\n"
        ",bob@example.org,\r\n"
        'asia/tokyo,chi@example.org,"Chiyo, the ""first"""\r\n',
    )
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(people))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    rows = listed(env)
    assert list(rows) == ["ann@example.org", "bob@example.org", "chi@example.org"]
    assert rows["ann@example.org"]["timezone"] == "Europe/Berlin"
    assert rows["bob@example.org"]["name"] is None
    assert rows["bob@example.org"]["timezone"] == "UTC"
    assert rows["chi@example.org"]["name"] == 'Chiyo, the "first"'
    assert rows["chi@example.org"]["timezone"] == "Asia/Tokyo"
    assert {r["status"] for r in rows.values()} == {"active"}
    # It was 16:00 in Tokyo at the import: lesson 1 waits for the next morning there.
    assert rows["chi@example.org"]["next_due"] == "2026-03-03T09:00:00+09:00"


def test_import_with_only_an_email_column_uses_the_configured_zone(env, tmp_path):
    """name and timezone columns are optional; the zone then comes from config."""
    people = write(tmp_path / "people.csv", "email\nann@example.org\nbob@example.org\n")
    result = run(
        {**env, "REKINDLE_TIMEZONE": "America/Chicago"}, "subscribers", "import", str(people)
    )
    assert result.exit_code == 0, result.output
    rows = listed(env)
    assert [r["timezone"] for r in rows.values()] == ["America/Chicago", "America/Chicago"]
    assert [r["name"] for r in rows.values()] == [None, None]


BAD_FILE = (
    "email,name,timezone\n"  # 1
    "good@example.org,Good,Europe/Berlin\n"  # 2
    "not-an-address,Nobody,UTC\n"  # 3
    "zone@example.org,Zed,Mars/Olympus\n"  # 4
    "many@example.org,Many,UTC,surplus\n"  # 5
    "GOOD@example.org,Again,UTC\n"  # 6
    'multi@example.org,"Multi\n'  # 7
    '",Asia/Tokyo\n'  # 8 (the quoted name spans lines 7-8)
    "late@example.org,Late,Nowhere/Special\n"  # 9
    "\n"  # 10 (blank: ignored)
    "ok@example.org,,\n"  # 11
    "@example.org,Empty local part,\n"  # 12
)


def test_import_reports_each_bad_row_with_line_number_and_reason(env, tmp_path):
    """Bad rows are named by line and reason on stderr; good rows are stored; exit status 1."""
    people = write(tmp_path / "people.csv", BAD_FILE)
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(people))
    assert result.exit_code == 1
    bad = rejected(result.stderr)
    assert sorted(bad) == [3, 4, 5, 6, 9, 12]
    assert "not-an-address" in bad[3]
    assert "Mars/Olympus" in bad[4] and "time zone" in bad[4]
    assert "field" in bad[5]
    assert "duplicate" in bad[6] and "line 2" in bad[6]
    assert "Nowhere/Special" in bad[9]
    assert "@example.org" in bad[12]
    rows = listed(env)
    assert list(rows) == ["good@example.org", "multi@example.org", "ok@example.org"]
    assert rows["multi@example.org"]["name"] == "Multi"
    assert rows["multi@example.org"]["timezone"] == "Asia/Tokyo"
    assert "3" in result.stdout  # the summary counts what was imported


def test_import_reports_an_unterminated_quote_with_its_line(env, tmp_path):
    """A quote that is never closed is reported as such, at the line where it opens."""
    people = write(
        tmp_path / "people.csv",
        'email,name\nann@example.org,Ann\nbob@example.org,"Bob\ncat@example.org,Cat\n',
    )
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(people))
    assert result.exit_code == 1
    bad = rejected(result.stderr)
    assert list(bad) == [3]
    assert "quot" in bad[3].lower(), bad[3]
    assert list(listed(env)) == ["ann@example.org"]


def test_import_from_the_script_reports_rows_on_stderr_only(env, tmp_path):
    """Under cron the row reports go to stderr, the summary to stdout, with exit status 1."""
    people = write(tmp_path / "people.csv", BAD_FILE)
    done = script({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(people))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert sorted(rejected(done.stderr)) == [3, 4, 5, 6, 9, 12]
    assert len(done.stdout.splitlines()) == 1
    assert "line" not in done.stdout


def test_import_skips_and_counts_addresses_already_subscribed(env, tmp_path):
    """Rows for existing subscribers are skipped (not changed, not errors) and counted."""
    add(env, "ann@example.org", "--name", "Original", "--timezone", "Europe/Berlin")
    people = write(
        tmp_path / "people.csv",
        "email,name,timezone\nANN@example.org,Changed,Asia/Tokyo\nbob@example.org,Bob,\n",
    )
    result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(people))
    assert result.exit_code == 0, result.output
    assert re.search(r"skipped 1\b|\b1 (were )?already", result.stdout), result.stdout
    rows = listed(env)
    assert list(rows) == ["ann@example.org", "bob@example.org"]
    assert (rows["ann@example.org"]["name"], rows["ann@example.org"]["timezone"]) == (
        "Original",
        "Europe/Berlin",
    )


def test_import_dry_run_writes_nothing_but_reports_the_same(env, tmp_path):
    """--dry-run stores nothing, yet reports the same rejected rows and exit status."""
    people = write(tmp_path / "people.csv", BAD_FILE)
    dry = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", "--dry-run", str(people))
    assert dry.exit_code == 1
    assert listed(env) == {}
    real = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(people))
    assert real.exit_code == 1
    assert dry.stderr == real.stderr
    assert re.findall(r"\d+", dry.stdout) == re.findall(r"\d+", real.stdout)
    assert len(listed(env)) == 3


def test_import_dry_run_of_a_clean_file_exits_0(env, tmp_path):
    """A dry run with nothing wrong succeeds and still stores nothing."""
    people = write(tmp_path / "people.csv", "email\nann@example.org\n")
    result = run(env, "subscribers", "import", "--dry-run", str(people))
    assert result.exit_code == 0, result.output
    assert listed(env) == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "empty"), ("\ufeff", "empty"), ("name,timezone\nAnn,UTC\n", "email")],
    ids=["empty", "only-a-bom", "no-email-column"],
)
def test_import_refuses_a_file_it_cannot_use_in_one_line(env, tmp_path, text, says):
    """An empty file, or one without an email column, exits 1 with one clear Error: line."""
    people = write(tmp_path / "people.csv", text)
    done = script(env, "subscribers", "import", str(people))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert says in lines[0].lower()


# --- list and show --------------------------------------------------------------------------


def test_list_json_fields_types_and_status_filter(env, smtp_server):
    """list --json has the documented fields with the documented types; --status filters."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org", "--name", "Ann", "--timezone", "Europe/London")
    add(env, "bob@example.org", "--timezone", "America/New_York")
    add(env, "cat@example.org")
    add(env, "dan@example.org")
    send(env, "2026-03-02T15:00:00+00:00")  # 15:00 London, 10:00 New York, 15:00 UTC
    act(env, "pause", "cat@example.org")
    act(env, "unsubscribe", "dan@example.org")

    result = run(env, "subscribers", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list) and len(rows) == 4
    for row in rows:
        assert {
            "email",
            "name",
            "timezone",
            "status",
            "lessons_sent",
            "next_lesson",
            "next_due",
        } <= set(row)
        assert type(row["lessons_sent"]) is int
        assert row["next_lesson"] is None or type(row["next_lesson"]) is int
        if row["next_due"] is not None:
            assert datetime.fromisoformat(row["next_due"]).utcoffset() is not None
    by = {r["email"]: r for r in rows}
    assert by["ann@example.org"]["name"] == "Ann"
    assert by["bob@example.org"]["name"] is None
    assert (by["ann@example.org"]["lessons_sent"], by["ann@example.org"]["next_lesson"]) == (1, 2)
    assert by["ann@example.org"]["next_due"] == "2026-03-09T09:00:00+00:00"
    assert by["bob@example.org"]["next_due"] == "2026-03-09T09:00:00-04:00"  # EDT since 8 March
    assert (by["cat@example.org"]["status"], by["cat@example.org"]["next_due"]) == ("paused", None)
    assert by["dan@example.org"]["status"] == "unsubscribed"
    assert (by["dan@example.org"]["next_lesson"], by["dan@example.org"]["next_due"]) == (None, None)

    assert list(listed(env, "--status", "active")) == ["ann@example.org", "bob@example.org"]
    assert list(listed(env, "--status", "paused")) == ["cat@example.org"]
    assert list(listed(env, "--status", "unsubscribed")) == ["dan@example.org"]
    assert listed(env, "--status", "completed") == {}


def test_list_without_json_is_a_table_with_every_subscriber(env):
    """The human list shows a header and one line per subscriber."""
    add(env, "ann@example.org", "--name", "Ann")
    add(env, "bob@example.org")
    result = run(env, "subscribers", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "EMAIL" in lines[0]
    assert len(lines) == 3
    assert "ann@example.org" in lines[1] and "Ann" in lines[1]


def test_show_json_has_the_subscriber_and_their_deliveries(env, smtp_server):
    """show --json gives the subscriber's fields plus each delivery as the server got it."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org", "--name", "Ann")
    send(env, IN_WINDOW)
    send(env, NEXT_WEEK)
    result = run(env, "subscribers", "show", "ANN@example.org", "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert (view["email"], view["name"], view["status"]) == ("ann@example.org", "Ann", "active")
    assert (view["lessons_sent"], view["next_lesson"]) == (2, 3)
    # Lesson 1's nudge was overtaken by lesson 2 (cancelled); lesson 2's waits for mid-week.
    history = {d["key"]: d["status"] for d in view["deliveries"]}
    assert history == {
        "lesson-1": "sent",
        "reminder-1": "cancelled",
        "lesson-2": "sent",
        "reminder-2": "queued",
    }
    deliveries = [d for d in view["deliveries"] if d["key"].startswith("lesson-")]
    assert [d["key"] for d in deliveries] == ["lesson-1", "lesson-2"]
    assert {d["status"] for d in deliveries} == {"sent"}
    sent_at = [datetime.fromisoformat(d["sent_at"]) for d in deliveries]
    assert sent_at == [datetime.fromisoformat(IN_WINDOW), datetime.fromisoformat(NEXT_WEEK)]
    received = [str(m.message["Message-ID"]) for m in smtp_server.to("ann@example.org")]
    assert [d["message_id"] for d in deliveries] == received

    text = run(env, "subscribers", "show", "ann@example.org")
    assert text.exit_code == 0, text.output
    assert "lesson-2" in text.stdout and "ann@example.org" in text.stdout


# --- pause, resume, unsubscribe, remove -------------------------------------------------------


def test_paused_subscriber_gets_nothing_until_resumed_then_at_the_next_window(env, smtp_server):
    """While paused no lesson goes out; after resume the lesson waits for the next window."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org")
    add(env, "bob@example.org")
    act(env, "pause", "bob@example.org", now="2026-03-02T08:00:00+00:00")
    assert send(env, IN_WINDOW)["sent"] == 1
    assert smtp_server.keys("ann@example.org") == ["lesson-1"]
    assert smtp_server.keys("bob@example.org") == []
    assert listed(env)["bob@example.org"]["status"] == "paused"

    act(env, "resume", "bob@example.org", now=LATER_THAT_DAY)
    bob = listed(env)["bob@example.org"]
    assert (bob["status"], bob["next_lesson"]) == ("active", 1)
    assert bob["next_due"] == "2026-03-03T09:00:00+00:00"  # today's window opened before resume
    assert send(env, "2026-03-02T10:30:00+00:00")["sent"] == 0
    assert send(env, NEXT_MORNING)["sent"] == 1
    assert smtp_server.keys("bob@example.org") == ["lesson-1"]
    assert smtp_server.keys("ann@example.org") == ["lesson-1"]


def test_pause_and_resume_refuse_the_wrong_state(env):
    """pause needs an active subscriber and resume a paused one; otherwise exit 1, state kept."""
    add(env, "ann@example.org")
    act(env, "pause", "ann@example.org")
    twice = run(env, "subscribers", "pause", "ann@example.org")
    assert twice.exit_code == 1 and twice.stderr.startswith("Error: ")
    act(env, "resume", "ann@example.org")
    again = run(env, "subscribers", "resume", "ann@example.org")
    assert again.exit_code == 1 and again.stderr.startswith("Error: ")
    act(env, "unsubscribe", "ann@example.org")
    gone = run(env, "subscribers", "pause", "ann@example.org")
    assert gone.exit_code == 1 and gone.stderr.startswith("Error: ")
    assert listed(env)["ann@example.org"]["status"] == "unsubscribed"


def test_unsubscribed_subscriber_gets_no_more_mail(env, smtp_server):
    """After unsubscribe the status says so and later sends skip them."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org")
    add(env, "bob@example.org")
    assert send(env, IN_WINDOW)["sent"] == 2
    act(env, "unsubscribe", "ANN@example.org", now=NEXT_MORNING)
    assert send(env, NEXT_WEEK)["sent"] == 1
    assert send(env, "2026-03-16T09:30:00+00:00")["sent"] == 1
    assert smtp_server.keys("ann@example.org") == ["lesson-1"]
    assert smtp_server.keys("bob@example.org") == ["lesson-1", "lesson-2", "lesson-3"]
    ann = listed(env)["ann@example.org"]
    assert (ann["status"], ann["lessons_sent"], ann["next_due"]) == ("unsubscribed", 1, None)


def test_remove_erases_the_subscriber_and_their_delivery_history(env, smtp_server, tmp_path):
    """After remove, show fails, list and export omit them, and their deliveries are gone."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org", "--name", "Ann Private")
    add(env, "bob@example.org")
    assert send(env, IN_WINDOW)["sent"] == 2
    result = run(env, "subscribers", "remove", "Ann@Example.org")
    assert result.exit_code == 0, result.output

    show = script(env, "subscribers", "show", "ann@example.org")
    assert show.returncode == 1
    assert show.stderr.startswith("Error: ") and len(show.stderr.splitlines()) == 1
    assert list(listed(env)) == ["bob@example.org"]
    export = run(env, "subscribers", "export")
    assert "ann@example.org" not in export.stdout.lower()
    assert "Ann Private" not in export.stdout
    status = json.loads(run(env, "status", "--now", IN_WINDOW, "--json").stdout)
    assert status["deliveries"]["lesson-1"]["sent"] == 1  # only Bob's delivery row is left
    assert status["total_subscribers"] == 1
    again = run(env, "subscribers", "remove", "ann@example.org")
    assert again.exit_code == 1
    # The address may subscribe again from scratch.
    add(env, "ann@example.org", now=NEXT_WEEK)
    assert listed(env)["ann@example.org"]["lessons_sent"] == 0


# --- export ------------------------------------------------------------------------------------


def exported(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_round_trips_through_import_into_a_fresh_database(env, tmp_path):
    """export writes email,name,timezone first; import reads it back into a new database."""
    add(env, "ann@example.org", "--name", "Ann Lee", "--timezone", "Europe/Berlin")
    add(env, "bob@example.org")
    add(env, "zoë@example.org", "--name", 'Zoë "Z" Müller, Jr.', "--timezone", "Asia/Kolkata")
    act(env, "pause", "bob@example.org")
    backup = tmp_path / "backup.csv"
    result = run(env, "subscribers", "export", str(backup))
    assert result.exit_code == 0, result.output
    header = backup.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("email,name,timezone")

    fresh = {**env, "REKINDLE_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    back = run({**fresh, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(backup))
    assert back.exit_code == 0, back.output
    before = {e: (r["name"], r["timezone"]) for e, r in listed(env).items()}
    after = {e: (r["name"], r["timezone"]) for e, r in listed(fresh).items()}
    assert after == before
    assert len(after) == 3


def test_export_neutralises_spreadsheet_formulas(env):
    """Cells starting with = + - @ are prefixed with ' so a spreadsheet shows them as text."""
    names = {
        "a@example.org": '=HYPERLINK("https://evil.example","click")',
        "b@example.org": "+1 555 0100",
        "c@example.org": "-2+3",
        "d@example.org": "@SUM(A1)",
        "e@example.org": "Plain = fine",
    }
    for email, name in names.items():
        add(env, email, "--name", name)
    result = run(env, "subscribers", "export")
    assert result.exit_code == 0, result.output
    cells = {row["email"]: row["name"] for row in exported(result.stdout)}
    for email, name in names.items():
        expected = name if email == "e@example.org" else "'" + name
        assert cells[email] == expected


def test_export_to_a_file_or_to_standard_output(env, tmp_path):
    """export FILE writes the CSV there (stdout stays clean); without FILE it goes to stdout."""
    add(env, "ann@example.org", "--name", "Ann")
    add(env, "bob@example.org")
    to_stdout = run(env, "subscribers", "export")
    assert to_stdout.exit_code == 0, to_stdout.output
    rows = exported(to_stdout.stdout)
    assert [r["email"] for r in rows] == ["ann@example.org", "bob@example.org"]
    assert rows[0]["name"] == "Ann" and rows[0]["status"] == "active"

    target = tmp_path / "out.csv"
    to_file = run(env, "subscribers", "export", str(target))
    assert to_file.exit_code == 0, to_file.output
    assert to_file.stdout == ""
    assert target.read_text(encoding="utf-8") == to_stdout.stdout
    dash = run(env, "subscribers", "export", "-")
    assert dash.stdout == to_stdout.stdout


def test_export_of_an_empty_store_is_just_the_header(env):
    """With no subscribers, export prints the header line alone."""
    result = run(env, "subscribers", "export")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("email,name,timezone")
    assert len(result.stdout.splitlines()) == 1
