"""Settings, looked up in one documented order: environment, config file, default."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from mailer.content.dkimkey import check_selector
from mailer.errors import ConfigError
from mailer.masking import mask_url, url_passwords
from mailer.timing import SendWindow, Windows
from mailer.transport.relays import Relay, parse_relays
from subscribers.errors import InvalidInput
from subscribers.validation import check_timezone

APP_NAME = "rekindle-mail"
CONFIG_FILE = "rekindle.toml"
ENV_PREFIX = "REKINDLE_"
DEFAULT_BASE_URL = "http://localhost:8080"
EVENING = SendWindow.parse("18:00-21:00")  # evening_window's default
_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # one label of an ASCII domain name

# Every key a config file may hold; each can be overridden by REKINDLE_<KEY>.
KEYS = (
    "database_url",
    "smtp_url",
    "smtp_password",
    "tls_ca_file",
    "outbox",
    "from",
    "reply_to",
    "base_url",
    "secret_key",
    "postal_address",
    "timezone",
    "send_window",
    "evening_window",
    "rate_limit",
    "claim_lease",
    "smtp_connections",
    "list_id",
    "unsubscribe_address",
    "help_url",
    "privacy_url",
    "course_dir",
    "proxy_hops",
    "web_connection_limit",
    "web_channel_timeout",
    "imap_password",
    "smtp_password_file",
    "secret_key_file",
    "imap_password_file",
    "bounce_address",
    "imap_quarantine",
    "dkim_key_file",
    "dkim_selector",
    "dkim_domain",
    "dns_server",
)
SECRET_KEYS = frozenset({"smtp_password", "secret_key", "imap_password"})
URL_KEYS = ("smtp_url", "database_url")  # may carry a password in user:password@


def data_dir() -> Path:
    """The per-user data directory that holds the default database and outbox."""
    import platformdirs  # a few hundredths of a second: only when no database_url is set

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Validated configuration for one command run."""

    database_url: str
    outbox: Path
    from_address: str
    base_url: str
    timezone: str
    send_window: SendWindow
    evening_window: SendWindow = EVENING  # for readers who chose evening
    smtp_url: str | None = None
    relays: tuple[Relay, ...] = ()  # smtp_url's relays, in the order they are tried
    smtp_password: str | None = field(default=None, repr=False)
    tls_ca_file: Path | None = None
    reply_to: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    postal_address: str | None = None
    rate_limit: float = 0.0
    smtp_connections: int = 1  # SMTP connections a send run uses at once
    claim_lease: float = 900.0  # seconds a run holds a claimed message (longer than any SMTP wait)
    list_id: str | None = None
    unsubscribe_address: str | None = None
    help_url: str | None = None
    privacy_url: str | None = None  # the sign-up form links here (default: the built-in /privacy)
    course_dir: Path | None = None
    proxy_hops: int = 0
    web_connection_limit: int = 100  # connections `serve` holds open at once (waitress)
    web_channel_timeout: int = 120  # seconds `serve` keeps an idle connection (waitress)
    imap_password: str | None = field(default=None, repr=False)
    bounce_address: str | None = None  # envelope sender base (VERP); default: `from`
    imap_quarantine: str | None = None  # IMAP folder for messages inbound cannot handle
    # DKIM (README, "Getting into the inbox"): one signature per key file, each with its
    # selector (the same position in dkim_selector); dkim_domain defaults to `from`'s.
    dkim_key_files: tuple[Path, ...] = ()
    dkim_selectors: tuple[str, ...] = ()
    dkim_domain: str | None = None
    dns_server: str | None = None  # "host[:port]" for doctor; default: the system's resolver
    config_file: Path | None = None

    @property
    def windows(self) -> Windows:
        """The windows a subscriber may choose: morning (`send_window`) and evening."""
        return Windows(self.send_window, self.evening_window)

    @property
    def sender_email(self) -> str:
        """The bare address of `from`."""
        return parseaddr(self.from_address)[1]

    @property
    def sending_domain(self) -> str:
        """The domain of `from`, used in Message-IDs and the List-Id."""
        return self.sender_email.rpartition("@")[2].lower()

    @property
    def envelope_address(self) -> str:
        """The bare address bounces go to: `bounce_address`, else `from`."""
        return self.bounce_address or self.sender_email

    @property
    def signing_domain(self) -> str:
        """The d= of DKIM signatures: `dkim_domain`, else the domain of `from`, as an
        A-label (README, "### DKIM": exämple.org signs as xn--exmple-cua.org)."""
        return a_label(self.dkim_domain or self.sending_domain)

    @property
    def database_display(self) -> str:
        """The database URL with any password masked, for people to read."""
        return mask_url(self.database_url)

    @property
    def list_id_header(self) -> str:
        """The List-Id header value (RFC 2919)."""
        return self.list_id or f"Rekindle <rekindle.{self.sending_domain}>"


def a_label(domain: str) -> str:
    """`domain` in its ASCII form, lower case: each non-ASCII label as its IDNA A-label
    (`xn--`; IDNA 2008 with the UTS #46 mapping, through the idna package), which is how
    DNS and DKIM name it. A name that is no valid IDN raises ConfigError."""
    domain = domain.rstrip(".")
    if domain.isascii():
        return domain.lower()
    import idna  # only for a non-ASCII name

    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ConfigError(
            f"{domain!r} is not a valid internationalised domain name ({exc})"
        ) from None


def load_settings(
    config_path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from defaults, the config file and REKINDLE_* variables."""
    raw, path, _ = gather(config_path, env)
    return _validate(raw, path)


def gather(
    config_path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[dict[str, object], Path | None, dict[str, str]]:
    """The raw values, the config file read, and where each value came from."""
    env = os.environ if env is None else env
    raw, path = _read_file(config_path, env)
    sources = dict.fromkeys(raw, str(path))
    for key in KEYS:
        variable = ENV_PREFIX + key.upper()
        value = env.get(variable)
        if value is not None and value != "":
            raw[key] = value
            sources[key] = variable
    for key in sorted(SECRET_KEYS):
        if raw.get(f"{key}_file"):
            if raw.get(key):
                raise ConfigError(f"set {key} or {key}_file, not both")
            raw[key] = _secret_file(raw, f"{key}_file")
            sources[key] = f"{sources[key + '_file']} ({key}_file)"
    return raw, path, sources


def _secret_file(raw: Mapping[str, object], key: str) -> str:
    """Read a secret from a file (a Docker or systemd credential) that only its owner may read."""
    name = _text(raw, key) or ""
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode
        if mode & 0o004:
            raise ConfigError(
                f"{key} {name!r} can be read by every user on this machine: chmod o-r it"
            )
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {key} {name!r}: {exc.strerror or exc}") from None
    if not value or any(ch in value for ch in "\r\n\x00"):
        raise ConfigError(f"{key} {name!r} must hold the secret on one line")
    return value


def _read_file(
    config_path: str | Path | None, env: Mapping[str, str]
) -> tuple[dict[str, object], Path | None]:
    explicit = config_path or env.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit) if explicit else Path(CONFIG_FILE)
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return {}, None
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path}; known keys: {', '.join(KEYS)}")
    _check_private(path, data)
    return dict(data), path


def _check_private(path: Path, data: Mapping[str, object]) -> None:
    """A config file that holds a secret must not be readable by every user.

    A URL key holds one when any of its URLs carries a password: one URL,
    several in a string, or a TOML array of them.
    """
    held = sorted(key for key in SECRET_KEYS if data.get(key))
    held += [key for key in URL_KEYS if url_passwords(data.get(key))]
    if held and path.stat().st_mode & 0o004:
        raise ConfigError(
            f"config file {str(path)!r} holds {held[0]} but every user on this machine can "
            f"read it: chmod 600 {path}, or set REKINDLE_{held[0].upper()} instead"
        )


def _text(raw: Mapping[str, object], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    value = value.strip()
    if any(ch in value for ch in "\r\n\x00"):
        raise ConfigError(f"{key} must be on one line")
    return value or None


def _address(raw: Mapping[str, object], key: str, default: str | None = None) -> str | None:
    value = _text(raw, key) or default
    if value is None:
        return None
    name, addr = parseaddr(value)
    # Operators may send from a local-only domain (rekindle@localhost): check the
    # shape only; subscriber addresses get the strict check.
    if not _ADDRESS.match(addr):
        raise ConfigError(
            f"{key} {value!r} is not an email address like 'Rekindle <hello@example.org>'"
        )
    return f"{name} <{addr}>" if name else addr


N = TypeVar("N", int, float)


def _number(
    raw: Mapping[str, object],
    key: str,
    kind: type[N],
    default: N,
    unit: str,
    *,
    low: N,
    high: N | None = None,
) -> N:
    """`key` as a number of `kind` within [low, high], or a ConfigError saying what is wanted."""
    value = raw.get(key, default)
    try:
        number = kind(value)  # type: ignore[call-overload,arg-type]
    except (TypeError, ValueError):
        whole = "a whole" if kind is int else "a"
        raise ConfigError(f"{key} {value!r} must be {whole} number of {unit}") from None
    if number < low or (high is not None and number > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{key} must be {span} (the default is {default})")
    return number


def _web_url(raw: Mapping[str, object], key: str) -> str | None:
    """An optional http(s) URL setting."""
    value = _text(raw, key)
    if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
        raise ConfigError(f"{key} {value!r} must be an http(s) URL")
    return value


def _list(raw: Mapping[str, object], key: str) -> tuple[str, ...]:
    """A setting that may name several values: a TOML array, or a string split at commas."""
    value = raw.get(key)
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = _text({key: value}, key) or ""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _dkim(raw: Mapping[str, object]) -> tuple[tuple[Path, ...], tuple[str, ...], str | None]:
    """The DKIM key files, a selector for each, and the signing domain."""
    files = tuple(Path(name).expanduser() for name in _list(raw, "dkim_key_file"))
    selectors = _list(raw, "dkim_selector") or (("rekindle",) if len(files) == 1 else ())
    for selector in selectors:
        check_selector(selector)
    if files and len(selectors) != len(files):
        raise ConfigError(
            f"dkim_selector must name one selector for each of the {len(files)} dkim_key_file "
            f"keys, in the same order"
        )
    names = [s.lower() for s in selectors]  # DNS names: Rk and rk are one selector
    repeated = sorted({s for s in names if names.count(s) > 1})
    if files and repeated:
        raise ConfigError(
            f"dkim_selector names {repeated[0]!r} twice: each key needs its own selector, "
            f"since a selector publishes one key"
        )
    given = _text(raw, "dkim_domain")
    if not given:
        return files, selectors if files else (), None
    try:
        domain = a_label(given)  # exämple.org is xn--exmple-cua.org
        if "xn--" in domain:  # an A-label must decode (idna is there: a_label imported it)
            import idna

            idna.decode(domain)
    except (ConfigError, UnicodeError):  # idna.IDNAError is a UnicodeError
        domain = ""
    if not re.fullmatch(rf"{_LABEL}(?:\.{_LABEL})+", domain):
        raise ConfigError(f"dkim_domain {given!r} must be a domain name like example.org")
    return files, selectors if files else (), domain


def _dns_server(raw: Mapping[str, object]) -> str | None:
    """`dns_server` as host[:port] (an IPv6 address in brackets when it has a port)."""
    value = _text(raw, "dns_server")
    if value is None:
        return None
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"dns_server {value!r} must be host[:port], like 127.0.0.1:53")
    return value


def _validate(raw: Mapping[str, object], path: Path | None) -> Settings:
    base = data_dir()
    try:
        timezone = check_timezone(_text(raw, "timezone") or "UTC")
    except InvalidInput as exc:
        raise ConfigError(f"timezone: {exc}") from None
    given = raw.get("smtp_url")
    if isinstance(given, list):
        given = ", ".join(str(v) for v in given)
    smtp_url = _text({"smtp_url": given}, "smtp_url")
    relays = parse_relays(smtp_url) if smtp_url else ()
    base_url = (_text(raw, "base_url") or DEFAULT_BASE_URL).rstrip("/")
    if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
        raise ConfigError(f"base_url {base_url!r} must be an http(s) URL")
    rate_limit = _number(raw, "rate_limit", float, 0, "messages per second", low=0)
    claim_lease = _number(raw, "claim_lease", float, 900, "seconds", low=1)
    smtp_connections = _number(raw, "smtp_connections", int, 1, "connections", low=1, high=32)
    proxy_hops = _number(raw, "proxy_hops", int, 0, "proxies", low=0)
    web_connection_limit = _number(
        raw, "web_connection_limit", int, 100, "connections", low=10, high=10_000
    )
    web_channel_timeout = _number(
        raw, "web_channel_timeout", int, 120, "seconds", low=1, high=86_400
    )
    ca = _text(raw, "tls_ca_file")
    course_dir = _text(raw, "course_dir")
    unsubscribe = _address(raw, "unsubscribe_address")
    bounce = _address(raw, "bounce_address")
    dkim_key_files, dkim_selectors, dkim_domain = _dkim(raw)
    from_address = _address(raw, "from", "Rekindle <rekindle@localhost>") or ""
    if dkim_key_files and not dkim_domain:  # d= is from's domain: it must have an A-label
        try:
            a_label(parseaddr(from_address)[1].rpartition("@")[2])
        except ConfigError as exc:
            raise ConfigError(f"from: {exc}") from None
    return Settings(
        database_url=_text(raw, "database_url") or f"sqlite:///{base / 'rekindle.db'}",
        outbox=Path(_text(raw, "outbox") or base / "outbox").expanduser(),
        from_address=from_address,
        base_url=base_url,
        timezone=timezone,
        send_window=SendWindow.parse(_text(raw, "send_window") or "09:00-20:00"),
        evening_window=SendWindow.parse(
            _text(raw, "evening_window") or str(EVENING), "evening_window"
        ),
        smtp_url=smtp_url,
        relays=relays,
        smtp_password=_text(raw, "smtp_password"),
        tls_ca_file=Path(ca).expanduser() if ca else None,
        reply_to=_address(raw, "reply_to"),
        secret_key=_text(raw, "secret_key"),
        postal_address=_text(raw, "postal_address"),
        rate_limit=rate_limit,
        claim_lease=claim_lease,
        smtp_connections=smtp_connections,
        list_id=_text(raw, "list_id"),
        unsubscribe_address=parseaddr(unsubscribe)[1] if unsubscribe else None,
        help_url=_text(raw, "help_url"),
        privacy_url=_web_url(raw, "privacy_url"),
        course_dir=Path(course_dir).expanduser() if course_dir else None,
        proxy_hops=proxy_hops,
        web_connection_limit=web_connection_limit,
        web_channel_timeout=web_channel_timeout,
        imap_password=_text(raw, "imap_password"),
        bounce_address=parseaddr(bounce)[1] if bounce else None,
        imap_quarantine=_text(raw, "imap_quarantine"),
        dkim_key_files=dkim_key_files,
        dkim_selectors=dkim_selectors,
        dkim_domain=dkim_domain,
        dns_server=_dns_server(raw),
        config_file=path,
    )
