"""DKIM signing (issue 15): every message verifies with dkimpy against the published key."""

from __future__ import annotations

import email
import email.policy
import os
import re
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from clirun import add, run, script, send
from mailer.content import dkimkey
from mailer.content.dkim import canonical_body, canonical_lines
from mailer.content.message import EncodedSlots
from mailer.content.render import Slots
from mailer.files import write_new_private
from mailer.runtime import Runtime
from mailer.web import courier_of, create_app
from mailserver import MailServer

DATA = Path(__file__).resolve().parent / "data" / "inbound"
ADDED = "2026-03-01T22:00:00+00:00"  # Sunday night; lesson 1 is due Monday 2 March at 09:00
MONDAY = "2026-03-02T10:00:00+00:00"
THURSDAY = "2026-03-05T12:00:00+00:00"  # reminder-1 is due, inside the window
ADA = "ada@example.org"
ZOE = "zoe@example.org"
ZOE_NAME = "Zoë Ünïcödé-Łukasiewicz 山田"
UTF8 = "jürgen@exämple.org"  # an SMTPUTF8 address: raw UTF-8 in the To header
SIGNED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
}


class Keys:
    """Key files in a test's folder and the TXT records a resolver would give for them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.records: dict[str, bytes] = {}

    def make(self, kind: str, selector: str, domain: str = "example.org") -> Path:
        """A new key file of `kind`, its record published under `selector`."""
        path = self.folder / f"{selector}.pem"
        write_new_private(path, dkimkey.generate(kind))
        key = dkimkey.load(path, selector, domain)
        self.records[f"{key.dns_name}."] = key.txt_record.encode()
        return path

    def dns(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's DNS hook: the TXT record at `name`."""
        return self.records.get(name.decode())

    def verdicts(self, data: bytes) -> list[bool]:
        """Whether each DKIM-Signature of `data` verifies, top to bottom."""
        found = dkim.DKIM(data, minkey=2048)
        count = len(re.findall(rb"(?im)^DKIM-Signature:", data))
        return [self._verify(found, i) for i in range(count)]

    def _verify(self, found: dkim.DKIM, idx: int) -> bool:
        try:
            return bool(found.verify(idx=idx, dnsfunc=self.dns))
        except dkim.DKIMException:  # a body hash mismatch is raised, not returned
            return False


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    return Keys(folder)


def configure(env: dict[str, str], keys: Keys, kind: str) -> dict[str, str]:
    """`env` signing with an rsa key, an ed25519 key, or both ("dual")."""
    kinds = ["rsa", "ed25519"] if kind == "dual" else [kind]
    files = [keys.make(k, f"sel-{k}") for k in kinds]
    env.update(
        REKINDLE_DKIM_KEY_FILE=", ".join(map(str, files)),
        REKINDLE_DKIM_SELECTOR=", ".join(f"sel-{k}" for k in kinds),
    )
    return env


def tags(data: bytes, idx: int = 0) -> dict[str, str]:
    """The tags of the idx-th DKIM-Signature, whitespace removed."""
    fields = email.message_from_bytes(data, policy=email.policy.compat32).get_all("DKIM-Signature")
    value = re.sub(r"\s+", "", str(fields[idx]))
    return dict(part.split("=", 1) for part in value.split(";") if part)


@pytest.fixture
def utf8_server() -> Iterator[MailServer]:
    server = MailServer(enable_SMTPUTF8=True).start()
    yield server
    server.stop()


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "dual"])
def test_lessons_verify_for_ascii_non_ascii_names_and_an_smtputf8_address(
    env, keys, utf8_server, kind
):
    """Lesson 1 to a plain, a non-ASCII-named and an SMTPUTF8 reader: every signature verifies."""
    configure(env, keys, kind)
    env["REKINDLE_SMTP_URL"] = utf8_server.url
    add(env, ADA, "--name", "Ada Lovelace", now=ADDED)
    add(env, ZOE, "--name", ZOE_NAME, now=ADDED)
    add(env, UTF8, "--name", 'Jürgen  "der"   Große', now=ADDED)
    assert send(env, MONDAY)["sent"] == 3
    assert len(utf8_server.messages) == 3
    expected = ["rsa-sha256", "ed25519-sha256"] if kind == "dual" else [f"{kind}-sha256"]
    for received in utf8_server.messages:
        assert keys.verdicts(received.data) == [True] * len(expected)
        assert [tags(received.data, i)["a"] for i in range(len(expected))] == expected
    assert UTF8.encode() in utf8_server.to(UTF8)[0].data.split(b"\r\nTo:", 1)[1].split(b"\r\n")[0]


def test_signature_tags_h_list_over_signed_from_and_no_l(env, keys, smtp_server):
    """h= is exactly the spec's fields, From twice; relaxed/relaxed, d=, s=, t= the Date, no l=."""
    configure(env, keys, "rsa")
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, ADA, "--name", "Ada", now=ADDED)
    send(env, MONDAY)
    (received,) = smtp_server.messages
    found = tags(received.data)
    names = found["h"].lower().split(":")
    assert sorted(names) == sorted([*SIGNED, "from"])
    assert names.count("from") == 2
    assert "x-rekindle-key" not in names
    assert "l" not in found
    assert (found["v"], found["c"], found["d"], found["s"]) == (
        "1",
        "relaxed/relaxed",
        "example.org",
        "sel-rsa",
    )
    date = email.utils.parsedate_to_datetime(str(received.message["Date"]))
    assert int(found["t"]) == int(date.timestamp())
    assert received.data.startswith(b"DKIM-Signature: ")
    assert all(len(line) <= 998 for line in received.data.split(b"\r\n"))


def test_reply_to_is_signed_when_configured_and_dkim_domain_sets_d(env, keys, smtp_server):
    """With reply_to set, h= names Reply-To; dkim_domain overrides the From domain in d=."""
    path = keys.make("ed25519", "rk", domain="mail.example.org")
    env.update(
        REKINDLE_DKIM_KEY_FILE=str(path),
        REKINDLE_DKIM_SELECTOR="rk",
        REKINDLE_DKIM_DOMAIN="mail.example.org",
        REKINDLE_REPLY_TO="Support <support@example.org>",
        REKINDLE_SMTP_URL=smtp_server.url,
    )
    add(env, ADA, "--name", "Ada", now=ADDED)
    send(env, MONDAY)
    (received,) = smtp_server.messages
    found = tags(received.data)
    assert sorted(found["h"].split(":")) == sorted([*SIGNED, "from", "reply-to"])
    assert (found["d"], found["s"]) == ("mail.example.org", "rk")
    assert keys.verdicts(received.data) == [True]


def test_reminders_broadcasts_and_test_send_verify(env, keys, smtp_server, tmp_path, database_url):
    """A reminder, a broadcast and a test-send are signed like lessons (dual keys)."""
    configure(env, keys, "dual")
    env.update(REKINDLE_SMTP_URL=smtp_server.url, REKINDLE_DATABASE_URL=database_url)
    add(env, ADA, "--name", "Ada", now=ADDED)
    send(env, MONDAY)
    assert send(env, THURSDAY)["sent"] == 1
    body = tmp_path / "note.md"
    body.write_text("# A note\n\nHello {{ first_name }},  two  spaces and\ttabs.\n")
    made = run(env, "broadcast", "create", "--subject", "A note ✉", "--body", str(body))
    assert made.exit_code == 0, made.output
    queued = run({**env, "REKINDLE_NOW": THURSDAY}, "broadcast", "send", made.stdout.strip())
    assert queued.exit_code == 0, queued.output
    send(env, "2026-03-05T12:30:00+00:00")
    tested = run(env, "test-send", "tester@example.net", "2")
    assert tested.exit_code == 0, tested.output
    kinds = {str(m.message["X-Rekindle-Key"]) for m in smtp_server.messages}
    assert {"lesson-1", "reminder-1", "lesson-2"} <= kinds
    assert any(k.startswith("broadcast-") for k in kinds)
    for received in smtp_server.messages:
        assert keys.verdicts(received.data) == [True, True], received.message["X-Rekindle-Key"]


IDN = "xn--exmple-cua.org"  # exämple.org as an A-label (IDNA)


@pytest.mark.parametrize("dkim_domain", [None, "exämple.org", IDN])
def test_an_internationalised_from_domain_signs_with_its_a_label(
    env, keys, utf8_server, dkim_domain
):
    """From at exämple.org: d= is the A-label whether dkim_domain is unset, a U-label or an
    A-label, and the message verifies against the record published there."""
    path = keys.make("rsa", "rk", domain=IDN)
    env.update(
        REKINDLE_FROM="R <hello@exämple.org>",
        REKINDLE_DKIM_KEY_FILE=str(path),
        REKINDLE_DKIM_SELECTOR="rk",
        REKINDLE_SMTP_URL=utf8_server.url,
    )
    if dkim_domain:
        env["REKINDLE_DKIM_DOMAIN"] = dkim_domain
    add(env, ADA, "--name", "Ada", now=ADDED)
    assert send(env, MONDAY)["sent"] == 1
    (received,) = utf8_server.messages
    assert tags(received.data)["d"] == IDN
    assert keys.verdicts(received.data) == [True]


def test_confirmation_welcome_and_erased_notice_from_the_web_face_verify(env, keys, smtp_server):
    """The sign-up confirmation, the welcome and the goodbye after an erasure, which the web
    courier sends, are signed."""
    configure(env, keys, "rsa")
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    runtime = Runtime(config_path=None, env=env)
    app = create_app(runtime)
    origin = {"Origin": "https://rekindle.example.org", "Sec-Fetch-Site": "same-origin"}
    try:
        client = app.test_client()
        data = {"email": ZOE, "name": ZOE_NAME, "timezone": "UTC", "website": ""}
        assert client.post("/subscribe", data=data).status_code == 200
        courier_of(app).wait_idle()
        (confirmation,) = smtp_server.messages
        text = confirmation.message.get_body(("plain",)).get_content()
        link = re.search(r"https://rekindle\.example\.org(/confirm/[\w.\-]+)", text)
        assert link is not None
        client.post(link.group(1))
        courier_of(app).wait_idle()
        page = app.extensions["rekindle"].composer.course_url(1, ZOE).split(".org", 1)[1]
        asked = client.post(f"{page}/erase", headers=origin).get_data(as_text=True)
        confirm = re.search(r'name="confirm" value="([^"]+)"', asked)
        assert confirm is not None, asked
        erased = client.post(
            f"{page}/erase/confirm", data={"confirm": confirm.group(1)}, headers=origin
        )
        assert erased.status_code == 200
        courier_of(app).wait_idle()
    finally:
        courier_of(app).close()
        runtime.close()
    assert [str(m.message["X-Rekindle-Key"]) for m in smtp_server.messages] == [
        "confirm",
        "welcome",
        "erased",
    ]
    for received in smtp_server.messages:
        assert keys.verdicts(received.data) == [True]


def test_inbound_subscribe_confirmation_verifies(env, keys, smtp_server):
    """The confirmation `inbound` sends for a subscribe-by-email is signed."""
    configure(env, keys, "ed25519")
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    done = run(
        {**env, "REKINDLE_NOW": MONDAY}, "inbound", input=(DATA / "subscribe.eml").read_bytes()
    )
    assert done.exit_code == 0, done.output
    (received,) = smtp_server.messages
    assert str(received.message["X-Rekindle-Key"]) == "confirm"
    assert keys.verdicts(received.data) == [True]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data.replace(b"Subject: Week 1", b"Subject: Week 9", 1),
        lambda data: data[:-40] + bytes([data[-40] ^ 1]) + data[-39:],
        lambda data: data.replace(b"\r\nTo: ", b"\r\nTo: eve@example.net, ", 1),
        lambda data: data.replace(b"\r\nFrom: ", b"\r\nFrom: Eve <eve@example.net>\r\nFrom: ", 1),
    ],
    ids=["subject", "body-byte", "to", "added-from"],
)
def test_a_message_changed_after_signing_fails(env, keys, smtp_server, tamper):
    """Changing the Subject, a body byte or To, or adding a From, breaks every signature."""
    configure(env, keys, "dual")
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, ADA, "--name", "Ada", now=ADDED)
    send(env, MONDAY)
    (received,) = smtp_server.messages
    assert keys.verdicts(received.data) == [True, True]
    changed = tamper(received.data)
    assert changed != received.data
    assert keys.verdicts(changed) == [False, False]


def test_relaxed_whitespace_changes_in_transit_still_verify(env, keys, smtp_server):
    """Refolding a header and adding trailing spaces to body lines keep the signature good."""
    configure(env, keys, "rsa")
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, ADA, "--name", "Ada", now=ADDED)
    send(env, MONDAY)
    (received,) = smtp_server.messages
    head, _, body = received.data.partition(b"\r\n\r\n")
    head = head.replace(b"\r\nSubject: ", b"\r\nsubject:   \r\n\t", 1)
    body = body.replace(b"\r\n", b"  \r\n", 3)
    assert keys.verdicts(head + b"\r\n\r\n" + body) == [True]


# --- keygen -------------------------------------------------------------------------------


def zone_text(output: str) -> tuple[str, bytes]:
    """(record name, joined TXT text) from the zone-file line keygen prints."""
    match = re.search(r"^\s*(\S+) IN TXT \( (.*) \)\s*$", output, re.M)
    assert match is not None, output
    strings = re.findall(r'"([^"]*)"', match.group(2))
    assert all(len(s) <= 255 for s in strings)
    return match.group(1), "".join(strings).encode()


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keygen_writes_a_private_key_whose_record_verifies_a_send(env, smtp_server, kind):
    """`dkim keygen`: a 0600 key, a TXT record and settings lines; a send with them verifies."""
    done = script(env, "dkim", "keygen", "--selector", "rk1", "--type", kind)
    assert done.returncode == 0, done.stderr
    path = Path("dkim-rk1.pem")
    assert path.stat().st_mode & 0o777 == 0o600
    name, text = zone_text(done.stdout)
    assert name == "rk1._domainkey.example.org."
    assert text.startswith(f"v=DKIM1; k={kind}; p=".encode())
    settings = dict(re.findall(r'^\s*(dkim_\w+) = "(.*)"$', done.stdout, re.M))
    assert Path(settings["dkim_key_file"]) == path.resolve()
    assert settings["dkim_selector"] == "rk1"
    env.update(
        REKINDLE_DKIM_KEY_FILE=settings["dkim_key_file"],
        REKINDLE_DKIM_SELECTOR=settings["dkim_selector"],
        REKINDLE_SMTP_URL=smtp_server.url,
    )
    add(env, ADA, "--name", "Ada", now=ADDED)
    assert script(env, "send", "--now", MONDAY).returncode == 0
    (received,) = smtp_server.messages
    verdict = dkim.verify(
        received.data, dnsfunc=lambda n, timeout=5: text if n.decode() == name else None
    )
    assert verdict


def test_keygen_names_an_internationalised_domain_by_its_a_label(env):
    """From at exämple.org: the record goes at <selector>._domainkey.xn--exmple-cua.org."""
    env["REKINDLE_FROM"] = "R <hello@exämple.org>"
    done = script(env, "dkim", "keygen", "--selector", "rk1")
    assert done.returncode == 0, done.stderr
    assert zone_text(done.stdout)[0] == f"rk1._domainkey.{IDN}."
    assert f"Publish this TXT record at rk1._domainkey.{IDN}:" in done.stdout


@pytest.mark.parametrize("domain", ["exa mple.org", "ex\u00e4mple..org", "xn--a.org", "-a.org"])
def test_a_dkim_domain_that_is_no_domain_name_is_refused_in_one_line(env, domain):
    """dkim_domain must be a domain name (an IDN is accepted and signs as its A-label)."""
    env.update(REKINDLE_DKIM_DOMAIN=domain.encode().decode("unicode_escape"))
    done = script(env, "dkim", "keygen")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be a domain name" in lines[0], done.stderr
    assert not list(Path().glob("*.pem"))


def test_keygen_refuses_to_overwrite_and_rejects_a_bad_selector(env):
    """An existing --out is left alone; a selector with a space or line break is refused."""
    Path("mine.pem").write_text("precious")
    done = script(env, "dkim", "keygen", "--out", "mine.pem")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "already exists" in done.stderr
    assert Path("mine.pem").read_text() == "precious"
    for selector in ("bad selector", "bad\nselector", "-x", "a;b"):
        refused = script(env, "dkim", "keygen", "--selector", selector)
        assert refused.returncode != 0
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in Path().glob("*.pem")) == ["mine.pem"]


def test_keygen_needs_a_domain_to_name_the_record(env):
    """Without `from` or dkim_domain there is no domain to publish at: no key is written."""
    del env["REKINDLE_FROM"]
    done = script(env, "dkim", "keygen")
    assert done.returncode == 2 and "set `from`" in done.stderr
    assert not list(Path().glob("*.pem"))


def test_keygen_help_recommends_rsa_and_dual_signing(env):
    """The help says rsa is the default because ed25519 alone is not verified everywhere."""
    done = run(env, "dkim", "keygen", "--help")
    assert done.exit_code == 0
    assert "default: rsa" in done.output and "dual" in done.output


# --- keys that cannot be used ----------------------------------------------------------------


def _small_rsa(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_new_private(path, pem)


def _world_readable(path: Path) -> None:
    write_new_private(path, dkimkey.generate("ed25519"))
    os.chmod(path, 0o644)


def _garbage(path: Path) -> None:
    write_new_private(
        path, b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    )


BROKEN = {
    "world-readable": (_world_readable, "chmod 600"),
    "rsa-1024": (_small_rsa, "RSA-1024"),
    "garbage": (_garbage, "not an unencrypted PEM private key"),
    "missing": (lambda path: None, "cannot read dkim_key_file"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
@pytest.mark.parametrize("command", ["send", "test-send"])
def test_a_key_that_cannot_be_used_stops_the_command_before_anything_is_sent(
    env, smtp_server, tmp_path, broken, command
):
    """World-readable, 1024-bit, garbage or missing: one error line, exit 1, nothing sent."""
    make, words = BROKEN[broken]
    path = tmp_path / "broken.pem"
    make(path)
    env.update(REKINDLE_DKIM_KEY_FILE=str(path), REKINDLE_SMTP_URL=smtp_server.url)
    add(env, ADA, "--name", "Ada", now=ADDED)
    args = ["send", "--now", MONDAY] if command == "send" else ["test-send", ADA, "1"]
    done = script(env, *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert smtp_server.messages == [] and smtp_server.connections == 0
    if command == "send":  # the lesson is still due: a fixed key sends it
        path.unlink(missing_ok=True)
        write_new_private(path, dkimkey.generate("rsa"))
        assert send(env, MONDAY)["sent"] == 1


@pytest.mark.parametrize(
    ("selectors", "words"),
    [
        ("one", "one selector for each of the 2"),
        ("bad selector, other", "must be a DNS name"),
        ("bad\nselector, other", "dkim_selector must be on one line"),
        ("a, a", "dkim_selector names 'a' twice"),
        ("Rk, rk", "dkim_selector names 'rk' twice"),
    ],
)
def test_selectors_that_do_not_fit_stop_send_with_one_line(
    env, keys, smtp_server, selectors, words
):
    """A selector count that differs from the keys', or one that is no DNS name, is refused."""
    files = [keys.make("rsa", "a"), keys.make("ed25519", "b")]
    env.update(
        REKINDLE_DKIM_KEY_FILE=",".join(map(str, files)),
        REKINDLE_DKIM_SELECTOR=selectors,
        REKINDLE_SMTP_URL=smtp_server.url,
    )
    done = script(env, "send", "--now", MONDAY)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert smtp_server.messages == []


# --- canonicalisation ----------------------------------------------------------------------


@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"=", b"\xc3\xa9"]), max_size=60))
def test_canonical_body_matches_dkimpy_for_any_body(pieces):
    """The fast path for already-canonical bodies gives exactly dkimpy's relaxed body."""
    body = b"".join(pieces)
    assert canonical_body(body) == Relaxed.canonicalize_body(body)


TEXT = st.lists(
    st.sampled_from(["a", " ", "  ", "\t", "\n", "\r\n", "é", "=", "<", "x" * 80]), max_size=12
).map("".join)


@given(st.lists(TEXT, min_size=1, max_size=5), st.lists(TEXT, min_size=4, max_size=4))
def test_a_part_canonicalised_piece_by_piece_is_the_part_canonicalised_whole(literals, values):
    """A part's constant pieces canonicalised once plus each value alone give dkimpy's body."""
    names = tuple(f"v{i % 4}" for i in range(len(literals) - 1))
    slots = EncodedSlots(Slots(tuple(literals), names), canonical_lines)
    filled = {f"v{i}": value for i, value in enumerate(values)}
    encoded, canonical = slots.fill_canonical(filled)
    assert encoded == slots.fill(filled)
    body = b"--b\r\n\r\n" + encoded + b"\r\n--b--\r\n"
    assert b"--b\r\n\r\n" + canonical + b"\r\n--b--\r\n" == Relaxed.canonicalize_body(body)
