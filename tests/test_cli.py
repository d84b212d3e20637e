"""The command-line contract (docs/commands.md): help, exit codes, errors, config, clock, status."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from subprocess import CompletedProcess

import click
import pytest

import clirun
from clirun import listed, run, script
from mailer.cli import cli

ADDED = "2026-03-02T07:00:00+00:00"  # a Monday, before the 09:00-20:00 window
IN_WINDOW = "2026-03-02T09:30:00+00:00"
NEXT_WEEK = "2026-03-09T09:30:00+00:00"


def walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command and group under `command`, with the words that invoke it."""
    found = [(path, command)]
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            found += walk(sub, (*path, name))
    return found


COMMANDS = walk(cli)
LEAVES = [(p, c) for p, c in COMMANDS if not isinstance(c, click.Group)]


def ids(entries: list[tuple[tuple[str, ...], click.Command]]) -> list[str]:
    return [" ".join(p) or "rekindle-mail" for p, _ in entries]


add = partial(clirun.add, now=ADDED)


# --- help text (after sqlite-utils tests/test_docs.py) ---------------------------------------


def test_the_command_tree_is_what_the_contract_lists():
    """Every command of docs/commands.md (bar daemon, tested elsewhere) is reachable."""
    paths = {" ".join(p) for p, _ in COMMANDS}
    for expected in (
        "subscribers add",
        "subscribers import",
        "subscribers list",
        "subscribers show",
        "subscribers pause",
        "subscribers resume",
        "subscribers unsubscribe",
        "subscribers remove",
        "subscribers export",
        "course list",
        "course check",
        "preview",
        "test-send",
        "send",
        "status",
        "db upgrade",
    ):
        assert expected in paths


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_every_command_and_group_has_help_text(path, command):
    """No command or group is listed without a description."""
    assert command.help and command.help.strip(), f"{' '.join(path)} has no help text"
    assert command.get_short_help_str().strip()


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=ids(LEAVES))
def test_every_leaf_command_docstring_has_an_example(path, command):
    """Each command's docstring carries an 'Example:' block that runs rekindle-mail."""
    assert "Example:" in command.help, f"{' '.join(path)} has no Example: block"
    example = command.help.split("Example:", 1)[1]
    assert "rekindle-mail " + " ".join(path) in example


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_help_of_every_command_exits_0(env, path, command):
    """`--help` works for every command and group, and shows its usage line."""
    result = run(env, *path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert command.help.strip().splitlines()[0] in " ".join(result.stdout.split())


def test_installed_script_help_exits_0(env):
    """The console script answers --help with exit status 0 and lists the groups."""
    done = script(env, "--help")
    assert done.returncode == 0, done.stderr
    assert "subscribers" in done.stdout and "send" in done.stdout


# Loaded only when a message is built: an idle cron run must not pay for them.
RENDERING = (
    "jinja2",
    "markdown_it",
    "premailer",
    "email_validator",
    "itsdangerous",
    "mailer.content.render",
)
_LOADED = """
import sys
from mailer.cli import main
sys.argv = ["rekindle-mail", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    code = done.code
print(code, *sorted(m for m in {rendering} if m in sys.modules))
"""


def _loaded(env: dict[str, str], *args: str) -> tuple[str, list[str]]:
    """Run the CLI in a fresh interpreter: its exit code, and the RENDERING modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED.format(rendering=RENDERING), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    code, *modules = done.stdout.splitlines()[-1].split()
    return code, modules


def test_an_idle_send_loads_no_rendering_and_a_due_one_does(env):
    """Nothing due: the run touches the database only; a due lesson loads the renderer."""
    add(env, "ann@example.org")
    assert _loaded(env, "send", "--now", ADDED) == ("0", [])
    code, modules = _loaded(env, "send", "--now", IN_WINDOW)
    assert code == "0"
    assert "mailer.content.render" in modules and "jinja2" in modules, modules


_COMMAND_MODULES = (
    "import sys, mailer.cli; print([m for m in sys.modules if m.startswith('mailer.cli.')])"
)


def test_commands_load_lazily_yet_all_are_listed(env):
    """`--help` lists every command although none of their modules is imported before use."""
    done = subprocess.run(
        [sys.executable, "-c", _COMMAND_MODULES], env=env, capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", done.stderr
    top = {path[0] for path, _ in COMMANDS if len(path) == 1}
    assert set(cli.list_commands(click.Context(cli))) == top
    assert {"send", "status", "subscribers", "daemon", "serve", "config"} <= top


# --- exit codes and one-line errors from the installed script ---------------------------------


@dataclass(frozen=True)
class Case:
    """One subprocess run of the console script and what it must answer."""

    id: str
    args: tuple[str, ...]
    code: int
    says: str  # text the Error: line must contain (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written into the working directory


UNKNOWN = "nobody@example.org"
CASES = [
    Case("unknown-command", ("bogus",), 2, "no such command"),
    Case("missing-argument", ("subscribers", "show"), 2, "missing argument"),
    Case("bad-option", ("send", "--bogus"), 2, "no such option"),
    Case("bad-choice", ("subscribers", "list", "--status", "asleep"), 2, "asleep"),
    Case("week-not-a-number", ("preview", "seven"), 2, "seven"),
    *(
        Case(f"unknown-subscriber-{verb}", ("subscribers", verb, UNKNOWN), 1, UNKNOWN)
        for verb in ("show", "pause", "resume", "unsubscribe", "remove")
    ),
    Case("preview-unknown-lesson", ("preview", "7"), 1, "lesson 7"),
    Case("test-send-unknown-lesson", ("test-send", "me@example.org", "9"), 1, "lesson 9"),
    Case("test-send-invalid-address", ("test-send", "x", "1"), 1, "'x'"),
    Case("invalid-address", ("subscribers", "add", "ann@@example.org"), 1, "ann@@example.org"),
    Case(
        "unknown-zone",
        ("subscribers", "add", "ann@example.org", "--timezone", "Mars/Olympus"),
        1,
        "Mars/Olympus",
    ),
    Case("bad-now-send", ("send", "--now", "yesterday"), 1, "yesterday"),
    Case("now-without-offset", ("status", "--now", "2026-03-02T09:30:00"), 1, "offset"),
    Case(
        "bad-REKINDLE_NOW",
        ("subscribers", "add", "ann@example.org"),
        1,
        "REKINDLE_NOW",
        env={"REKINDLE_NOW": "next tuesday"},
    ),
    Case(
        "unknown-config-key",
        ("status",),
        1,
        "colour",
        files={"rekindle.toml": 'timezone = "UTC"\ncolour = "blue"\n'},
    ),
    Case("bad-send-window", ("status",), 1, "send_window", env={"REKINDLE_SEND_WINDOW": "9-5"}),
    Case(
        "bad-smtp-scheme",
        ("status",),
        1,
        "smtp_url",
        env={"REKINDLE_SMTP_URL": "http://mail.example.org"},
    ),
    Case("missing-config-option", ("--config", "nope.toml", "status"), 1, "nope.toml"),
    Case(
        "missing-REKINDLE_CONFIG", ("status",), 1, "nope.toml", env={"REKINDLE_CONFIG": "nope.toml"}
    ),
]
USAGE = [c for c in CASES if c.code == 2]
USER = [c for c in CASES if c.code == 1]


@pytest.fixture(scope="module")
def contract_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompletedProcess[str]]:
    """Every Case run once as a subprocess, in parallel, each in its own directory and database."""
    root = tmp_path_factory.mktemp("contract")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}

    def one(case: Case) -> tuple[str, CompletedProcess[str]]:
        cwd = root / case.id
        (cwd / "home").mkdir(parents=True)
        for name, text in case.files.items():
            (cwd / name).write_text(text, encoding="utf-8")
        env = {
            **clean,
            "HOME": str(cwd / "home"),
            "XDG_DATA_HOME": str(cwd / "home" / ".local" / "share"),
            "REKINDLE_DATABASE_URL": f"sqlite:///{cwd / 'rekindle.db'}",
            "REKINDLE_OUTBOX": str(cwd / "outbox"),
            "REKINDLE_FROM": "Rekindle <hello@example.org>",
            **case.env,
        }
        return case.id, script(env, *case.args, cwd=cwd)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", USAGE, ids=[c.id for c in USAGE])
def test_usage_errors_exit_2_with_an_error_line(contract_runs, case):
    """Unknown commands, missing arguments and bad options exit 2 with click's Error: line."""
    done = contract_runs[case.id]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:")
    assert case.says.lower() in last.lower()
    assert done.stdout == ""


@pytest.mark.parametrize("case", USER, ids=[c.id for c in USER])
def test_user_errors_exit_1_with_exactly_one_error_line(contract_runs, case):
    """Errors the user must fix exit 1 with one 'Error:' line on stderr and no traceback."""
    done = contract_runs[case.id]
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    assert case.says.lower() in lines[0].lower()


def test_debug_shows_the_traceback_that_is_otherwise_hidden(env, tmp_path):
    """An OS error (export into a missing folder) is one line, or a full traceback with --debug."""
    target = str(tmp_path / "no-such-folder" / "out.csv")
    plain = script(env, "subscribers", "export", target)
    assert plain.returncode == 1
    assert plain.stderr.startswith("Error: ") and len(plain.stderr.splitlines()) == 1
    assert "Traceback" not in plain.stderr
    debug = script(env, "--debug", "subscribers", "export", target)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "no-such-folder" in debug.stderr


# --- configuration: file, --config, REKINDLE_CONFIG, REKINDLE_<KEY> ----------------------------


def zone_of_new_subscriber(env: dict[str, str], *global_args: str) -> str:
    """Add a subscriber without --timezone; return the zone the config gave them."""
    result = run(
        {**env, "REKINDLE_NOW": ADDED}, *global_args, "subscribers", "add", "z@example.org"
    )
    assert result.exit_code == 0, result.output
    zone = listed(env)["z@example.org"]["timezone"]
    assert run(env, "subscribers", "remove", "z@example.org").exit_code == 0
    return zone


def test_config_file_in_working_directory_is_read(env, tmp_path):
    """rekindle.toml in the working directory sets the default time zone of new subscribers."""
    assert zone_of_new_subscriber(env) == "UTC"
    (tmp_path / "rekindle.toml").write_text('timezone = "Asia/Tokyo"\n', encoding="utf-8")
    assert zone_of_new_subscriber(env) == "Asia/Tokyo"


def test_config_option_and_variable_pick_another_file(env, tmp_path):
    """--config FILE and REKINDLE_CONFIG replace ./rekindle.toml; --config beats the variable."""
    (tmp_path / "rekindle.toml").write_text('timezone = "Asia/Tokyo"\n', encoding="utf-8")
    chicago = tmp_path / "chicago.toml"
    chicago.write_text('timezone = "America/Chicago"\n', encoding="utf-8")
    lima = tmp_path / "lima.toml"
    lima.write_text('timezone = "America/Lima"\n', encoding="utf-8")
    assert zone_of_new_subscriber(env, "--config", str(chicago)) == "America/Chicago"
    assert zone_of_new_subscriber({**env, "REKINDLE_CONFIG": str(lima)}) == "America/Lima"
    both = {**env, "REKINDLE_CONFIG": str(lima)}
    assert zone_of_new_subscriber(both, "--config", str(chicago)) == "America/Chicago"


def test_environment_variable_overrides_the_config_file(env, tmp_path):
    """REKINDLE_TIMEZONE beats the timezone key of the config file."""
    (tmp_path / "rekindle.toml").write_text('timezone = "Asia/Tokyo"\n', encoding="utf-8")
    assert zone_of_new_subscriber({**env, "REKINDLE_TIMEZONE": "Europe/Paris"}) == "Europe/Paris"


def test_config_file_keys_reach_the_database_setting(env, tmp_path):
    """database_url from the file is used when no variable overrides it; the variable wins."""
    other = tmp_path / "from-file.db"
    (tmp_path / "rekindle.toml").write_text(
        f'database_url = "sqlite:///{other}"\n', encoding="utf-8"
    )
    file_env = {k: v for k, v in env.items() if k != "REKINDLE_DATABASE_URL"}
    add(file_env, "file@example.org")
    assert list(listed(file_env)) == ["file@example.org"]
    assert other.exists()
    assert listed(env) == {}  # REKINDLE_DATABASE_URL names the fixture's database


def test_unknown_key_in_config_file_exits_1_naming_it(env, tmp_path):
    """A misspelt key is refused, not ignored, and the message names it."""
    (tmp_path / "rekindle.toml").write_text('time_zone = "Asia/Tokyo"\n', encoding="utf-8")
    result = run(env, "subscribers", "list")
    assert result.exit_code == 1
    assert "time_zone" in result.stderr and result.stderr.startswith("Error: ")


# --- the clock: REKINDLE_NOW everywhere, --now for send and status -----------------------------


def test_rekindle_now_sets_the_start_of_a_new_subscriber(env):
    """`subscribers add` schedules lesson 1 from REKINDLE_NOW, in the subscriber's zone."""
    add(env, "early@example.org", "--timezone", "Europe/Berlin", now="2026-03-02T07:00:00+00:00")
    add(env, "late@example.org", "--timezone", "Europe/Berlin", now="2026-03-02T10:00:00+00:00")
    add(env, "tokyo@example.org", "--timezone", "Asia/Tokyo", now="2026-03-02T10:00:00+00:00")
    rows = listed(env)
    assert rows["early@example.org"]["next_due"] == "2026-03-02T09:00:00+01:00"
    assert rows["late@example.org"]["next_due"] == "2026-03-03T09:00:00+01:00"
    assert rows["tokyo@example.org"]["next_due"] == "2026-03-03T09:00:00+09:00"


def test_now_option_overrides_rekindle_now_for_send(env, smtp_server):
    """send uses REKINDLE_NOW, and --now replaces it when both are given."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ann@example.org")
    before = run({**env, "REKINDLE_NOW": ADDED}, "send", "--json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["sent"] == 0
    assert smtp_server.messages == []
    overridden = run({**env, "REKINDLE_NOW": ADDED}, "send", "--now", IN_WINDOW, "--json")
    assert overridden.exit_code == 0, overridden.output
    assert json.loads(overridden.stdout)["sent"] == 1
    assert smtp_server.keys("ann@example.org") == ["lesson-1"]
    sent = smtp_server.messages[0].message["Date"].datetime
    assert sent == datetime.fromisoformat(IN_WINDOW)


def test_now_option_overrides_rekindle_now_for_status(env):
    """status counts what is due at REKINDLE_NOW, or at --now when given."""
    add(env, "ann@example.org")
    at_env = run({**env, "REKINDLE_NOW": IN_WINDOW}, "status", "--json")
    assert at_env.exit_code == 0, at_env.output
    assert json.loads(at_env.stdout)["due_now"] == 1
    at_option = run({**env, "REKINDLE_NOW": IN_WINDOW}, "status", "--now", ADDED, "--json")
    summary = json.loads(at_option.stdout)
    assert summary["due_now"] == 0
    assert datetime.fromisoformat(summary["next_due"]) == datetime.fromisoformat(
        "2026-03-02T09:00:00+00:00"
    )


# --- status ----------------------------------------------------------------------------------


def test_status_reports_subscribers_deliveries_due_and_failures(env, smtp_server):
    """status --json counts subscribers by status and deliveries by lesson, and lists failures."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    for who in ("ann", "bob", "cat", "dan", "eve"):
        add(env, f"{who}@example.org")
    assert (
        run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "pause", "cat@example.org").exit_code
        == 0
    )
    assert (
        run(
            {**env, "REKINDLE_NOW": ADDED}, "subscribers", "unsubscribe", "eve@example.org"
        ).exit_code
        == 0
    )
    smtp_server.script.rcpt["dan@example.org"] = "550 5.1.1 <dan@example.org>: no such user"
    sent = run(env, "send", "--now", IN_WINDOW, "--json")
    assert json.loads(sent.stdout)["sent"] == 2, sent.output

    result = run(env, "status", "--now", IN_WINDOW, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: v for k, v in summary["subscribers"].items() if v} == {
        "active": 2,
        "paused": 1,
        "bounced": 1,
        "unsubscribed": 1,
    }
    lesson1 = summary["deliveries"]["lesson-1"]
    assert (lesson1["sent"], lesson1["failed"]) == (2, 1)
    # Each lesson sent queues its mid-week reminder for later in the week.
    assert list(summary["deliveries"]) == ["lesson-1", "reminder-1"]
    assert summary["deliveries"]["reminder-1"]["queued"] == lesson1["sent"]
    assert summary["due_now"] == 0
    # The next thing due is the mid-week reminder (three days on), before lesson 2.
    assert datetime.fromisoformat(summary["next_due"]) == datetime.fromisoformat(
        "2026-03-05T09:00:00+00:00"
    )
    [failure] = summary["recent_failures"]
    assert failure["email"] == "dan@example.org"
    assert failure["key"] == "lesson-1"
    assert "550" in failure["reply"]

    a_week_on = json.loads(run(env, "status", "--now", NEXT_WEEK, "--json").stdout)
    assert a_week_on["due_now"] == 2

    text = run(env, "status", "--now", IN_WINDOW)
    assert text.exit_code == 0, text.output
    assert "lesson-1" in text.stdout
    assert "dan@example.org" in text.stdout
    assert "5" in text.stdout.splitlines()[0]  # five subscribers in all


def test_status_on_an_empty_database(env):
    """status works before anyone subscribed: zero counts, nothing due, no failures."""
    result = run(env, "status", "--now", IN_WINDOW, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["subscribers"].values()) == {0}
    assert summary["deliveries"] == {}
    assert (summary["due_now"], summary["next_due"], summary["recent_failures"]) == (0, None, [])


# --- the database: created on first use, db upgrade ------------------------------------------


def test_db_upgrade_upgrades_a_fresh_database_then_says_it_is_current(env, tmp_path):
    """db upgrade on an empty database applies the migrations; run again it has nothing to do."""
    first = run(env, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert "upgraded" in first.stdout
    second = run(env, "db", "upgrade")
    assert second.exit_code == 0, second.output
    assert "already at revision" in second.stdout
    assert "upgraded" not in second.stdout
    assert listed(env) == {}


def test_first_command_creates_the_database_without_db_upgrade(env, tmp_path):
    """A fresh database file is created and usable on first use of any command."""
    database = tmp_path / "nested" / "folder" / "fresh.db"
    env["REKINDLE_DATABASE_URL"] = f"sqlite:///{database}"
    add(env, "ann@example.org")
    assert database.exists()
    assert list(listed(env)) == ["ann@example.org"]
    assert "already at revision" in run(env, "db", "upgrade").stdout


def test_default_database_lives_in_a_new_user_data_directory(env, tmp_path):
    """With no database_url, the script creates its SQLite file under XDG_DATA_HOME on first use."""
    del env["REKINDLE_DATABASE_URL"]
    data_home = Path(env["XDG_DATA_HOME"])
    assert not data_home.exists()
    done = script({**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", "ann@example.org")
    assert done.returncode == 0, done.stderr
    databases = list(data_home.rglob("*.db"))
    assert len(databases) == 1
    assert databases[0].is_relative_to(data_home / "rekindle-mail")
    again = script(env, "subscribers", "list", "--json")
    assert [r["email"] for r in json.loads(again.stdout)] == ["ann@example.org"]
    assert not (tmp_path / "rekindle.db").exists()  # the fixture's file was not used


# --- PostgreSQL --------------------------------------------------------------------------------


def pg_listed(env: dict[str, str]) -> dict[str, dict]:
    done = script(env, "subscribers", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {row["email"]: row for row in json.loads(done.stdout)}


@pytest.mark.postgres
def test_basic_flow_on_postgresql(env, pg_url, smtp_server):
    """add, list --json, send and status work the same on PostgreSQL (the installed script)."""
    env["REKINDLE_DATABASE_URL"] = pg_url
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    at_start = {**env, "REKINDLE_NOW": ADDED}
    added = script(at_start, "subscribers", "add", "Ann@Example.org", "--timezone", "europe/berlin")
    assert added.returncode == 0, added.stderr
    dup = script(at_start, "subscribers", "add", "ann@example.org")
    assert dup.returncode == 1 and "already a subscriber" in dup.stderr
    assert script(at_start, "subscribers", "add", "bob@example.org").returncode == 0
    rows = pg_listed(env)
    assert set(rows) == {"Ann@example.org", "bob@example.org"}
    assert rows["Ann@example.org"]["timezone"] == "Europe/Berlin"
    assert rows["Ann@example.org"]["next_due"] == "2026-03-02T09:00:00+01:00"
    done = script(env, "send", "--now", IN_WINDOW, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == 2
    assert smtp_server.keys("Ann@example.org") == ["lesson-1"]
    assert smtp_server.keys("bob@example.org") == ["lesson-1"]
    again = script(env, "send", "--now", IN_WINDOW, "--json")
    assert json.loads(again.stdout)["sent"] == 0
    status = script(env, "status", "--now", IN_WINDOW, "--json")
    summary = json.loads(status.stdout)
    assert summary["subscribers"]["active"] == 2
    assert summary["deliveries"]["lesson-1"]["sent"] == 2
    assert summary["due_now"] == 0
    assert len(smtp_server.messages) == 2


@pytest.mark.postgres
def test_in_process_commands_close_their_database_connections(env, pg_url):
    """A command run in-process (tests, daemon, web face) leaves no PostgreSQL connection open."""
    env["REKINDLE_DATABASE_URL"] = pg_url
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(env, "subscribers", "list", "--json")
        assert result.exit_code == 0, result.output
        del result  # its traceback of SystemExit(0) holds the command's frames
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
