"""Names from strangers: one check at every way in, and no name in a confirmation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import pytest
from flask.testing import FlaskClient

from clirun import listed, run, script
from mailer.runtime import Runtime
from mailer.web import create_app

NOW = "2026-03-02T07:00:00+00:00"
ANN = "ann@example.org"
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ inside the word
FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467 Lee"  # an emoji ZWJ sequence
HOSTILE = {
    "bidi-override": ("Ann\u202egnp.exe", "U+202E"),
    "next-line": ("Ann\x85Bcc: victim@example.org", "U+0085"),
    "csi": ("Ann\x9b31mLee", "U+009B"),
    "zero-width-space": ("Ann\u200bLee", "U+200B"),
    "byte-order-mark": ("Ann\ufeffLee", "U+FEFF"),
    "line-separator": ("Ann\u2028Lee", "U+2028"),
    "paragraph-separator": ("Ann\u2029Lee", "U+2029"),
}


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a received message, decoded."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


# --- every way in ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "code"), HOSTILE.values(), ids=HOSTILE.keys())
def test_the_cli_refuses_an_invisible_control_in_a_name_in_one_line(env, name, code):
    """`subscribers add --name` with a Cc/Cf/separator character: exit 1, one line naming it."""
    done = script({**env, "REKINDLE_NOW": NOW}, "subscribers", "add", ANN, "--name", name)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("Error: ") and len(done.stderr.splitlines()) == 1
    assert code in done.stderr and "name" in done.stderr
    assert listed(env) == {}


def test_the_cli_refuses_bytes_that_are_not_text_in_a_name(env):
    """A name argument that is not valid UTF-8 is refused in one line, not a database error."""
    name = "Ann" + os.fsdecode(b"\xff")  # how Python sees such an argument: U+DCFF
    done = script({**env, "REKINDLE_NOW": NOW}, "subscribers", "add", ANN, "--name", name)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: invalid name") and "U+DCFF" in done.stderr
    assert listed(env) == {}


@pytest.mark.parametrize("name", [PERSIAN, FAMILY])
def test_names_written_with_joiners_are_stored_exactly(env, name):
    """ZWNJ and ZWJ (Persian, Indic scripts, emoji sequences) are kept, byte for byte."""
    done = script({**env, "REKINDLE_NOW": NOW}, "subscribers", "add", ANN, "--name", name)
    assert done.returncode == 0, done.stderr
    assert listed(env)[ANN]["name"] == name


def test_csv_import_rejects_each_hostile_name_by_line_and_character(env, tmp_path, database_url):
    """Each row whose name carries a refused character is reported; the others are stored."""
    env["REKINDLE_DATABASE_URL"] = database_url
    rows = [f"h{i}@example.org,{name}" for i, (name, _) in enumerate(HOSTILE.values())]
    rows += [f"fa@example.org,{PERSIAN}", f"fam@example.org,{FAMILY}"]
    people = tmp_path / "people.csv"
    people.write_text("email,name\n" + "\n".join(rows) + "\n", encoding="utf-8", newline="")
    result = run({**env, "REKINDLE_NOW": NOW}, "subscribers", "import", str(people))
    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert len(errors) == len(HOSTILE)
    for line, (_, code) in enumerate(HOSTILE.values(), start=2):
        assert any(f"line {line}: " in e and code in e for e in errors), (line, errors)
    stored = listed(env)
    assert {e: r["name"] for e, r in stored.items()} == {
        "fa@example.org": PERSIAN,
        "fam@example.org": FAMILY,
    }


@contextmanager
def web(env: dict[str, str]) -> Iterator[FlaskClient]:
    runtime = Runtime(config_path=None, env=env)
    try:
        yield create_app(runtime).test_client()
    finally:
        runtime.close()


@pytest.mark.parametrize(("name", "code"), HOSTILE.values(), ids=HOSTILE.keys())
def test_the_sign_up_form_refuses_a_hostile_name(env, smtp_server, name, code):
    """The web form answers 400 naming the character; nothing is stored and nothing is sent."""
    env.update(REKINDLE_SMTP_URL=smtp_server.url, REKINDLE_NOW=NOW)
    with web(env) as client:
        form = {"email": ANN, "name": name, "timezone": "UTC", "website": ""}
        response = client.post("/subscribe", data=form)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert code in page
    assert listed(env) == {}
    assert smtp_server.messages == []


# --- no name before consent -------------------------------------------------------------------


def test_the_confirmation_greets_hi_there_and_is_addressed_to_the_bare_address(env, smtp_server):
    """A double opt-in confirmation carries no unconfirmed name: 'Hi there', To without a name."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    stranger = "Your ex <ex@evil.example> says: call me"
    args = ("subscribers", "add", ANN, "--name", stranger, "--double-opt-in")
    done = script({**env, "REKINDLE_NOW": NOW}, *args)
    assert done.returncode == 0, done.stderr
    (received,) = smtp_server.to(ANN)
    message = received.message
    assert str(message["X-Rekindle-Key"]) == "confirm"
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [("", ANN)]
    assert str(message["To"]) == ANN
    for part in parts(message):
        assert "Hi there," in part
        assert "ex@evil.example" not in part and "Your ex" not in part and "call me" not in part
    assert b"evil" not in received.data and b"Your" not in received.data
    assert listed(env)[ANN]["name"] == stranger  # kept for when they confirm


def test_only_the_confirmation_leaves_the_name_out(env, smtp_server):
    """For a known name, welcome and lessons greet by first name; the confirmation never does."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    added = run({**env, "REKINDLE_NOW": NOW}, "subscribers", "add", ANN, "--name", "Ann Lee")
    assert added.exit_code == 0, added.output
    sent = run(env, "test-send", ANN, "--all")
    assert sent.exit_code == 0, sent.output
    by_key = {str(m.message["X-Rekindle-Key"]): m.message for m in smtp_server.to(ANN)}
    assert {"confirm", "welcome", "lesson-1"} <= set(by_key)
    for key, message in by_key.items():
        to = [(a.display_name, a.addr_spec) for a in message["To"].addresses]
        greeting = "Hi there," if key == "confirm" else "Hi Ann,"
        assert to == [("" if key == "confirm" else "Ann Lee", ANN)], key
        assert all(greeting in part for part in parts(message)), key
