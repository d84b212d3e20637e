"""Restores that respect consent: export then import gives back every person as they were."""

from __future__ import annotations

import codecs
import csv
import io
import json
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import clirun
from clirun import listed, run, script, send
from conftest import PG_URL
from mailer.store.db import normalize_url
from subscribers.models import Status

ADDED = "2026-03-02T07:00:00+00:00"  # a Monday, before the 09:00-20:00 window
IN_WINDOW = "2026-03-02T09:30:00+00:00"
NEXT_WEEK = "2026-03-09T09:30:00+00:00"
RESTORED = "2026-03-20T12:00:00+00:00"  # the day of the restore, weeks later
EXPORT_HEADER = (
    "email,name,timezone,status,lessons_sent,next_lesson,next_due,source,created_at,confirmed_at,"
    "time_of_day,reminders"
)
# Names a spreadsheet would run as formulas, and ones that merely look like the quote export adds.
FORMULA_NAMES = ["=SUM(A1)", "-Ann", "+1 555 0100", "@home", "'quoted", "'=SUM(A1)", "''-x"]
NOT_ACTIVE = [s.value for s in Status if s not in (Status.ACTIVE, Status.PAUSED, Status.COMPLETED)]

add = partial(clirun.add, now=ADDED)


@pytest.fixture
def second_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Another empty database of the same kind as `database_url`: the one restored into."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    assert PG_URL
    schema = f"rk_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(normalize_url(PG_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def source(env: dict[str, str], database_url: str) -> dict[str, str]:
    """The `env` fixture on SQLite or PostgreSQL: the database that is backed up."""
    return {**env, "REKINDLE_DATABASE_URL": database_url}


@pytest.fixture
def target(env: dict[str, str], second_url: str) -> dict[str, str]:
    """The same configuration pointed at an empty database: where the backup is restored."""
    return {**env, "REKINDLE_DATABASE_URL": second_url, "REKINDLE_NOW": RESTORED}


def export(env: dict[str, str]) -> str:
    result = run(env, "subscribers", "export")
    assert result.exit_code == 0, result.output
    return result.stdout


def import_file(env: dict[str, str], path: Path, *options: str) -> clirun.Result:
    return run(env, "subscribers", "import", str(path), *options)


def rows(csv_text: str) -> dict[str, dict[str, str]]:
    return {r["email"]: r for r in csv.DictReader(io.StringIO(csv_text))}


def write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


# --- the round trip ---------------------------------------------------------------------------


def test_export_then_import_into_an_empty_database_is_the_identity(source, target, tmp_path):
    """Every status, consent record, formula-looking name and schedule survives byte for byte."""
    for i, name in enumerate(FORMULA_NAMES):
        add(source, f"f{i}@example.org", "--name", name, "--timezone", "Europe/Berlin")
    zoe = "Zoë \u0645\u06cc\u200c\u062e"
    add(source, "zoe@example.org", "--name", zoe, "--timezone", "Asia/Tehran")
    add(source, "paused@example.org", "--name", "Pat")
    add(source, "left@example.org", "--name", "Lee")
    add(source, "eve@example.org", "--name", "Eve", "--timezone", "America/Chicago")
    at_added = {**source, "REKINDLE_NOW": ADDED}
    for args in (
        ("set", "eve@example.org", "--time-of-day", "evening"),
        ("reminders", "eve@example.org", "off"),
        ("pause", "paused@example.org"),
        ("unsubscribe", "left@example.org"),
        ("add", "new@example.org", "--double-opt-in"),
    ):
        done = run(at_added, "subscribers", *args)
        assert done.exit_code == 0, done.output
    others = write(
        tmp_path / "others.csv",
        ["email,name,status,created_at,confirmed_at,source"]
        + [
            f"{s}@example.org,{s.title()},{s},2025-01-0{i + 1}T08:00:00+00:00,"
            f"2025-01-0{i + 1}T10:05:00+01:00,web"
            for i, s in enumerate([*NOT_ACTIVE, "completed"])
        ],
    )
    assert import_file({**source, "REKINDLE_NOW": ADDED}, others).exit_code == 0
    before = export(source)
    assert before.splitlines()[0] == EXPORT_HEADER
    exported_names = {r["email"]: r["name"] for r in rows(before).values()}
    assert exported_names["f0@example.org"] == "'=SUM(A1)"  # protected for spreadsheets
    assert exported_names["f4@example.org"] == "'quoted"  # nothing to protect
    assert exported_names["f5@example.org"] == "''=SUM(A1)"
    eve = rows(before)["eve@example.org"]
    assert (eve["time_of_day"], eve["reminders"], eve["next_due"]) == (
        "evening",
        "False",
        "2026-03-02T18:00:00-06:00",
    )

    backup = tmp_path / "backup.csv"
    backup.write_text(before, encoding="utf-8")
    restored = import_file(target, backup)
    assert restored.exit_code == 0, restored.output
    assert restored.stderr == ""
    assert export(target) == before
    names = {e: r["name"] for e, r in listed(target).items()}
    assert [names[f"f{i}@example.org"] for i in range(len(FORMULA_NAMES))] == FORMULA_NAMES


def test_a_restore_in_the_middle_of_the_course_sends_no_lesson_again(env, tmp_path, smtp_server):
    """A subscriber at lesson 2 when backed up gets lesson 2 next, when it was due, not lesson 1."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org", "--name", "Ann")
    assert send(env, IN_WINDOW)["sent"] == 1
    before = export(env)
    backup = tmp_path / "backup.csv"
    backup.write_text(before, encoding="utf-8")
    fresh = {**env, "REKINDLE_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    assert import_file({**fresh, "REKINDLE_NOW": IN_WINDOW}, backup).exit_code == 0
    after = rows(export(fresh))["ann@example.org"]
    original = rows(before)["ann@example.org"]
    assert (original["lessons_sent"], after["lessons_sent"]) == (
        "1",
        "0",
    )  # the history stays behind
    del original["lessons_sent"], after["lessons_sent"]
    assert after == original
    assert (after["next_lesson"], after["next_due"]) == ("2", "2026-03-09T09:00:00+00:00")
    assert send(fresh, "2026-03-02T10:00:00+00:00")["sent"] == 0
    assert send(fresh, NEXT_WEEK)["sent"] == 1
    assert smtp_server.lessons("ann@example.org") == ["lesson-1", "lesson-2"]


# --- status and consent -------------------------------------------------------------------------


def test_import_never_makes_anyone_active_who_was_not(source, tmp_path, smtp_server):
    """Unsubscribed, bounced and pending rows stay so: no lesson and no confirmation goes out."""
    source["REKINDLE_SMTP_URL"] = smtp_server.url
    people = write(
        tmp_path / "people.csv",
        ["email,name,status"]
        + [f"{s}@example.org,{s.title()},{s.upper()}" for s in NOT_ACTIVE]
        + ["paused@example.org,Pat,paused", "on@example.org,On,active", "plain@example.org,Plain,"],
    )
    done = import_file({**source, "REKINDLE_NOW": ADDED}, people)
    assert done.exit_code == 0, done.output
    assert "pending" in done.stdout and "unsubscribed" in done.stdout
    statuses = {e: r["status"] for e, r in listed(source).items()}
    assert statuses == {
        **{f"{s}@example.org": s for s in NOT_ACTIVE},
        "paused@example.org": "paused",
        "on@example.org": "active",
        "plain@example.org": "active",
    }
    assert smtp_server.messages == []  # import sends nothing, not even to pending people
    assert send(source, IN_WINDOW)["sent"] == 2
    assert {r for m in smtp_server.messages for r in m.rcpt_tos} == {
        "on@example.org",
        "plain@example.org",
    }


def test_import_leaves_an_existing_subscriber_as_they_are(source, tmp_path):
    """A row for someone already present changes nothing: not their status, name or zone."""
    add(source, "left@example.org", "--name", "Lee", "--timezone", "Europe/Berlin")
    add(source, "on@example.org", "--name", "On")
    left = run({**source, "REKINDLE_NOW": ADDED}, "subscribers", "unsubscribe", "left@example.org")
    assert left.exit_code == 0
    before = export(source)
    people = write(
        tmp_path / "people.csv",
        [
            "email,name,timezone,status,source",
            "LEFT@example.org,Other,Asia/Tokyo,active,web",
            "on@example.org,Other,Asia/Tokyo,unsubscribed,web",
        ],
    )
    done = import_file({**source, "REKINDLE_NOW": RESTORED}, people)
    assert done.exit_code == 0, done.output
    assert "skipped 2" in done.stdout
    assert export(source) == before


def test_the_consent_record_is_kept_as_exported(source, tmp_path):
    """created_at, confirmed_at and source come from the file; without them, the import's own."""
    people = write(
        tmp_path / "people.csv",
        [
            "email,status,created_at,confirmed_at,source",
            "ann@example.org,active,2025-06-01T10:00:00Z,2025-06-01T12:30:00+02:00,web",
            "bob@example.org,,,,",
        ],
    )
    assert import_file({**source, "REKINDLE_NOW": RESTORED}, people).exit_code == 0
    shown = {}
    for address in ("ann@example.org", "bob@example.org"):
        result = run(source, "subscribers", "show", address, "--json")
        assert result.exit_code == 0, result.output
        shown[address] = json.loads(result.stdout)
    ann, bob = shown["ann@example.org"], shown["bob@example.org"]
    assert (ann["created_at"], ann["confirmed_at"], ann["source"]) == (
        "2025-06-01T10:00:00+00:00",
        "2025-06-01T10:30:00+00:00",
        "web",
    )
    assert (bob["created_at"], bob["confirmed_at"], bob["source"]) == (RESTORED, None, "import")


BAD_ROWS = {
    "created_at not a time": ("a@example.org,active,yesterday,,web,,", "created_at"),
    "created_at without offset": ("b@example.org,active,2025-06-01T10:00:00,,web,,", "offset"),
    "confirmed_at in the future": (
        "c@example.org,active,2025-06-01T10:00:00Z,2027-01-01T00:00:00Z,web,,",
        "future",
    ),
    "confirmed before created": (
        "d@example.org,active,2025-06-02T10:00:00Z,2025-06-01T10:00:00Z,web,,",
        "earlier",
    ),
    "unknown status": ("e@example.org,resting,,,web,,", "status"),
    "source not a word": ("f@example.org,active,,,Web Form!,,", "source"),
    "next lesson past the course": ("g@example.org,active,,,web,7,", "next_lesson"),
    "next lesson not a number": ("h@example.org,active,,,web,²,", "next_lesson"),
    "next_due not a time": ("i@example.org,active,,,web,2,soon", "next_due"),
}


def test_bad_consent_fields_reject_the_row_with_its_line_and_reason(source, tmp_path):
    """Each malformed timestamp, status, source or lesson is one reported row; good rows stay."""
    lines = ["email,status,created_at,confirmed_at,source,next_lesson,next_due"]
    lines += [row for row, _ in BAD_ROWS.values()]
    lines += ["good@example.org,paused,2025-06-01T10:00:00Z,,web,3,"]
    done = script(
        {**source, "REKINDLE_NOW": RESTORED},
        "subscribers",
        "import",
        str(write(tmp_path / "p.csv", lines)),
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    reports = done.stderr.splitlines()
    assert len(reports) == len(BAD_ROWS)
    for line, (report, (_, word)) in enumerate(zip(reports, BAD_ROWS.values(), strict=True), 2):
        assert f"line {line}: " in report and word in report, report
    stored = listed(source)
    assert list(stored) == ["good@example.org"]
    assert (stored["good@example.org"]["status"], stored["good@example.org"]["next_lesson"]) == (
        "paused",
        3,
    )


def test_the_readers_own_choices_are_restored_and_bad_ones_are_reported(source, tmp_path):
    """time_of_day and reminders come back as the reader set them: an evening reader's first
    lesson is due when their evening opens, and their reminders stay off; bad values are rows
    reported with their line."""
    lines = [
        "email,timezone,time_of_day,reminders",
        "eve@example.org,Europe/Paris,evening,off",
        "morn@example.org,Europe/Paris,,",
        "noon@example.org,Europe/Paris,noon,",
        "maybe@example.org,Europe/Paris,morning,maybe",
    ]
    done = script(
        {**source, "REKINDLE_NOW": RESTORED},
        "subscribers",
        "import",
        str(write(tmp_path / "p.csv", lines)),
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{tmp_path / 'p.csv'}: line 4: time_of_day 'noon' must be morning or evening",
        f"{tmp_path / 'p.csv'}: line 5: reminders 'maybe' must be true or false",
    ]
    stored = listed(source)
    assert list(stored) == ["eve@example.org", "morn@example.org"]
    eve, morn = stored["eve@example.org"], stored["morn@example.org"]
    assert (eve["time_of_day"], eve["reminders"], eve["next_due"]) == (
        "evening",
        False,
        "2026-03-20T18:00:00+01:00",
    )
    assert (morn["time_of_day"], morn["reminders"], morn["next_due"]) == (
        "morning",
        True,
        "2026-03-21T09:00:00+01:00",
    )


# --- encodings ------------------------------------------------------------------------------


ENCODINGS = {
    "utf-8": b"",
    "utf-8-bom": codecs.BOM_UTF8,
    "utf-16-le-bom": codecs.BOM_UTF16_LE,
    "utf-16-be-bom": codecs.BOM_UTF16_BE,
}
CODECS = {
    "utf-8": "utf-8",
    "utf-8-bom": "utf-8",
    "utf-16-le-bom": "utf-16-le",
    "utf-16-be-bom": "utf-16-be",
}


PEOPLE = (
    "email,name,timezone\r\nzoe@example.org,Zoë Çelik,Europe/Istanbul\r\nli@example.org,李小龙,\r\n"
)


@pytest.mark.parametrize("kind", ENCODINGS)
def test_import_reads_utf8_with_or_without_bom_and_utf16_with_bom(source, tmp_path, kind):
    """The same people come in whatever the encoding; non-ASCII names arrive intact."""
    path = tmp_path / "people.csv"
    path.write_bytes(ENCODINGS[kind] + PEOPLE.encode(CODECS[kind]))
    done = script({**source, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(path))
    assert done.returncode == 0, done.stderr
    names = {e: (r["name"], r["timezone"]) for e, r in listed(source).items()}
    assert names == {
        "zoe@example.org": ("Zoë Çelik", "Europe/Istanbul"),
        "li@example.org": ("李小龙", "UTC"),
    }


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"email,name\nann@example.org,Ann\nzoe@example.org,Zo\xe9\n", 3),  # Latin-1, not UTF-8
        (
            codecs.BOM_UTF16_LE
            + "email\nann@example.org\n".encode("utf-16-le")
            + b"\x00\xdc\n\x00",
            3,
        ),
        ("email,name\nann@example.org,Ann\n".encode("utf-16-le"), 1),  # UTF-16 without a BOM
    ],
    ids=["latin-1", "utf-16-lone-surrogate", "utf-16-without-bom"],
)
def test_an_undecodable_file_is_one_error_line_naming_the_line_and_nothing_is_stored(
    source, tmp_path, data, line
):
    """Bytes that are not the file's encoding: exit 1, one line naming the line, no traceback."""
    path = tmp_path / "people.csv"
    path.write_bytes(data)
    done = script({**source, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(path))
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert f"line {line}:" in done.stderr and "Traceback" not in done.stderr
    assert listed(source) == {}


def test_a_bad_byte_late_in_a_long_file_stores_none_of_the_rows_before_it(source, tmp_path):
    """The file is read whole before anything is stored: rows before the bad line are not kept."""
    lines = ["email,name"] + [f"p{i}@example.org,P{i}" for i in range(1500)]  # over one batch
    path = tmp_path / "people.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"late@example.org,Ren\xe9e\n")
    done = script({**source, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(path))
    assert done.returncode == 1
    assert "line 1502:" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert listed(source) == {}
