"""Broadcast newsletters (issue 5, item 4): create, queue for a segment, deliver through `send`."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clirun import add, listed, run, script, send
from mailserver import MailServer, Received

BODY = """Dear {{ first_name }},

This week's **bold** step: write one kind sentence to your partner.

- notice one good thing
- say it out loud
"""


def create(env: dict[str, str], tmp_path: Path, *args: str, body: str = BODY) -> int:
    """`broadcast create` with `body` in a file; returns the printed id."""
    source = tmp_path / "note.md"
    source.write_text(body, encoding="utf-8")
    result = run(
        env,
        "broadcast",
        "create",
        "--subject",
        "A note from Rekindle",
        "--body",
        str(source),
        *args,
    )
    assert result.exit_code == 0, result.output
    return int(result.stdout)


def queue(env: dict[str, str], broadcast_id: int, now: str, *args: str) -> str:
    """`broadcast send ID` at `now`; returns its stdout."""
    result = run({**env, "REKINDLE_NOW": now}, "broadcast", "send", str(broadcast_id), *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def overview(env: dict[str, str]) -> dict[int, dict]:
    """`broadcast list --json` keyed by id."""
    result = run(env, "broadcast", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["id"]: row for row in json.loads(result.stdout)}


def got(server: MailServer, key: str) -> list[str]:
    """Every recipient of message `key`, in the order the server received them."""
    return [
        address
        for m in server.messages
        if str(m.message["X-Rekindle-Key"]) == key
        for address in m.rcpt_tos
    ]


def parts(received: Received) -> tuple[str, str]:
    """(text, html) of a received message."""
    msg = received.message
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def cli_ok(env: dict[str, str], now: str, *args: str) -> None:
    result = run({**env, "REKINDLE_NOW": now}, *args)
    assert result.exit_code == 0, result.output


def population(env: dict[str, str], smtp_server: MailServer) -> None:
    """Subscribers in every state, reached through the CLI on Sunday 1 March 2026.

    ada, uma: active (UTC); ken: active in Asia/Tokyo (lesson 1 not yet sent);
    pat: paused; cat: completed; bob: bounced; gone: unsubscribed; pen: pending.
    """
    t0 = "2026-03-01T08:00:00+00:00"
    add(env, "ada@example.org", "--name", "Ada Lovelace", now=t0)
    add(env, "ken@example.org", "--name", "Ken", "--timezone", "Asia/Tokyo", now=t0)
    for who in ("pat", "uma", "bob", "cat", "gone"):
        add(env, f"{who}@example.org", now=t0)
    add(env, "pen@example.org", "--double-opt-in", now=t0)
    cli_ok(env, t0, "subscribers", "jump", "cat@example.org", "6")
    smtp_server.script.rcpt["bob@example.org"] = "550 5.1.1 No such user"
    send(env, "2026-03-01T09:30:00+00:00")  # lesson 1 (lesson 6 for cat); bob bounces
    del smtp_server.script.rcpt["bob@example.org"]
    cli_ok(env, "2026-03-01T09:40:00+00:00", "subscribers", "pause", "pat@example.org")
    cli_ok(env, "2026-03-01T09:40:00+00:00", "subscribers", "unsubscribe", "gone@example.org")
    states = {email: row["status"] for email, row in listed(env).items()}
    assert states == {
        "ada@example.org": "active",
        "ken@example.org": "active",
        "pat@example.org": "paused",
        "uma@example.org": "active",
        "bob@example.org": "bounced",
        "cat@example.org": "completed",
        "gone@example.org": "unsubscribed",
        "pen@example.org": "pending",
    }


def test_broadcast_reaches_each_active_subscriber_once_inside_their_own_window(
    env, smtp_server, database_url, tmp_path
):
    """Queued for the active segment, each gets it once, in their window; nobody who left."""
    env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=smtp_server.url)
    population(env, smtp_server)
    bid = create({**env, "REKINDLE_NOW": "2026-03-01T10:00:00+00:00"}, tmp_path)
    out = queue(env, bid, "2026-03-01T11:00:00+00:00")
    assert f"queued broadcast {bid} for 3 subscribers" in out  # ada, ken, uma
    key = f"broadcast-{bid}"

    # uma leaves after it was queued: her copy is cancelled, never sent.
    cli_ok(env, "2026-03-01T11:30:00+00:00", "subscribers", "unsubscribe", "uma@example.org")

    # 12:00 UTC is 21:00 in Tokyo: ada gets it, ken waits for his morning.
    send(env, "2026-03-01T12:00:00+00:00")
    assert got(smtp_server, key) == ["ada@example.org"]
    row = overview(env)[bid]
    assert (row["recipients"], row["sent"], row["waiting"], row["cancelled"], row["failed"]) == (
        3,
        1,
        1,
        1,
        0,
    )
    for later in ("2026-03-01T13:00:00+00:00", "2026-03-01T19:30:00+00:00"):
        send(env, later)  # 22:00 and 04:30 in Tokyo
    assert got(smtp_server, key) == ["ada@example.org"]

    send(env, "2026-03-02T00:30:00+00:00")  # 09:30 in Tokyo
    send(env, "2026-03-02T10:00:00+00:00")
    send(env, "2026-03-02T12:00:00+00:00")
    assert sorted(got(smtp_server, key)) == ["ada@example.org", "ken@example.org"]
    ken = next(m for m in smtp_server.to("ken@example.org") if m.message["X-Rekindle-Key"] == key)
    assert ken.message["Date"].datetime.isoformat() == "2026-03-02T00:30:00+00:00"

    row = overview(env)[bid]
    assert (row["recipients"], row["sent"], row["waiting"], row["cancelled"], row["failed"]) == (
        3,
        2,
        0,
        1,
        0,
    )
    assert row["queued_at"] == "2026-03-01T11:00:00+00:00"
    text = run(env, "broadcast", "list")
    assert text.exit_code == 0, text.output
    header, line = text.stdout.splitlines()
    assert header.split()[:6] == ["ID", "SEGMENT", "QUEUED", "FOR", "SENT", "WAITING"]
    assert line.split()[:6] == [str(bid), "active", "3", "2", "0", "0"]
    assert line.rstrip().endswith("A note from Rekindle")

    again = run({**env, "REKINDLE_NOW": "2026-03-02T12:30:00+00:00"}, "broadcast", "send", str(bid))
    assert again.exit_code == 1
    assert "already queued" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    send(env, "2026-03-02T13:00:00+00:00")
    assert overview(env)[bid]["recipients"] == 3
    assert sorted(got(smtp_server, key)) == ["ada@example.org", "ken@example.org"]


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("active", ["ada@example.org", "ken@example.org", "uma@example.org"]),
        ("completed", ["cat@example.org"]),
        (
            "all",
            [
                "ada@example.org",
                "cat@example.org",
                "ken@example.org",
                "pat@example.org",
                "uma@example.org",
            ],
        ),
    ],
)
def test_segment_picks_its_people_and_never_the_unsubscribed_bounced_or_pending(
    env, smtp_server, database_url, tmp_path, segment, expected
):
    """active = active; completed = completed; all = active, paused and completed."""
    env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=smtp_server.url)
    population(env, smtp_server)
    bid = create(env, tmp_path, "--segment", segment)
    queue(env, bid, "2026-03-02T10:00:00+00:00")
    assert overview(env)[bid]["recipients"] == len(expected)
    assert overview(env)[bid]["segment"] == segment
    send(env, "2026-03-02T10:30:00+00:00")  # 19:30 in Tokyo: inside everyone's window
    send(env, "2026-03-02T11:30:00+00:00")
    assert sorted(got(smtp_server, f"broadcast-{bid}")) == expected
    row = overview(env)[bid]
    assert (row["sent"], row["waiting"], row["failed"]) == (len(expected), 0, 0)


def test_send_at_holds_the_broadcast_until_that_instant(env, smtp_server, tmp_path):
    """`broadcast send ID --at T` queues it now, and no run before T delivers it."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ada@example.org", now="2026-03-01T08:00:00+00:00")
    bid = create(env, tmp_path)
    # 11:00 at +01:00 is 10:00 UTC.
    out = queue(env, bid, "2026-03-02T08:00:00+00:00", "--at", "2026-03-03T11:00:00+01:00")
    assert "2026-03-03T10:00:00+00:00" in out
    row = overview(env)[bid]
    assert (row["send_at"], row["recipients"], row["waiting"]) == (
        "2026-03-03T10:00:00+00:00",
        1,
        1,
    )
    for before in (
        "2026-03-02T10:00:00+00:00",
        "2026-03-02T19:00:00+00:00",
        "2026-03-03T09:59:00+00:00",
    ):
        send(env, before)
    assert got(smtp_server, f"broadcast-{bid}") == []
    send(env, "2026-03-03T10:00:00+00:00")
    send(env, "2026-03-03T11:00:00+00:00")
    assert got(smtp_server, f"broadcast-{bid}") == ["ada@example.org"]
    assert overview(env)[bid]["sent"] == 1

    bad = run(env, "broadcast", "send", str(bid), "--at", "tomorrow")
    assert bad.exit_code == 1
    assert "--at" in bad.stderr


def test_broadcast_is_rendered_into_the_course_layout_in_both_parts(env, smtp_server, tmp_path):
    """Markdown body in the course look: bold in HTML, plain in text, greeting, footer, headers."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, "ada@example.org", "--name", "Ada Lovelace", now="2026-03-01T10:00:00+00:00")
    add(env, "bo@example.org", now="2026-03-01T10:00:00+00:00")
    add(env, "cy@example.org", "--name", "<i>Cy</i> Smith", now="2026-03-01T10:00:00+00:00")
    bid = create(env, tmp_path)
    queue(env, bid, "2026-03-01T10:30:00+00:00")
    send(env, "2026-03-01T10:45:00+00:00")  # lesson 1 is due tomorrow: only the broadcast
    assert sorted(a for m in smtp_server.messages for a in m.rcpt_tos) == [
        "ada@example.org",
        "bo@example.org",
        "cy@example.org",
    ]
    greetings = {
        "ada@example.org": ("Dear Ada,", "Dear Ada,"),
        "bo@example.org": ("Dear friend,", "Dear friend,"),
        "cy@example.org": ("Dear <i>Cy</i>,", "Dear &lt;i&gt;Cy&lt;/i&gt;,"),
    }
    for m in smtp_server.messages:
        (address,) = m.rcpt_tos
        msg = m.message
        text, html = parts(m)
        assert greetings[address][0] in text
        assert greetings[address][1] in html  # subscriber data is escaped in HTML
        assert msg["X-Rekindle-Key"] == f"broadcast-{bid}"
        assert msg["Subject"] == "A note from Rekindle"
        assert msg["Message-ID"]
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = msg["List-Unsubscribe"]
        assert "<https://rekindle.example.org/unsubscribe/" in unsubscribe
        url = unsubscribe.split("<", 1)[1].split(">", 1)[0]
        for part in (text, html):
            assert "You are receiving this because you subscribed" in part
            assert url in part.replace("&amp;", "&")
            assert "Rekindle, 1 Example Street, Springfield" in part
            assert "{{" not in part
        assert "This week\u2019s bold step" in text  # readable: no markup, typographer quote
        assert "**" not in text and "<strong" not in text
        assert ">bold</strong>" in html and "<strong" in html
        assert "notice one good thing" in text and "<li" in html
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == 3


@pytest.mark.parametrize(
    ("body", "subject", "reason"),
    [
        ("Dear {{ first_name }, hello", "Hello", "line 1"),
        ("Hello {{ favourite_colour }}", "Hello", "favourite_colour"),
        ("   \n\n", "Hello", "empty"),
        ("Hello", "Hello\nBcc: everyone@example.org", "one line"),
        ("Hello", "", "one line"),
    ],
)
def test_create_refuses_a_broken_body_or_subject_and_stores_nothing(
    env, tmp_path, body, subject, reason
):
    """A broken Jinja body, an empty body or a bad subject: exit 1, one line, nothing stored."""
    source = tmp_path / "bad.md"
    source.write_text(body, encoding="utf-8")
    result = run(env, "broadcast", "create", "--subject", subject, "--body", str(source))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert reason in lines[0]
    assert "Traceback" not in result.output
    assert overview(env) == {}


def test_create_prints_only_the_id_and_rejects_an_unknown_segment(env, tmp_path):
    """The console script prints the new id alone on stdout; an unknown segment is a usage error."""
    source = tmp_path / "note.md"
    source.write_text(BODY, encoding="utf-8")
    first = script(env, "broadcast", "create", "--subject", "One", "--body", str(source))
    assert (first.returncode, first.stdout, first.stderr) == (0, "1\n", "")
    second = run(
        env, "broadcast", "create", "--subject", "Two", "--body", str(source), "--segment", "all"
    )
    assert (second.exit_code, second.stdout) == (0, "2\n")

    bad = script(
        env, "broadcast", "create", "--subject", "x", "--body", str(source), "--segment", "vip"
    )
    assert bad.returncode == 2
    assert "vip" in bad.stderr and "Traceback" not in bad.stderr
    missing = run(env, "broadcast", "send", "99")
    assert missing.exit_code == 1 and "no broadcast 99" in missing.stderr
    listed_ = overview(env)
    assert sorted(listed_) == [1, 2]
    assert (listed_[2]["segment"], listed_[2]["queued_at"], listed_[2]["recipients"]) == (
        "all",
        None,
        0,
    )


def test_preview_shows_the_broadcast_as_a_sample_subscriber_sees_it(env, tmp_path):
    """`broadcast preview ID --text` is the text part; without --text the inlined HTML."""
    bid = create(env, tmp_path)
    text = run(env, "broadcast", "preview", str(bid), "--text")
    assert text.exit_code == 0, text.output
    assert "Dear Alex," in text.stdout
    assert "bold step" in text.stdout and "<strong" not in text.stdout
    assert "You are receiving this because you subscribed" in text.stdout
    assert "https://rekindle.example.org/unsubscribe/" in text.stdout
    html = run(env, "broadcast", "preview", str(bid))
    assert html.exit_code == 0, html.output
    assert html.stdout.lstrip().lower().startswith("<!doctype html>")
    assert ">bold</strong>" in html.stdout and "Dear Alex," in html.stdout
    assert '<p style="' in html.stdout  # CSS inlined into the elements
    assert run(env, "broadcast", "preview", "42").exit_code == 1
    assert overview(env)[bid]["queued_at"] is None  # previewing queues nothing


def test_a_recipient_refused_by_the_server_counts_as_failed_and_gets_no_later_broadcast(
    env, smtp_server, tmp_path
):
    """A 5xx to RCPT fails that copy and bounces the subscriber; the next broadcast skips them."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    for who in ("ada", "bob"):
        add(env, f"{who}@example.org", now="2026-03-01T10:00:00+00:00")
    first = create(env, tmp_path)
    queue(env, first, "2026-03-01T10:10:00+00:00")
    smtp_server.script.rcpt["bob@example.org"] = "550 5.1.1 No such user"
    send(env, "2026-03-01T10:20:00+00:00")
    send(env, "2026-03-01T10:40:00+00:00")
    assert got(smtp_server, f"broadcast-{first}") == ["ada@example.org"]
    row = overview(env)[first]
    assert (row["recipients"], row["sent"], row["failed"], row["waiting"]) == (2, 1, 1, 0)
    assert listed(env)["bob@example.org"]["status"] == "bounced"

    del smtp_server.script.rcpt["bob@example.org"]
    second = create(env, tmp_path)
    queue(env, second, "2026-03-01T10:50:00+00:00")
    send(env, "2026-03-01T10:55:00+00:00")
    assert got(smtp_server, f"broadcast-{second}") == ["ada@example.org"]
    assert overview(env)[second]["recipients"] == 1


def test_two_send_processes_at_once_deliver_each_copy_exactly_once(
    env, smtp_server, database_url, tmp_path
):
    """Two cron `send` processes racing over one broadcast: every subscriber gets one copy."""
    env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=smtp_server.url)
    people = [f"p{i:02d}@example.org" for i in range(40)]
    csv = tmp_path / "people.csv"
    csv.write_text("email,name,timezone\n" + "".join(f"{p},,UTC\n" for p in people))
    cli_ok(env, "2026-03-01T10:00:00+00:00", "subscribers", "import", str(csv))
    bid = create(env, tmp_path)
    queue(env, bid, "2026-03-01T10:05:00+00:00")
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda _: script(env, "send", "--now", "2026-03-01T10:30:00+00:00", "--json"),
                range(2),
            )
        )
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert sum(json.loads(r.stdout)["sent"] for r in runs) == len(people)
    assert sorted(got(smtp_server, f"broadcast-{bid}")) == people
    row = overview(env)[bid]
    assert (row["recipients"], row["sent"], row["waiting"]) == (40, 40, 0)


# --- the sandbox: a broadcast body is text, not code ---------------------------------------

PAYLOADS = {
    "cycler-popen": "{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}",
    "str-mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "self-globals": "{{ self.__init__.__globals__.__builtins__.open('MARK', 'w').write('x') }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].system('touch MARK') }}",
    "set-unused": "{% set x = lipsum.__globals__.os.popen('touch MARK') %}Hello",
    "format-string": "{{ '{0.__class__.__init__.__globals__}'.format(first_name) }}",
    "attr-filter": "{{ (cycler|attr('__init__')).__globals__.os.system('touch MARK') }}",
}


def hostile(tmp_path: Path, payload: str) -> tuple[str, Path]:
    """The payload aimed at a marker file in tmp_path (which must never appear), and that file."""
    mark = tmp_path / "pwned"
    return f"Dear {{{{ first_name }}}},\n\n{payload.replace('MARK', str(mark))}\n", mark


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_body_reaching_for_python_internals_is_refused_at_create_and_runs_nothing(
    env, tmp_path, payload
):
    """Jinja's sandbox: a body that touches __class__, __globals__ and the like is refused with
    one line at `broadcast create` (exit 1), nothing is stored and no command runs."""
    body, mark = hostile(tmp_path, PAYLOADS[payload])
    source = tmp_path / "note.md"
    source.write_text(body, encoding="utf-8")
    done = script(env, "broadcast", "create", "--subject", "A note", "--body", str(source))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    line = one_error_line(done.stderr)
    assert line.startswith("Error: the body is refused: access to attribute '"), line
    assert "unsafe" in line
    assert not mark.exists()
    assert overview(env) == {}


def test_a_hostile_body_already_stored_is_refused_by_preview_and_send_and_runs_nothing(
    env, tmp_path
):
    """A body stored before the sandbox (or written into the database) is refused by `broadcast
    preview` and `broadcast send` with one line (exit 1): nothing runs, nobody is queued."""
    add(env, "ada@example.org", now="2026-03-01T08:00:00+00:00")
    bid = create(env, tmp_path)
    body, mark = hostile(tmp_path, PAYLOADS["cycler-popen"])
    database = env["REKINDLE_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        db.execute("UPDATE broadcasts SET body = ? WHERE id = ?", (body, bid))
    db.close()

    for args in (("preview", str(bid)), ("preview", str(bid), "--text"), ("send", str(bid))):
        done = script(env, "broadcast", *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "the body is refused" in one_error_line(done.stderr)
        assert done.stdout == ""
        assert not mark.exists()
    assert (overview(env)[bid]["queued_at"], overview(env)[bid]["recipients"]) == (None, 0)


def test_sandboxed_bodies_still_greet_link_and_use_jinja(env, tmp_path):
    """The sandbox keeps what a newsletter needs: the first name, links built from base_url and
    the unsubscribe URL, loops, conditions and filters."""
    body = (
        "Dear {{ first_name }},\n\n"
        "Read [this week's letter]({{ base_url }}/letters) or "
        "[leave]({{ unsubscribe_url }}).\n\n"
        "{% for step in ['listen', 'ask'] %}- {{ step|capitalize }}\n{% endfor %}\n"
        "{% if course_title %}{{ course_title|upper }}{% endif %}\n"
    )
    bid = create(env, tmp_path, body=body)
    text = run(env, "broadcast", "preview", str(bid), "--text")
    assert text.exit_code == 0, text.output
    assert "Dear Alex," in text.stdout
    assert "https://rekindle.example.org/letters" in text.stdout
    assert "- Listen" in text.stdout and "- Ask" in text.stdout
    assert "REKINDLE" in text.stdout
    html = run(env, "broadcast", "preview", str(bid))
    assert html.exit_code == 0, html.output
    assert 'href="https://rekindle.example.org/letters"' in html.stdout
    assert 'href="https://rekindle.example.org/unsubscribe/' in html.stdout
