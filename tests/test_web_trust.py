"""README's web face against a real `rekindle-mail serve`: proxies, background sending, size.

Every test starts `serve` in a subprocess (tests/webserve.py) and talks to it
over loopback as a reverse proxy or a hostile client would, with raw sockets
where an HTTP library would tidy the request up. Mail goes to aiosmtpd; the
slow relay (tests/slowserver.py) holds every message until the test lets go,
which shows structurally that no answer waits for the relay.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator

import pytest

from clirun import add, listed, script
from mailserver import free_port
from slowserver import SlowServer
from webserve import FORM, Served, poll, serving

BASE_URL = "https://rekindle.example.org"
NOW = "2026-03-02T15:00:00+00:00"
ADA = "ada@example.org"
BEA = "bea@example.org"
CLIENT_A = "198.51.100.10"
CLIENT_B = "198.51.100.20"
KB16 = 16 * 1024


def form(email: str, name: str = "") -> dict[str, str]:
    return {"email": email, "name": name, "timezone": "Europe/Berlin", "website": ""}


def configured(env: dict[str, str], smtp_url: str, **settings: str) -> dict[str, str]:
    """`env` sending to `smtp_url` at NOW, with REKINDLE_<KEY> settings added."""
    return {
        **env,
        "REKINDLE_SMTP_URL": smtp_url,
        "REKINDLE_NOW": NOW,
        **{f"REKINDLE_{key.upper()}": value for key, value in settings.items()},
    }


def sign_ups(web: Served, prefix: str, count: int, **headers: str) -> list[int]:
    """Status codes of `count` sign-ups of fresh addresses, each sent with `headers`."""
    return [
        web.post("/subscribe", form(f"{prefix}{i}@example.org"), **headers).status
        for i in range(count)
    ]


# --- behind a reverse proxy ---------------------------------------------------------------


def test_behind_one_proxy_each_forwarded_client_has_its_own_five_sign_ups(
    env, smtp_server, tmp_path
):
    """proxy_hops = 1: five posts from client A, then client B gets through; A's sixth is 429."""
    settings = configured(env, smtp_server.url, proxy_hops="1")
    with serving(settings, tmp_path / "serve.log") as web:
        assert sign_ups(web, "a", 5, X_Forwarded_For=CLIENT_A) == [200] * 5
        assert sign_ups(web, "b", 1, X_Forwarded_For=CLIENT_B) == [200]
        assert sign_ups(web, "a-late", 1, X_Forwarded_For=CLIENT_A) == [429]
        # What A writes in front of the entry the proxy appends does not make A someone else.
        forged = f"203.0.113.99, {CLIENT_A}"
        assert sign_ups(web, "a-forged", 1, X_Forwarded_For=forged) == [429]
        stored = sorted([f"a{i}@example.org" for i in range(5)] + ["b0@example.org"])
        poll(lambda: sorted(listed(settings)) == stored, "the six sign-ups to be stored")


def test_behind_two_proxies_the_client_is_the_second_entry_from_the_end(env, smtp_server, tmp_path):
    """proxy_hops = 2: the client is X-Forwarded-For's second entry from the end, not the first."""
    settings = configured(env, smtp_server.url, proxy_hops="2")
    with serving(settings, tmp_path / "serve.log") as web:
        codes = [
            web.post(
                "/subscribe",
                form(f"a{i}@example.org"),
                X_Forwarded_For=f"203.0.113.{i}, {CLIENT_A}, 10.0.0.2",
            ).status
            for i in range(6)
        ]
        assert codes == [200] * 5 + [429]
        chain = f"203.0.113.1, {CLIENT_B}, 10.0.0.2"
        assert sign_ups(web, "b", 1, X_Forwarded_For=chain) == [200]


def test_without_proxy_hops_a_forged_x_forwarded_for_does_not_escape_the_limit(
    env, smtp_server, tmp_path
):
    """Without proxy_hops, a client naming a new X-Forwarded-For each time is still one client."""
    settings = configured(env, smtp_server.url)
    with serving(settings, tmp_path / "serve.log") as web:
        codes = [
            web.post(
                "/subscribe", form(f"p{i}@example.org"), X_Forwarded_For=f"198.51.100.{i}"
            ).status
            for i in range(6)
        ]
        assert codes == [200] * 5 + [429]
        poll(lambda: len(listed(settings)) == 5, "the five sign-ups to be stored")
    assert "p5@example.org" not in listed(settings)


@pytest.mark.parametrize(
    ("hops", "origin", "code"),
    [
        ("1", "https://www.example.net", 200),  # the origin the proxy says the client used
        ("1", "http://www.example.net", 403),
        ("0", "https://www.example.net", 403),  # X-Forwarded-Proto is not believed
        ("0", "http://www.example.net", 200),
    ],
    ids=["proxied-https", "proxied-http", "direct-https", "direct-http"],
)
def test_the_addressed_origin_is_the_one_after_proxy_handling(
    env, smtp_server, tmp_path, hops, origin, code
):
    """A post's Origin may be where the request was addressed, scheme as the proxies say."""
    settings = configured(env, smtp_server.url, proxy_hops=hops)
    with serving(settings, tmp_path / "serve.log") as web:
        answer = web.post(
            "/subscribe",
            form(ADA),
            Host="www.example.net",
            X_Forwarded_Proto="https",
            X_Forwarded_For=CLIENT_A,
            Origin=origin,
        )
        assert answer.status == code, answer.body[:300]
        if code == 200:
            poll(lambda: ADA in listed(settings), "the sign-up to be stored")
    assert (ADA in listed(settings)) == (code == 200)


# --- the answer never waits for the relay ------------------------------------------------


class HeldRelay(SlowServer):
    """A SlowServer whose relay holds every message in DATA until `open` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.handler.gate = self.open.is_set


@pytest.fixture
def held_relay() -> Iterator[HeldRelay]:
    """A running HeldRelay, let go and stopped afterwards."""
    relay = HeldRelay()
    relay.start()
    yield relay
    relay.open.set()
    relay.stop()


def test_sign_up_and_confirm_answer_before_the_relay_takes_the_mail_and_it_follows(
    env, held_relay, tmp_path
):
    """New and known addresses get the same page while the relay holds everything; mail follows."""
    settings = configured(env, held_relay.url)
    add(settings, BEA, now=NOW)  # on the course already
    with serving(settings, tmp_path / "serve.log") as web:
        new = web.post("/subscribe", form(ADA), Origin=BASE_URL)
        known = web.post("/subscribe", form(BEA), Origin=BASE_URL)
        assert new.status == known.status == 200
        assert new.body == known.body
        # Both answers came back while the relay had taken nothing.
        assert held_relay.count() == 0
        poll(lambda: ADA in listed(settings), "the sign-up to be stored")
        assert listed(settings)[ADA]["status"] == "pending"
        held_relay.open.set()
        poll(lambda: held_relay.to(ADA), "the confirmation")
        assert held_relay.keys(ADA) == ["confirm"] and held_relay.keys(BEA) == []
        text = held_relay.to(ADA)[0].message.get_body(("plain",)).get_content()
        found = re.search(re.escape(BASE_URL) + r"(/confirm/[A-Za-z0-9_\-.]+)", text)
        assert found, text
        token_path = found.group(1)

        held_relay.handler.gate = threading.Event().is_set  # hold the welcome
        done = web.post(token_path, {}, Origin=BASE_URL)
        assert done.status == 200 and "You’re in" in done.body
        assert held_relay.count() == 1
        assert listed(settings)[ADA]["status"] == "active"
        held_relay.handler.gate = None
        poll(lambda: len(held_relay.to(ADA)) == 2, "the welcome")
    assert held_relay.keys(ADA) == ["confirm", "welcome"]


def test_with_the_relay_down_the_answer_is_the_same_and_send_delivers_the_confirmation(
    env, smtp_server, tmp_path
):
    """A dead relay: the page is the usual one, the confirmation stays queued for `send`."""
    down = configured(env, f"smtp://127.0.0.1:{free_port()}")
    log = tmp_path / "serve.log"
    with serving(down, log) as web:
        answer = web.post("/subscribe", form(ADA))
        assert answer.status == 200 and "Check your inbox" in answer.body
        poll(lambda: "queued for the next send run" in log.read_text(), "the sender's log line")
    assert "Traceback" not in log.read_text()
    assert listed(down)[ADA]["status"] == "pending"
    up = configured(env, smtp_server.url)
    done = script(up, "send", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == 1
    assert smtp_server.keys(ADA) == ["confirm"]


def test_sigterm_right_after_an_answer_still_stores_the_sign_up(env, smtp_server, tmp_path):
    """A sign-up answered just before SIGTERM is stored before serve exits (0), not lost."""
    settings = configured(env, smtp_server.url)
    database = settings["REKINDLE_DATABASE_URL"].removeprefix("sqlite:///")
    log = tmp_path / "serve.log"
    with serving(settings, log) as web:
        writer = sqlite3.connect(database, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # no one else may write until we let go
            answer = web.post("/subscribe", form(ADA))
            assert answer.status == 200 and "Check your inbox" in answer.body
            web.process.send_signal(signal.SIGTERM)
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        try:
            code = web.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit on SIGTERM:\n{log.read_text()}")
    assert code == 0, log.read_text()
    assert listed(settings)[ADA]["status"] == "pending"
    assert "Traceback" not in log.read_text()


# --- size ---------------------------------------------------------------------------------


def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request's head and then its body pieces on one socket; what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: it will not read the rest
                break
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                piece = sock.recv(4096)
                if not piece:
                    break
                answer += piece
        except ConnectionResetError:
            pass
    return answer


def test_bodies_over_16_kb_get_413_before_they_are_read(env, smtp_server, tmp_path):
    """Over 16 KB: 413, by Content-Length or chunked, the body unread; 16 KB exactly is read."""
    settings = configured(env, smtp_server.url)
    prefix = f"email={ADA.replace('@', '%40')}&timezone=UTC&name="

    def body(size: int) -> bytes:
        return (prefix + "N" * (size - len(prefix))).encode()

    def head(port: int, **fields: str) -> bytes:
        lines = ["POST /subscribe HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Type: {FORM}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in fields.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    with serving(settings, tmp_path / "serve.log") as web:
        typed = {"Content-Type": FORM}
        at_limit = web.request("POST", "/subscribe", body=body(KB16), headers=typed)
        assert at_limit.status == 400  # read, and refused for its name
        assert "NNNNNNNNNN" not in at_limit.body
        over = web.request("POST", "/subscribe", body=body(KB16 + 1), headers=typed)
        assert over.status == 413
        # 100 MB announced: refused on the head alone, before any of the body is sent.
        huge = raw_exchange(web.port, head(web.port, Content_Length=str(100 * 1024 * 1024)), [])
        assert huge.startswith(b"HTTP/1.1 413"), huge[:200]
        # Chunked, with no Content-Length at all.
        piece = b"N" * 4096
        chunks = [f"{len(prefix):x}\r\n".encode() + prefix.encode() + b"\r\n"]
        chunks += [b"1000\r\n" + piece + b"\r\n"] * 8 + [b"0\r\n\r\n"]
        chunked = raw_exchange(web.port, head(web.port, Transfer_Encoding="chunked"), chunks)
        assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
        # A small chunked form is read as usual.
        small = (prefix + "Ada").encode()
        framed = [f"{len(small):x}\r\n".encode() + small + b"\r\n", b"0\r\n\r\n"]
        fine = raw_exchange(web.port, head(web.port, Transfer_Encoding="chunked"), framed)
        assert fine.startswith(b"HTTP/1.1 200"), fine[:200]
        poll(lambda: ADA in listed(settings), "the sign-up to be stored")
    rows = listed(settings)
    assert list(rows) == [ADA] and rows[ADA]["name"] == "Ada"


# --- connection settings ------------------------------------------------------------------


def test_web_channel_timeout_closes_an_idle_connection(env, smtp_server, tmp_path):
    """web_channel_timeout = 1: serve closes a connection that sends nothing (slowloris)."""
    settings = configured(env, smtp_server.url, web_channel_timeout="1")
    with serving(settings, tmp_path / "serve.log") as web:
        with socket.create_connection(("127.0.0.1", web.port), timeout=20) as idle:
            idle.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert idle.recv(4096) == b""  # closed by the server, not timed out here
        assert web.get("/healthz").status == 200


def test_web_connection_limit_stops_accepting_at_the_limit_and_resumes(env, smtp_server, tmp_path):
    """web_connection_limit = 10: idle connections up to it stop serve accepting, until they go."""
    settings = configured(env, smtp_server.url, web_connection_limit="10")
    log = tmp_path / "serve.log"
    with serving(settings, log) as web:
        idle: list[socket.socket] = []
        try:
            for _ in range(10):
                idle.append(socket.create_connection(("127.0.0.1", web.port), timeout=20))
                if "reached the connection limit" in log.read_text():
                    break
            poll(lambda: "reached the connection limit" in log.read_text(), "the limit")
        finally:
            for sock in idle:
                sock.close()
        poll(lambda: "listening again" in log.read_text(), "serve listening again")
        assert web.get("/healthz").status == 200


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("WEB_CONNECTION_LIMIT", "5", "between 10 and 10000"),
        ("WEB_CONNECTION_LIMIT", "lots", "whole number of connections"),
        ("WEB_CHANNEL_TIMEOUT", "0", "between 1 and 86400"),
    ],
)
def test_bad_web_settings_are_one_clear_error(env, key, value, words):
    """A web_connection_limit or web_channel_timeout out of range: exit 1, one line naming it."""
    done = script({**env, f"REKINDLE_{key}": value}, "serve", "--port", str(free_port()))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert key.lower() in done.stderr and words in done.stderr


def test_config_show_lists_the_web_settings_with_their_defaults(env):
    """`config show --json` lists web_connection_limit (100) and web_channel_timeout (120)."""
    done = script({**env, "REKINDLE_WEB_CHANNEL_TIMEOUT": "30"}, "config", "show", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["web_connection_limit"] == {"value": "100", "source": "default"}
    assert shown["web_channel_timeout"] == {"value": "30", "source": "REKINDLE_WEB_CHANNEL_TIMEOUT"}
