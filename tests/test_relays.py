"""Several relays in smtp_url: tried in order, each with its connections, pace and daily quota."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clirun import run, script
from mailserver import GreetingRefuser, MailServer

ADDED = "2026-03-02T08:00:00+00:00"
MONDAY = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def second_server() -> Iterator[MailServer]:
    server = MailServer().start()
    yield server
    server.stop()


def add(env: dict[str, str], *emails: str) -> None:
    for address in emails:
        result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", address)
        assert result.exit_code == 0, result.output


def send(env: dict[str, str], when: datetime = MONDAY) -> dict[str, Any]:
    result = run(env, "send", "--now", when.isoformat(), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def people(n: int, start: int = 0) -> list[str]:
    return [f"reader{i}@example.org" for i in range(start, start + n)]


def test_relay_options_are_read_and_checked(env, smtp_server, second_server):
    """A list of relays with options is accepted; an unknown option or bad number is one line."""
    urls = f"{smtp_server.url}?connections=2&rate=5&daily=100, {second_server.url}?daily=7"
    shown = run({**env, "REKINDLE_SMTP_URL": urls}, "config", "show", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["smtp_url"]["value"] == urls

    for bad, reason in [
        (f"{smtp_server.url}?speed=3", "unknown option 'speed'"),
        (f"{smtp_server.url}?daily=lots", "whole numbers"),
        (f"{smtp_server.url}?connections=0", "connections must be between 1 and 32"),
        (f"{smtp_server.url} ftp://x", "must look like smtp://host:25"),
    ]:
        result = script({**env, "REKINDLE_SMTP_URL": bad}, "send")
        assert result.returncode == 1, bad
        assert reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_relay_that_refuses_the_session_hands_its_work_to_the_next(env, second_server):
    """The first relay answers 421 to every connection: everything goes out through the second."""
    refuser = GreetingRefuser("421 4.3.2 Service shutting down")
    try:
        mail_env = {**env, "REKINDLE_SMTP_URL": f"{refuser.url}, {second_server.url}"}
        add(mail_env, *people(5))
        report = send(mail_env)
        assert (report["sent"], report["failed"], report["deferred"]) == (5, 0, 0)
        assert sorted(m.rcpt_tos[0] for m in second_server.messages) == sorted(people(5))
        assert send(mail_env, MONDAY + timedelta(hours=1))["sent"] == 0
    finally:
        refuser.close()


def test_every_relay_refusing_exits_75_naming_each_and_loses_nothing(env, second_server):
    """No relay takes mail: exit 75 with one line naming each relay; a later run sends all."""
    one, two = GreetingRefuser("421 4.3.2 Busy"), GreetingRefuser("554 5.3.2 Go away")
    try:
        mail_env = {**env, "REKINDLE_SMTP_URL": f"{one.url},{two.url}"}
        add(mail_env, *people(3))
        result = script(mail_env, "send", "--now", MONDAY.isoformat())
        assert result.returncode == 75, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: no relay takes mail now ("), lines
        assert f"127.0.0.1:{one.port}" in lines[0] and "421 4.3.2 Busy" in lines[0]
        assert f"127.0.0.1:{two.port}" in lines[0] and "554 5.3.2 Go away" in lines[0]
        healed = {**mail_env, "REKINDLE_SMTP_URL": second_server.url}
        assert send(healed, MONDAY + timedelta(minutes=15))["sent"] == 3
    finally:
        one.close()
        two.close()


def test_a_daily_quota_is_shared_by_runs_and_the_next_relay_takes_the_rest(
    env, database_url, smtp_server, second_server
):
    """daily=3 on the first relay: it gets 3 messages in all that day, across runs; the second
    relay takes the rest. With no relay left under quota, the run exits 75 and mail waits."""
    first = f"{smtp_server.url}?daily=3"
    mail_env = {
        **env,
        "REKINDLE_DATABASE_URL": database_url,
        "REKINDLE_SMTP_URL": f"{first}, {second_server.url}",
    }
    add(mail_env, *people(2))
    assert send(mail_env)["sent"] == 2
    assert len(smtp_server.messages) == 2

    add(mail_env, *people(4, start=2))
    assert send(mail_env, MONDAY + timedelta(minutes=1))["sent"] == 4
    assert len(smtp_server.messages) == 3  # the quota, whichever run used it
    assert len(second_server.messages) == 3

    add(mail_env, *people(2, start=6))
    only_first = {**mail_env, "REKINDLE_SMTP_URL": first}
    result = script(only_first, "send", "--now", (MONDAY + timedelta(minutes=2)).isoformat())
    assert result.returncode == 75, result.stderr
    assert "daily quota used up" in result.stderr
    assert len(smtp_server.messages) == 3
    assert send(mail_env, MONDAY + timedelta(minutes=3))["sent"] == 2
    received = [m.rcpt_tos[0] for m in smtp_server.messages + second_server.messages]
    assert sorted(received) == sorted(people(8))


def test_a_relays_rate_spaces_its_messages(env, smtp_server):
    """rate=20 on the relay: 21 messages over two connections span at least a second."""
    mail_env = {**env, "REKINDLE_SMTP_URL": f"{smtp_server.url}?rate=20&connections=2"}
    add(mail_env, *people(21))
    assert send(mail_env)["sent"] == 21
    times = sorted(m.at for m in smtp_server.messages)
    assert times[-1] - times[0] >= 0.95
