"""doctor: every DNS verdict against a real DNS server on loopback, the settings, each relay
(a real SMTP server, to which nothing is sent), the complaint rate, --json and exit codes."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest
import trustme
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from clirun import run, script
from dnsserver import NameServer, Silent, Zone
from mailer.app import history
from mailer.config import Settings, load_settings
from mailer.content import dkimkey
from mailer.doctor import Check, Verdict, complaints, diagnose, records, relay, setup
from mailer.doctor.lookup import Dns
from mailer.reports.complaints import complaint_rate
from mailer.runtime import Runtime
from mailer.store import db
from mailer.store.models import Change, Delivery
from mailserver import MailServer, free_port
from subscribers.models import Subscriber

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SPF = "v=spf1 mx include:_spf.relay.example -all"


def good_zone(dkim_record: str) -> Zone:
    """example.org as it should be: SPF naming the relay, DMARC p=reject, the key, an MX."""
    return {
        "example.org": {
            "TXT": ["google-site-verification=abc123", SPF],
            "MX": [(10, "mx.example.org")],
        },
        "mx.example.org": {"A": ["198.51.100.25"]},
        "_spf.relay.example": {"TXT": ["v=spf1 ip4:198.51.100.0/28 -all"]},
        "smtp.relay.example": {"A": ["198.51.100.10"]},
        "smtp.elsewhere.example": {"A": ["203.0.113.7"]},
        "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"]},
        "rekindle._domainkey.example.org": {"TXT": [dkim_record]},
    }


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    """One RSA-2048 key for the module: its TXT record is longer than one DNS string."""
    return dkimkey.generate("rsa")


@pytest.fixture
def key_file(tmp_path: Path, rsa_pem: bytes) -> Path:
    """The RSA key as dkim_key_file, 0600."""
    path = tmp_path / "dkim.pem"
    path.write_bytes(rsa_pem)
    path.chmod(0o600)
    return path


@pytest.fixture
def dkim_key(key_file: Path) -> dkimkey.DkimKey:
    """The configured key, whose record the good zone publishes."""
    return dkimkey.load(key_file, "rekindle", "example.org")


@pytest.fixture
def serve_zone() -> Iterator[Callable[[Zone], NameServer]]:
    """Start DNS servers for zones; all are stopped afterwards."""
    started: list[NameServer] = []

    def start(zone: Zone) -> NameServer:
        started.append(NameServer(zone))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def doctor_env(env: dict[str, str], key_file: Path, smtp_server: MailServer) -> dict[str, str]:
    """Settings that pass every check, once a name server is added (REKINDLE_DNS_SERVER)."""
    return {
        **env,
        "REKINDLE_REPLY_TO": "Rekindle <support@example.org>",
        "REKINDLE_DKIM_KEY_FILE": str(key_file),
        "REKINDLE_SMTP_URL": smtp_server.url,
        "REKINDLE_NOW": NOW.isoformat(),
    }


def changed(env: dict[str, str], **changes: str | None) -> dict[str, str]:
    """`env` with REKINDLE_<KEY> set (or removed, for None) per `changes`."""
    values = dict(env)
    for key, value in changes.items():
        values.pop(f"REKINDLE_{key.upper()}", None)
        if value is not None:
            values[f"REKINDLE_{key.upper()}"] = value
    return values


def settings(env: dict[str, str], **changes: str | None) -> Settings:
    """Settings from `env` with `changes`."""
    return load_settings(env=changed(env, **changes))


def by_name(checks: list[Check]) -> dict[str, Check]:
    """Checks keyed by name (each name once in these runs)."""
    assert len({c.name for c in checks}) == len(checks)
    return {c.name: c for c in checks}


def doctor(env: dict[str, str], **changes: str | None) -> dict[str, Check]:
    """Every check, run as the CLI runs them, keyed by name."""
    rt = Runtime(env=changed(env, **changes))
    try:
        return by_name(diagnose(rt.settings, rt.session, NOW))
    finally:
        rt.close()


# --- everything in order ---------------------------------------------------------------------


def test_good_zone_every_check_ok_and_exit_0(doctor_env, serve_zone, dkim_key, smtp_server):
    """With a good zone and settings, every check is ok, --json says problems 0, exit 0."""
    ns = serve_zone(good_zone(dkim_key.txt_record))
    result = run({**doctor_env, "REKINDLE_DNS_SERVER": ns.address}, "doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"checks", "problems"}
    assert report["problems"] == 0
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert (check["status"], check["fix"]) == ("ok", None), check
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert list(details) == [
        "from",
        "base-url",
        "postal-address",
        "reply-to",
        "alignment",
        "spf",
        "dmarc",
        "dkim",
        "bounce-mx",
        "relay",
        "complaints",
    ]
    assert details["spf"] == (
        f"example.org: {SPF} (the relay 127.0.0.1 is on this machine: "
        "make sure SPF names the address it sends from)"
    )
    assert details["dmarc"].endswith("(policy reject)")
    assert details["dkim"].startswith("rekindle._domainkey.example.org: k=rsa, p= matches")
    assert details["bounce-mx"] == "example.org: MX 10 mx.example.org"
    assert ("_spf.relay.example", "TXT") in ns.resolver.questions  # pyspf asked it too
    assert smtp_server.messages == [] and smtp_server.quits == 1


def test_installed_script_against_a_broken_zone(doctor_env, serve_zone, dkim_key, smtp_server):
    """The console script prints a line per check and a fix under each problem; exit 1."""
    zone = good_zone(dkim_key.txt_record)
    zone["_dmarc.example.org"]["TXT"] = ["v=DMARC1; p=none"]
    del zone["rekindle._domainkey.example.org"]
    ns = serve_zone(zone)
    done = script({**doctor_env, "REKINDLE_DNS_SERVER": ns.address}, "doctor")
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[-1] == "1 problem, 1 warning"
    assert any(
        line.startswith("warning  dmarc           _dmarc.example.org: v=DMARC1; p=none (policy")
        for line in lines
    ), done.stdout
    dkim = next(i for i, line in enumerate(lines) if line.startswith("problem  dkim "))
    assert (
        lines[dkim + 1]
        .strip()
        .startswith(
            "fix: publish a TXT record at rekindle._domainkey.example.org: v=DKIM1; k=rsa; p="
        )
    )
    as_json = script({**doctor_env, "REKINDLE_DNS_SERVER": ns.address}, "doctor", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["problems"] == 1
    assert smtp_server.messages == []


# --- DNS verdicts ----------------------------------------------------------------------------


def _set(name: str, kind: str, values: list) -> Callable[[Zone], None]:
    def change(zone: Zone) -> None:
        zone[name][kind] = values

    return change


def _drop(name: str, kind: str | None = None) -> Callable[[Zone], None]:
    def change(zone: Zone) -> None:
        if kind is None:
            del zone[name]
        else:
            del zone[name][kind]

    return change


BROKEN = {
    "no SPF": (
        _set("example.org", "TXT", ["google-site-verification=abc123"]),
        "spf",
        Verdict.PROBLEM,
        "example.org has no SPF record",
    ),
    "two SPF records": (
        _set("example.org", "TXT", [SPF, "v=spf1 -all"]),
        "spf",
        Verdict.PROBLEM,
        "example.org: Two or more type TXT spf records found.",
    ),
    "SPF syntax error": (
        _set("example.org", "TXT", ["v=spf1 mx incloode:_spf.relay.example -all"]),
        "spf",
        Verdict.PROBLEM,
        "Unknown mechanism found: incloode:_spf.relay.example",
    ),
    "SPF +all": (
        _set("example.org", "TXT", ["v=spf1 mx +all"]),
        "spf",
        Verdict.PROBLEM,
        "lets any server on the Internet send as example.org",
    ),
    "SPF ?all": (
        _set("example.org", "TXT", ["v=spf1 mx ?all"]),
        "spf",
        Verdict.WARNING,
        "says nothing about other servers",
    ),
    "SPF include that does not exist": (
        _drop("_spf.relay.example"),
        "spf",
        Verdict.PROBLEM,
        "No valid SPF record for included domain: _spf.relay.example",
    ),
    "no DMARC": (
        _drop("_dmarc.example.org"),
        "dmarc",
        Verdict.PROBLEM,
        "no DMARC record at _dmarc.example.org",
    ),
    "DMARC p=none": (
        _set("_dmarc.example.org", "TXT", ["v=DMARC1; p=none; rua=mailto:d@example.org"]),
        "dmarc",
        Verdict.WARNING,
        "(policy none",
    ),
    "two DMARC records": (
        _set("_dmarc.example.org", "TXT", ["v=DMARC1; p=reject", "v=DMARC1; p=none"]),
        "dmarc",
        Verdict.PROBLEM,
        "has 2 DMARC records",
    ),
    "DKIM record missing": (
        _drop("rekindle._domainkey.example.org"),
        "dkim",
        Verdict.PROBLEM,
        "no DKIM record at rekindle._domainkey.example.org",
    ),
    "DKIM key revoked": (
        _set("rekindle._domainkey.example.org", "TXT", ["v=DKIM1; k=rsa; p="]),
        "dkim",
        Verdict.PROBLEM,
        "publishes no key (empty p=: revoked)",
    ),
    "bounce domain without MX or A": (
        _drop("example.org", "MX"),
        "bounce-mx",
        Verdict.PROBLEM,
        "example.org has neither MX nor A: bounces to hello@example.org cannot arrive",
    ),
    "bounce domain with a null MX": (
        _set("example.org", "MX", [(0, ".")]),
        "bounce-mx",
        Verdict.PROBLEM,
        "null MX",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_zone_gets_its_verdict(case, doctor_env, serve_zone, dkim_key):
    """A zone broken in one way gives that one check its verdict; every other check stays ok."""
    change, name, status, fragment = BROKEN[case]
    zone = good_zone(dkim_key.txt_record)
    change(zone)
    ns = serve_zone(zone)
    checks = doctor(doctor_env, dns_server=ns.address)
    assert checks[name].status is status, checks[name]
    assert fragment in checks[name].detail
    assert checks[name].fix
    assert [c for c in checks.values() if c.status is not Verdict.OK] == [checks[name]]


def test_an_internationalised_from_domain_is_looked_up_by_its_a_label(
    doctor_env, serve_zone, dkim_key
):
    """From at exämple.org: SPF, DMARC, DKIM and MX are read at xn--exmple-cua.org, d= is
    that A-label, and every check is ok."""
    idn = "xn--exmple-cua.org"
    zone = {
        name.replace("example.org", idn) if name.endswith("example.org") else name: records
        for name, records in good_zone(dkim_key.txt_record).items()
    }
    zone["mx.example.org"] = {"A": ["198.51.100.25"]}
    ns = serve_zone(zone)
    checks = doctor(doctor_env, dns_server=ns.address, **{"from": "R <hello@exämple.org>"})
    assert [c for c in checks.values() if c.status is not Verdict.OK] == []
    assert checks["alignment"].detail == f"DKIM d={idn}, From {idn}"
    assert checks["dkim"].detail.startswith(f"rekindle._domainkey.{idn}: k=rsa")
    assert checks["dmarc"].detail.startswith(f"_dmarc.{idn}: ")
    assert checks["spf"].detail.startswith(f"{idn}: ")
    assert checks["bounce-mx"].detail == f"{idn}: MX 10 mx.example.org"


def test_dkim_record_of_another_key_is_a_problem(doctor_env, serve_zone, dkim_key):
    """A selector that publishes a different key (here an Ed25519 one) is a problem whose fix
    is the record to publish."""
    other = tmp_key(doctor_env, "ed25519")
    ns = serve_zone(good_zone(other.txt_record))
    check = doctor(doctor_env, dns_server=ns.address)["dkim"]
    assert check.status is Verdict.PROBLEM
    assert check.detail.startswith(
        "rekindle._domainkey.example.org publishes a key (k=ed25519) that is not the one in "
    )
    assert check.fix == f"publish a TXT record at {dkim_key.dns_name}: {dkim_key.txt_record}"


def dkimpy_verifies(key: dkimkey.DkimKey, record: str) -> bool:
    """Does dkimpy verify a message signed with `key` when the selector publishes `record`?"""
    message = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: x\r\n\r\nhi\r\n"
    from cryptography.hazmat.primitives import serialization

    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signed = dkim.sign(message, b"rekindle", b"example.org", pem, include_headers=[b"from"])
    try:
        return bool(dkim.verify(signed + message, dnsfunc=lambda name, timeout=5: record.encode()))
    except dkim.DKIMException:
        return False


# (change to the good record, verdict, words in the detail, whether dkimpy verifies with it)
DKIM_RECORDS = {
    "v=DKIM2": (
        lambda r: r.replace("v=DKIM1", "v=DKIM2"),
        Verdict.PROBLEM,
        "v=DKIM2: receivers discard",
        False,
    ),
    "k=RSA": (
        lambda r: r.replace("k=rsa", "k=RSA"),
        Verdict.PROBLEM,
        "k=RSA: receivers know only k=rsa and k=ed25519",
        False,
    ),
    "s=other": (lambda r: r + "; s=other", Verdict.PROBLEM, "s=other: the key is not for", False),
    "h=sha1": (lambda r: r + "; h=sha1", Verdict.PROBLEM, "h=sha1: the key refuses sha256", None),
    "v= not first": (
        lambda r: r.replace("v=DKIM1; k=rsa", "k=rsa; v=DKIM1"),
        Verdict.PROBLEM,
        "v= is not the first tag",
        None,
    ),
    "a tag twice": (lambda r: r + "; k=rsa", Verdict.PROBLEM, "is not a valid tag list", False),
    "t=y": (lambda r: r + "; t=y", Verdict.WARNING, "t=y (testing)", True),
    "no v=": (lambda r: r.replace("v=DKIM1; ", ""), Verdict.OK, "k=rsa, p= matches", True),
    "no k=": (lambda r: r.replace("k=rsa; ", ""), Verdict.OK, "k=rsa, p= matches", True),
    "tabs": (lambda r: r.replace("; ", ";\t "), Verdict.OK, "k=rsa, p= matches", True),
    "s=email": (lambda r: r + "; s=email", Verdict.OK, "k=rsa, p= matches", True),
    "s=*": (lambda r: r + "; s=*", Verdict.OK, "k=rsa, p= matches", True),
    "s=email:*": (lambda r: r + "; s=email:*", Verdict.WARNING, "read s= as one value", False),
    "h=sha1:sha256": (lambda r: r + "; h=sha1:sha256", Verdict.OK, "p= matches", True),
    "t=s": (lambda r: r + "; t=s", Verdict.OK, "k=rsa, p= matches", True),
}


@pytest.mark.parametrize("case", list(DKIM_RECORDS))
def test_dkim_record_verdict_is_what_a_verifier_does(case, doctor_env, serve_zone, dkim_key):
    """v= other than DKIM1 or not first, k= not exactly rsa or ed25519, s= not for email, h=
    without sha256, a malformed tag list: problem; t=y, or an s= list dkimpy cannot read:
    warning. dkimpy agrees where it checks the tag (it ignores h= and where v= stands)."""
    change, status, words, verifies = DKIM_RECORDS[case]
    record = change(dkim_key.txt_record)
    ns = serve_zone(good_zone(record))
    check = doctor(doctor_env, dns_server=ns.address)["dkim"]
    assert check.status is status, check
    assert words in check.detail, check.detail
    assert (check.fix is None) == (status is Verdict.OK)
    if verifies is not None:
        assert dkimpy_verifies(dkim_key, record) is verifies


def key_path(env: dict[str, str], kind: str) -> Path:
    """Where tmp_key writes the other key of `kind`."""
    return Path(env["REKINDLE_OUTBOX"]).parent / f"other-{kind}.pem"


def tmp_key(env: dict[str, str], kind: str) -> dkimkey.DkimKey:
    """Another key, written 0600 next to the database."""
    path = key_path(env, kind)
    path.write_bytes(dkimkey.generate(kind))
    path.chmod(0o600)
    return dkimkey.load(path, "rekindle", "example.org")


def test_ed25519_key_and_a_resolver_named_by_host(doctor_env, serve_zone):
    """An Ed25519 key published as it is gives ok; dns_server may name its host (localhost)."""
    key = tmp_key(doctor_env, "ed25519")
    zone = good_zone(key.txt_record)
    ns = serve_zone(zone)
    chosen = settings(
        doctor_env,
        dns_server=f"localhost:{ns.port}",
        dkim_key_file=str(key_path(doctor_env, "ed25519")),
    )
    [check] = records.dkim(Dns(chosen.dns_server), chosen)
    assert (check.status, check.detail.split(",")[0]) == (
        Verdict.OK,
        "rekindle._domainkey.example.org: k=ed25519",
    )


def test_no_dkim_key_is_a_warning_naming_keygen(doctor_env, serve_zone, dkim_key):
    """Without dkim_key_file mail is unsigned: a warning whose fix is `dkim keygen`."""
    ns = serve_zone(good_zone(dkim_key.txt_record))
    chosen = settings(doctor_env, dns_server=ns.address, dkim_key_file=None)
    [check] = records.dkim(Dns(chosen.dns_server), chosen)
    assert check.status is Verdict.WARNING
    assert "rekindle-mail dkim keygen" in (check.fix or "")


def test_bounce_domain_with_only_an_address_is_ok(doctor_env, serve_zone, dkim_key):
    """No MX but an A record: mail goes to that address (RFC 5321 §5.1), so bounces arrive."""
    zone = good_zone(dkim_key.txt_record)
    del zone["example.org"]["MX"]
    zone["example.org"]["A"] = ["198.51.100.80"]
    ns = serve_zone(zone)
    chosen = settings(doctor_env, dns_server=ns.address)
    check = records.bounce_mx(Dns(chosen.dns_server), chosen)
    assert (check.status, check.detail) == (
        Verdict.OK,
        "example.org: no MX, mail goes to its address 198.51.100.80",
    )


def test_bounce_address_domain_is_the_one_checked(doctor_env, serve_zone, dkim_key):
    """With bounce_address at another domain, SPF and the MX are looked up there."""
    zone = good_zone(dkim_key.txt_record)
    zone["bounces.example.org"] = {"TXT": ["v=spf1 -all"], "MX": [(5, "mx.example.org")]}
    ns = serve_zone(zone)
    chosen = settings(doctor_env, dns_server=ns.address, bounce_address="b@bounces.example.org")
    lookups = Dns(chosen.dns_server)
    assert records.spf(lookups, chosen).detail.startswith("bounces.example.org: v=spf1 -all (")
    assert records.bounce_mx(lookups, chosen).detail == "bounces.example.org: MX 5 mx.example.org"


def test_spf_must_name_a_relay_it_can_resolve(doctor_env, serve_zone, dkim_key):
    """A relay whose name resolves must pass SPF at every address; one on loopback is not
    judged (its public address is not known here)."""
    ns = serve_zone(good_zone(dkim_key.txt_record))
    inside = settings(
        doctor_env,
        dns_server=ns.address,
        smtp_url="smtp://127.0.0.1:25, smtp+starttls://smtp.relay.example:587",
    )
    check = records.spf(Dns(ns.address), inside)
    assert check.status is Verdict.OK
    assert check.detail.startswith(f"example.org: {SPF} (the relay 127.0.0.1 is on this machine")
    outside = settings(
        doctor_env, dns_server=ns.address, smtp_url="smtp+starttls://smtp.elsewhere.example:587"
    )
    check = records.spf(Dns(ns.address), outside)
    assert check.status is Verdict.PROBLEM
    assert "does not authorise the relay smtp.elsewhere.example (203.0.113.7: fail)" in (
        check.detail
    )
    literal = settings(doctor_env, dns_server=ns.address, smtp_url="smtps://198.51.100.9:465")
    check = records.spf(Dns(ns.address), literal)
    assert (check.status, check.detail) == (Verdict.OK, f"example.org: {SPF}")
    unknown = settings(doctor_env, dns_server=ns.address, smtp_url="smtps://nowhere.example")
    check = records.spf(Dns(ns.address), unknown)
    assert check.status is Verdict.OK
    assert "(the relay nowhere.example does not resolve: make sure SPF names" in check.detail


def test_dmarc_of_the_parent_domain_applies_with_its_sp(doctor_env, serve_zone, dkim_key):
    """From a subdomain, the organisation's record counts, with its subdomain policy sp=."""
    zone = good_zone(dkim_key.txt_record)
    zone["_dmarc.example.org"]["TXT"] = ["v=DMARC1; p=reject; sp=none"]
    ns = serve_zone(zone)
    chosen = settings(doctor_env, dns_server=ns.address, **{"from": "hello@news.example.org"})
    check = records.dmarc(Dns(ns.address), chosen)
    assert check.status is Verdict.WARNING
    assert check.detail.startswith("_dmarc.example.org: v=DMARC1; p=reject; sp=none")


def test_a_resolver_that_never_answers_is_a_problem_not_a_traceback(doctor_env, dkim_key):
    """Every DNS check says the resolver did not answer; the run goes on to the others."""
    silent = Silent()
    try:
        rt = Runtime(env=changed(doctor_env, dns_server=silent.address))
        checks = diagnose(rt.settings, rt.session, NOW, dns_timeout=1)
        rt.close()
        dns_checks = [c for c in checks if c.name in ("spf", "dmarc", "dkim", "bounce-mx")]
        assert len(dns_checks) == 4
        for check in dns_checks:
            assert check.status is Verdict.PROBLEM
            assert (
                check.detail == f"no answer: the resolver at {silent.address} did not "
                "answer within 1 s"
            )
        assert by_name(checks)["relay"].status is Verdict.OK
        done = script({**doctor_env, "REKINDLE_DNS_SERVER": silent.address}, "doctor")
    finally:
        silent.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert "problem  spf             no answer: the resolver at" in done.stdout


def test_a_refused_query_fails_its_check_alone(doctor_env, serve_zone, dkim_key):
    """REFUSED for one name makes that check a problem saying so; the other lookups go on."""
    ns = serve_zone(good_zone(dkim_key.txt_record))
    ns.resolver.refused.add("_dmarc.example.org")
    checks = doctor(doctor_env, dns_server=ns.address)
    assert checks["dmarc"].status is Verdict.PROBLEM
    assert checks["dmarc"].detail == (
        f"no answer: the resolver at {ns.address} refused or failed the query for "
        "_dmarc.example.org (TXT)"
    )
    assert [c.name for c in checks.values() if c.status is not Verdict.OK] == ["dmarc"]
    ns.resolver.refused.add("example.org")
    check = doctor(doctor_env, dns_server=ns.address)["spf"]
    assert check.status is Verdict.PROBLEM
    assert "refused or failed the query for example.org (TXT)" in check.detail


# --- configuration ---------------------------------------------------------------------------

SETTINGS = {
    "http base_url": (
        {"base_url": "http://rekindle.example.org"},
        setup.base_url,
        Verdict.PROBLEM,
        "http://rekindle.example.org: unsubscribe links over http",
    ),
    "localhost base_url": (
        {"base_url": "https://localhost:8080"},
        setup.base_url,
        Verdict.PROBLEM,
        "readers cannot reach localhost",
    ),
    "default base_url": (
        {"base_url": None},
        setup.base_url,
        Verdict.PROBLEM,
        "http://localhost:8080: readers cannot reach localhost",
    ),
    "no postal_address": (
        {"postal_address": None},
        setup.postal_address,
        Verdict.PROBLEM,
        "no postal_address",
    ),
    "no reply_to": (
        {"reply_to": None},
        setup.reply_to,
        Verdict.WARNING,
        "no reply_to: replies go to hello@example.org",
    ),
    "from localhost": (
        {"from": "rekindle@localhost"},
        setup.sender,
        Verdict.PROBLEM,
        "localhost is not a domain on the Internet",
    ),
    "misaligned dkim_domain": (
        {"dkim_domain": "mailer.example.net"},
        setup.alignment,
        Verdict.PROBLEM,
        "dkim_domain mailer.example.net does not align with the From domain example.org",
    ),
    "dkim_domain a subdomain": (
        {"dkim_domain": "mail.example.org"},
        setup.alignment,
        Verdict.OK,
        "DKIM d=mail.example.org, From example.org",
    ),
    "dkim_domain a sibling": (
        {"dkim_domain": "mail.example.org", "from": "hello@news.example.org"},
        setup.alignment,
        Verdict.WARNING,
        "DKIM d=mail.example.org, From news.example.org: aligned if example.org is your "
        "organisational domain",
    ),
    "dkim_domain sharing only the top-level domain": (
        {"dkim_domain": "mail.other.org", "from": "hello@news.example.org"},
        setup.alignment,
        Verdict.PROBLEM,
        "dkim_domain mail.other.org does not align with the From domain news.example.org",
    ),
    "dkim_domain a look-alike": (
        {"dkim_domain": "example.org.evil.example"},
        setup.alignment,
        Verdict.PROBLEM,
        "does not align",
    ),
    "dkim_domain the parent": (
        {"dkim_domain": "example.org", "from": "hello@news.example.org"},
        setup.alignment,
        Verdict.OK,
        "DKIM d=example.org, From news.example.org",
    ),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_each_setting_gets_its_verdict(case, doctor_env):
    """Links readers cannot follow, a missing footer address, misaligned DKIM: each named."""
    changes, check_of, status, fragment = SETTINGS[case]
    check = check_of(settings(doctor_env, **changes))
    assert check.status is status, check
    assert fragment in check.detail
    assert (check.fix is None) == (status is Verdict.OK)


# --- relays ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private CA the system does not trust."""
    return trustme.CA()


@pytest.fixture
def tls_server(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[MailServer]:
    """A server offering STARTTLS (or implicit TLS for smtps), certificate from the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if request.param == "smtps":
        server = MailServer(ssl_context=context)
    else:
        server = MailServer(tls_context=context, require_starttls=True)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("tls_server", "detail"),
    [
        ("smtp+starttls", "STARTTLS, certificate verified"),
        ("smtps", "implicit TLS, certificate verified"),
    ],
    indirect=["tls_server"],
)
def test_relay_with_tls_is_ok_and_nothing_is_sent(
    tls_server, detail, doctor_env, ca, tmp_path, request
):
    """One connection, EHLO, TLS with the certificate verified, QUIT; no message."""
    scheme = request.node.callspec.params["tls_server"]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chosen = settings(
        doctor_env,
        smtp_url=f"{scheme}://mailer@127.0.0.1:{tls_server.port}",
        tls_ca_file=str(ca_file),
        smtp_password="unused",
    )
    [check] = relay.relays(chosen)
    assert (check.status, check.detail) == (
        Verdict.OK,
        f"{scheme}://127.0.0.1:{tls_server.port}: {detail}",
    )
    assert (tls_server.connections, tls_server.quits, tls_server.messages) == (1, 1, [])


@pytest.mark.parametrize("tls_server", ["smtp+starttls"], indirect=True)
def test_relay_with_an_untrusted_certificate_is_a_problem(tls_server, doctor_env):
    """Without tls_ca_file the test CA is unknown: the certificate check fails, as send's would."""
    chosen = settings(doctor_env, smtp_url=f"smtp+starttls://127.0.0.1:{tls_server.port}")
    [check] = relay.relays(chosen)
    assert check.status is Verdict.PROBLEM
    assert "presented a certificate that cannot be trusted" in check.detail
    assert tls_server.messages == []


def test_relay_without_starttls_is_a_problem_when_the_url_asks_for_it(doctor_env, smtp_server):
    """smtp+starttls:// to a server that offers no STARTTLS: a problem; the session ends with
    QUIT and nothing is sent."""
    chosen = settings(doctor_env, smtp_url=f"smtp+starttls://127.0.0.1:{smtp_server.port}")
    [check] = relay.relays(chosen)
    assert check.status is Verdict.PROBLEM
    assert check.detail == f"smtp+starttls://127.0.0.1:{smtp_server.port} does not offer STARTTLS"
    assert (smtp_server.connections, smtp_server.quits, smtp_server.messages) == (1, 1, [])


def test_plain_relay_on_this_machine_is_ok(doctor_env, smtp_server):
    """smtp:// to loopback (a local Postfix) needs no TLS."""
    [check] = relay.relays(settings(doctor_env))
    assert check.status is Verdict.OK
    assert check.detail.endswith("no TLS, which is fine on this machine")
    assert smtp_server.messages == []


def test_closed_port_and_each_relay_get_a_check(doctor_env, smtp_server):
    """Every relay of smtp_url is tried once; a closed port is a problem, the next still ok."""
    closed = free_port()
    chosen = settings(doctor_env, smtp_url=f"smtp://127.0.0.1:{closed}, {smtp_server.url}")
    first, second = relay.relays(chosen, timeout=2)
    assert first.status is Verdict.PROBLEM
    assert first.detail.startswith(f"cannot reach smtp://127.0.0.1:{closed}: ")
    assert second.status is Verdict.OK
    assert (smtp_server.connections, smtp_server.messages) == (1, [])


def test_no_smtp_url_is_a_warning(doctor_env):
    """Mail only goes to the Maildir outbox."""
    [check] = relay.relays(settings(doctor_env, smtp_url=None))
    assert check.status is Verdict.WARNING
    assert check.detail.startswith("no smtp_url: mail is written to the Maildir outbox")


# --- complaints ------------------------------------------------------------------------------


def seed(url: str, mailed: int, complained: int, old: int = 0) -> None:
    """`mailed` subscribers sent a lesson 5 days ago, the first `complained` of them turned
    `complained` 2 days ago; `old` more mailed and complained 45 days ago (outside the window)."""
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    long_ago, recent = NOW - timedelta(days=45), NOW - timedelta(days=5)
    people, letters = [], []
    for i in range(1, mailed + old + 1):
        outside = i > mailed
        status = "complained" if i <= complained or outside else "active"
        changed = long_ago if outside else NOW - timedelta(days=2 if i <= complained else 9)
        people.append(
            {
                "id": i,
                "email": f"reader{i}@example.net",
                "timezone": "UTC",
                "status": status,
                "source": "cli",
                "created_at": long_ago - timedelta(days=10),
                "status_changed_at": changed,
            }
        )
        sent = long_ago - timedelta(days=1) if outside else recent
        letters.append(
            {
                "subscriber_id": i,
                "key": "lesson-1",
                "status": "sent",
                "message_id": f"<{i}@example.org>",
                "due_at": sent,
                "attempts": 1,
                "sent_at": sent,
                "updated_at": sent,
            }
        )
    complaints = [  # what inbound records for a proved feedback report (the history counts)
        {
            "subscriber_id": p["id"],
            "at": p["status_changed_at"],
            "actor": "reader",
            "via": "feedback loop",
            "change": history.COMPLAINT,
            "detail": "marked a letter as spam",
        }
        for p in people
        if p["status"] == "complained"
    ]
    with Session(engine) as session, session.begin():
        session.execute(insert(Subscriber), people)
        session.execute(insert(Delivery), letters)
        if complaints:
            session.execute(insert(Change), complaints)
    engine.dispose()


@pytest.mark.parametrize(
    ("complained", "status", "detail"),
    [
        (0, Verdict.OK, "0 of 1000 subscribers mailed in the last 30 days complained (0.00%)"),
        (1, Verdict.OK, "1 of 1000 subscribers mailed in the last 30 days complained (0.10%)"),
        (
            2,
            Verdict.WARNING,
            "2 of 1000 subscribers mailed in the last 30 days complained (0.20%): "
            "Gmail's line is 0.3 %",
        ),
        (
            4,
            Verdict.WARNING,
            "4 of 1000 subscribers mailed in the last 30 days complained (0.40%): "
            "above Gmail's line of 0.3 %",
        ),
    ],
)
def test_complaint_rate_warns_above_a_tenth_of_a_percent(database_url, complained, status, detail):
    """Complaints in the last 30 days per subscriber mailed in them; old ones do not count."""
    seed(database_url, mailed=1000, complained=complained, old=20)
    engine = db.make_engine(database_url)
    try:
        with Session(engine) as session:
            found = complaint_rate(session, NOW)
        assert (found.complaints, found.mailed) == (complained, 1000)
        check = complaints(lambda: Session(engine), NOW)
    finally:
        engine.dispose()
    assert (check.status, check.detail) == (status, detail)


def test_complaint_rate_counts_a_complainant_mailed_before_the_window(sqlite_url):
    """Someone mailed 45 days ago who complained yesterday counts as mailed too (rate <= 1)."""
    seed(sqlite_url, mailed=0, complained=0, old=1)
    engine = db.make_engine(sqlite_url)
    with Session(engine) as session, session.begin():
        session.execute(update(Change).values(at=NOW - timedelta(days=1)))
    with Session(engine) as session:
        found = complaint_rate(session, NOW)
    engine.dispose()
    assert (found.complaints, found.mailed, found.rate) == (1, 1, 1.0)


def test_complaints_through_the_cli(doctor_env, serve_zone, dkim_key, sqlite_url):
    """`doctor --json` carries the complaint warning; a warning alone still exits 0."""
    seed(sqlite_url, mailed=500, complained=1)
    ns = serve_zone(good_zone(dkim_key.txt_record))
    result = run({**doctor_env, "REKINDLE_DNS_SERVER": ns.address}, "doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [check] = [c for c in report["checks"] if c["name"] == "complaints"]
    assert check["status"] == "warning"
    assert check["detail"].startswith("1 of 500 subscribers mailed in the last 30 days")
    assert report["problems"] == 0
