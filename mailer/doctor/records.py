"""The DNS checks of doctor: SPF, DMARC, each DKIM selector, and MX (or A) for bounces.

SPF is evaluated by pyspf, DKIM and DMARC tag lists parsed by dkimpy; the
verdicts are those of the README, "Getting into the inbox".
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mailer.config import Settings, a_label
from mailer.doctor.check import Check, ok, problem, warning
from mailer.doctor.lookup import Dns, Unanswered, pyspf_through
from mailer.errors import ConfigError
from mailer.transport.smtp import is_loopback

if TYPE_CHECKING:
    from mailer.content.dkimkey import DkimKey

KEY_TYPES = ("rsa", "ed25519")  # the k= values verifiers know (RFC 6376, RFC 8463)

# RFC 5737's TEST-NET-1: an address no SPF record should authorise. The result pyspf
# gives it is the record's verdict on a stranger (its `all`, or a redirect's).
STRANGER = "192.0.2.1"
DNS_FIX = "check that the resolver (dns_server, or the system's) answers, then run doctor again"


def unanswered(name: str, exc: Unanswered) -> Check:
    """The verdict when the resolver did not answer: a problem, never a traceback."""
    return problem(name, f"no answer: {exc}", DNS_FIX)


def ascii_domain(domain: str) -> str:
    """`domain` as DNS names it: an internationalised name as its A-label (`xn--`), lower
    case; a name that is no valid IDN as it is (its lookups then fail and say so)."""
    try:
        return a_label(domain)
    except ConfigError:
        return domain.lower()


def domain_of(address: str) -> str:
    """The domain of a bare address, lower case, as an A-label."""
    return ascii_domain(address.rpartition("@")[2])


def ascii_address(address: str) -> str:
    """A bare address with its domain as an A-label (the local part as it is)."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}" if local else address


def spf(lookups: Dns, settings: Settings) -> Check:
    """The envelope domain's SPF record: exactly one, valid, not +all, naming the relays."""
    import spf as pyspf

    sender = ascii_address(settings.envelope_address)
    domain = domain_of(sender)
    fix = f"publish one TXT record at {domain} such as 'v=spf1 include:<your relay's SPF> -all'"
    with pyspf_through(lookups):
        query = pyspf.query(i=STRANGER, s=sender, h=domain)
        try:
            record = query.dns_spf(domain)
        except pyspf.PermError as exc:
            return problem("spf", f"{domain}: {exc}", f"keep exactly one v=spf1 record: {fix}")
        except pyspf.TempError as exc:
            return unanswered("spf", Unanswered(lookups.failure or str(exc).removeprefix("DNS ")))
        if record is None:
            return problem("spf", f"{domain} has no SPF record", fix)
        verdict, _, explanation = query.check(spf=record)
        found = f"{domain}: {record}"
        if verdict == "temperror":
            return unanswered("spf", Unanswered(lookups.failure or explanation))
        if verdict == "permerror":
            return problem("spf", f"{found} ({explanation})", f"correct the record: {fix}")
        if verdict == "pass":
            return problem(
                "spf",
                f"{found} lets any server on the Internet send as {domain}",
                "end the record with -all (or ~all) instead of +all",
            )
        judged = _relays_refused(lookups, settings, record)
    if isinstance(judged, Unanswered):
        return unanswered("spf", judged)
    refused, unjudged = judged
    if refused:
        return problem(
            "spf",
            f"{found} does not authorise {', '.join(refused)}",
            f"add the relay to the record at {domain} (its include: or ip4:/ip6:)",
        )
    if verdict == "neutral":
        return warning(
            "spf",
            f"{found} says nothing about other servers (?all or no all)",
            "end the record with -all or ~all",
        )
    if unjudged:
        found += f" ({'; '.join(unjudged)}: make sure SPF names the address it sends from)"
    return ok("spf", found)


def _relays_refused(
    lookups: Dns, settings: Settings, record: str
) -> tuple[list[str], list[str]] | Unanswered:
    """The relays (host and address) the record does not authorise, and those it cannot judge.

    A relay on this machine, or a name that does not resolve, cannot be judged:
    the address receivers see is not known here.
    """
    import spf as pyspf

    refused, unjudged = [], []
    for relay in settings.relays:
        host = urlsplit(relay.url).hostname or ""
        if is_loopback(host):
            unjudged.append(f"the relay {host} is on this machine")
            continue
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = lookups.addresses(host)
            except Unanswered as exc:
                return exc
        if not addresses:
            unjudged.append(f"the relay {host} does not resolve")
        for address in addresses:
            query = pyspf.query(i=address, s=ascii_address(settings.envelope_address), h=host)
            verdict, _, _ = query.check(spf=record)
            if verdict == "temperror":
                return Unanswered(lookups.failure or f"no answer while checking {host}")
            if verdict != "pass":
                refused.append(f"the relay {host} ({address}: {verdict})")
    return refused, unjudged


def _tags(text: str) -> dict[str, str] | None:
    """A DKIM or DMARC tag list (RFC 6376 §3.2) as a dict, None when it is malformed."""
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        parsed = parse_tag_value(text.encode("utf-8"))
    except InvalidTagValueList:
        return None
    return {k.decode().lower(): v.decode("utf-8", "replace") for k, v in parsed.items()}


def dmarc(lookups: Dns, settings: Settings) -> Check:
    """The From domain's DMARC record (or its parent's, RFC 7489 §6.6.3) and its policy."""
    domain = ascii_domain(settings.sending_domain)
    fix = (
        f"publish a TXT record at _dmarc.{domain} such as "
        f"'v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}'"
    )
    labels = domain.split(".")
    try:
        for start in range(max(len(labels) - 1, 1)):
            where = "_dmarc." + ".".join(labels[start:])
            records = [t for t in lookups.txt(where) if t.strip().lower().startswith("v=dmarc1")]
            if records:
                break
    except Unanswered as exc:
        return unanswered("dmarc", exc)
    if not records:
        return problem("dmarc", f"no DMARC record at _dmarc.{domain}", fix)
    found = f"{where}: {records[0]}"
    if len(records) > 1:
        return problem(
            "dmarc", f"{where} has {len(records)} DMARC records: receivers ignore them all", fix
        )
    tags = _tags(records[0]) or {}
    inherited = where != f"_dmarc.{domain}"
    policy = (tags.get("sp") if inherited else None) or tags.get("p", "")
    policy = policy.lower()
    if policy not in ("none", "quarantine", "reject"):
        return problem("dmarc", f"{found} (no valid p= policy)", fix)
    if policy == "none":
        return warning(
            "dmarc",
            f"{found} (policy none: receivers only report; mail forged in your name still "
            f"arrives, and Gmail and Yahoo look for more)",
            "once the reports show your mail passing, raise it to p=quarantine, then p=reject",
        )
    return ok("dmarc", f"{found} (policy {policy})")


def dkim(lookups: Dns, settings: Settings) -> list[Check]:
    """Each configured key's selector record: present, and publishing that key."""
    from mailer.content import dkimkey

    if not settings.dkim_key_files:
        return [
            warning(
                "dkim",
                "no dkim_key_file: mail goes out unsigned, and DMARC rests on SPF alone",
                "run 'rekindle-mail dkim keygen', publish the record it prints, set dkim_key_file",
            )
        ]
    checks = []
    for path, selector in zip(settings.dkim_key_files, settings.dkim_selectors, strict=True):
        try:
            key = dkimkey.load(path, selector, settings.signing_domain)
        except ConfigError as exc:
            checks.append(problem("dkim", str(exc), "fix dkim_key_file (see the detail)"))
            continue
        publish = f"publish a TXT record at {key.dns_name}: {key.txt_record}"
        try:
            records = [t for t in lookups.txt(key.dns_name) if "p=" in t]
        except Unanswered as exc:
            checks.append(unanswered("dkim", exc))
            continue
        if not records:
            checks.append(problem("dkim", f"no DKIM record at {key.dns_name}", publish))
            continue
        if len(records) > 1:
            checks.append(
                problem("dkim", f"{key.dns_name} has {len(records)} DKIM records", publish)
            )
            continue
        checks.append(_dkim_record(key, str(path), records[0], publish))
    return checks


def _dkim_record(key: DkimKey, path: str, record: str, publish: str) -> Check:
    """The verdict on the selector's record, as a verifier reads it (README, "### doctor"):
    tag names and the values of v= and k= are case-sensitive, as dkimpy treats them."""
    from dkim.util import InvalidTagValueList, parse_tag_value

    name = key.dns_name
    try:
        parsed = parse_tag_value(record.encode("utf-8"))
    except InvalidTagValueList as exc:
        return problem("dkim", f"{name} is not a valid tag list ({exc}): {record}", publish)
    tags = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in parsed.items()}
    services = {part.strip() for part in tags.get("s", "*").split(":")}
    hashes = {part.strip() for part in tags.get("h", "sha256").split(":")}
    kind = tags.get("k", "rsa")
    published = "".join(tags.get("p", "").split())
    refused = None  # why a verifier discards the record, or finds another key there
    if "v" in tags and tags["v"] != "DKIM1":
        refused = f"{name}: v={tags['v']}: receivers discard a record whose v= is not DKIM1"
    elif "v" in tags and next(iter(tags)) != "v":
        refused = f"{name}: v= is not the first tag: receivers discard the record"
    elif kind not in KEY_TYPES:
        refused = f"{name}: k={kind}: receivers know only k=rsa and k=ed25519 (lower case)"
    elif not services & {"*", "email"}:
        refused = f"{name}: s={tags['s']}: the key is not for email (s= absent, * or email)"
    elif "sha256" not in hashes:
        refused = f"{name}: h={tags['h']}: the key refuses sha256, which our signatures use"
    elif not published:
        refused = f"{name} publishes no key (empty p=: revoked)"
    elif published != key.public_b64 or kind != key.kind:
        refused = f"{name} publishes a key (k={kind}) that is not the one in {path}"
    if refused:
        return problem("dkim", refused, publish)
    found = f"{name}: k={kind}, p= matches {path}"
    if len(services) > 1:  # RFC 6376 allows a list; dkimpy compares s= as one value
        return warning(
            "dkim",
            f"{found}, but s={tags['s']}: some receivers (dkimpy) read s= as one value "
            f"and discard the key",
            f"publish the record without s= (or with s=email): {key.txt_record}",
        )
    if "y" in {flag.strip() for flag in tags.get("t", "").split(":")}:
        return warning(
            "dkim",
            f"{found}, but t=y (testing): receivers may treat its signatures as absent",
            f"once mail verifies, publish the record without t=y: {key.txt_record}",
        )
    return ok("dkim", found)


def bounce_mx(lookups: Dns, settings: Settings) -> Check:
    """The bounce domain takes mail: an MX (not a null MX, RFC 7505), or else an address."""
    domain = domain_of(settings.envelope_address)
    fix = (
        f"publish an MX for {domain} pointing at the server that runs 'rekindle-mail inbound' "
        f"(README, Bounces and complaints)"
    )
    try:
        exchanges = lookups.query(domain, "MX")
        if exchanges:
            names = [f"{r.preference} {r.exchange.to_text(True) or '.'}" for r in exchanges]
            if all(r.exchange.to_text(True) in ("", ".") for r in exchanges):
                return problem("bounce-mx", f"{domain}: null MX: it takes no mail", fix)
            return ok("bounce-mx", f"{domain}: MX {', '.join(sorted(names))}")
        addresses = lookups.addresses(domain)
    except Unanswered as exc:
        return unanswered("bounce-mx", exc)
    if addresses:
        return ok("bounce-mx", f"{domain}: no MX, mail goes to its address {addresses[0]}")
    return problem(
        "bounce-mx",
        f"{domain} has neither MX nor A: bounces to {settings.envelope_address} cannot arrive",
        fix,
    )
