"""Secrets stay secret: where they may come from, and that no output ever shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clirun import run, script
from mailserver import MailServer, password_checker

PASSWORD = "hunter22-Zq9"
KEY = "k3y-8f2c1a0e-not-for-eyes"


def config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "rekindle.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def shown(env: dict[str, str]) -> dict[str, dict[str, str | None]]:
    result = run(env, "config", "show", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_config_show_masks_every_secret_and_names_each_source(env, tmp_path):
    """Passwords and keys show as ***, a URL's password too; each value says where it came from."""
    config(
        tmp_path,
        f'smtp_url = "smtp+starttls://ada:{PASSWORD}@mail.example.org:587"\n'
        f'secret_key = "{KEY}"\ntimezone = "Europe/Berlin"\n',
    )
    env = {**env, "REKINDLE_IMAP_PASSWORD": "imap-" + PASSWORD, "REKINDLE_RATE_LIMIT": "7"}
    settings = shown(env)
    assert settings["smtp_url"] == {
        "value": "smtp+starttls://ada:***@mail.example.org:587",
        "source": "rekindle.toml",
    }
    assert settings["secret_key"] == {"value": "***", "source": "rekindle.toml"}
    assert settings["imap_password"] == {"value": "***", "source": "REKINDLE_IMAP_PASSWORD"}
    assert settings["smtp_password"] == {"value": None, "source": "default"}
    assert settings["timezone"] == {"value": "Europe/Berlin", "source": "rekindle.toml"}
    assert settings["rate_limit"] == {"value": "7.0", "source": "REKINDLE_RATE_LIMIT"}
    assert settings["send_window"] == {"value": "09:00-20:00", "source": "default"}

    table = script(env, "config", "show", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    for out in (table.stdout, json.dumps(settings)):
        assert PASSWORD not in out
        assert KEY not in out
    assert "smtp+starttls://ada:***@mail.example.org:587" in table.stdout


def test_a_config_file_holding_a_secret_must_not_be_world_readable(env, tmp_path):
    """A secret in a file every user can read is refused with a one-line fix; without one, fine."""
    path = config(tmp_path, f'secret_key = "{KEY}"\n', mode=0o644)
    refused = script(env, "config", "show", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: config file 'rekindle.toml' holds secret_key but every user on this machine "
        "can read it: chmod 600 rekindle.toml, or set REKINDLE_SECRET_KEY instead"
    )
    assert KEY not in refused.stderr + refused.stdout

    path.write_text(f'smtp_url = "smtps://ada:{PASSWORD}@mail.example.org"\n', encoding="utf-8")
    refused = script(env, "send", cwd=tmp_path)
    assert refused.returncode == 1
    assert "holds smtp_url" in refused.stderr
    assert PASSWORD not in refused.stderr

    path.write_text('timezone = "Asia/Tokyo"\n', encoding="utf-8")
    assert script(env, "config", "show", cwd=tmp_path).returncode == 0
    path.chmod(0o600)
    path.write_text(f'secret_key = "{KEY}"\n', encoding="utf-8")
    assert script(env, "config", "show", cwd=tmp_path).returncode == 0


RELAY_LISTS = {
    "comma-separated": f'smtp_url = "smtps://ada@one.example.org, smtps://bo:{PASSWORD}@two.example.org"',
    "space-separated": f'smtp_url = "smtps://ada@one.example.org smtps://bo:{PASSWORD}@two.example.org"',
    "comma-no-space": f'smtp_url = "smtps://ada@one.example.org,smtps://bo:{PASSWORD}@two.example.org"',
    "toml-array": (
        f'smtp_url = ["smtps://ada@one.example.org?daily=5", "smtps://bo:{PASSWORD}@two.example.org"]'
    ),
}


@pytest.mark.parametrize("form", list(RELAY_LISTS))
def test_a_password_in_any_relay_of_a_list_makes_a_world_readable_config_an_error(
    env, tmp_path, form
):
    """A password in the 2nd relay of a list (string or TOML array) is refused as the single
    form is, with the same line; once the file is private, config show masks it."""
    path = config(tmp_path, RELAY_LISTS[form] + "\n", mode=0o644)
    refused = script(env, "config", "show", cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.strip() == (
        "Error: config file 'rekindle.toml' holds smtp_url but every user on this machine "
        "can read it: chmod 600 rekindle.toml, or set REKINDLE_SMTP_URL instead"
    )
    assert PASSWORD not in refused.stderr + refused.stdout

    path.chmod(0o600)
    table = script(env, "config", "show", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    value = shown(env)["smtp_url"]["value"]
    assert PASSWORD not in table.stdout + json.dumps(value)
    assert "smtps://bo:***@two.example.org" in value and "smtps://ada@one.example.org" in value
    assert "smtps://bo:***@two.example.org" in table.stdout


@pytest.mark.parametrize(
    "password", ["p@ss-w0rd-Zq9", "pa,ss-w0rd-Zq9", "pa/ss?w0rd#Zq9", "p%40ss-w0rd-Zq9"]
)
def test_a_pasted_password_with_url_characters_is_found_and_masked_whole(env, tmp_path, password):
    """A password written unencoded (@ , / ? #) still makes a readable file an error and is
    never shown, not even in part, by config show or in an error line."""
    text = f'smtp_url = "smtps://ada@one.example.org, smtps://bo:{password}@two.example.org"\n'
    path = config(tmp_path, text, mode=0o644)
    refused = script(env, "config", "show", cwd=tmp_path)
    assert refused.returncode == 1
    assert "holds smtp_url" in refused.stderr
    path.chmod(0o600)
    done = script(env, "config", "show", cwd=tmp_path)
    tail = password.split("@")[-1].split(",")[-1].split("?")[-1]
    for out in (done.stdout, done.stderr):
        assert password not in out and tail not in out, out


def test_secrets_can_come_from_private_files_and_are_used(env, tmp_path):
    """smtp_password_file (a Docker or systemd credential) is read, trimmed, used; never shown."""
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    server = MailServer(
        authenticator=password_checker("ada", PASSWORD), auth_require_tls=False
    ).start()
    try:
        env = {
            **env,
            "REKINDLE_SMTP_PASSWORD_FILE": str(secret),
            "REKINDLE_SMTP_URL": f"smtp://ada@127.0.0.1:{server.port}",
        }
        assert (
            run(
                {**env, "REKINDLE_NOW": "2026-03-02T08:00:00Z"},
                "subscribers",
                "add",
                "bo@example.org",
            ).exit_code
            == 0
        )
        sent = script(env, "send", "--now", "2026-03-02T09:30:00Z", cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert server.keys("bo@example.org") == ["lesson-1"]
    finally:
        server.stop()
    settings = shown(env)
    assert settings["smtp_password"] == {
        "value": "***",
        "source": "REKINDLE_SMTP_PASSWORD_FILE (smtp_password_file)",
    }
    assert settings["smtp_password_file"]["value"] == str(secret)

    secret.chmod(0o644)
    refused = run(env, "config", "show")
    assert refused.exit_code == 1
    assert "can be read by every user on this machine: chmod o-r it" in refused.output

    secret.chmod(0o600)
    both = run({**env, "REKINDLE_SMTP_PASSWORD": "other"}, "config", "show")
    assert both.exit_code == 1
    assert "set smtp_password or smtp_password_file, not both" in both.output

    missing = run({**env, "REKINDLE_SMTP_PASSWORD_FILE": str(tmp_path / "nope")}, "config", "show")
    assert missing.exit_code == 1
    assert "cannot read smtp_password_file" in missing.output


@pytest.mark.parametrize("debug", [False, True], ids=["one-line", "debug-traceback"])
def test_no_error_line_or_debug_traceback_shows_a_password(env, tmp_path, debug):
    """An error whose text quotes a secret prints *** in its place, even in --debug tracebacks."""
    env = {**env, "REKINDLE_DATABASE_URL": f"nonsense://ada:{PASSWORD}@db.example.org/mail"}
    args = ["--debug"] if debug else []
    result = script(env, *args, "status", cwd=tmp_path)
    assert result.returncode == 1
    assert PASSWORD not in result.stderr + result.stdout
    assert "nonsense://ada:***@db.example.org/mail" in result.stderr
    assert ("Traceback (most recent call last)" in result.stderr) is debug
