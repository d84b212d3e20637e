"""Settings as people may see them: each key, its value and its source, with secrets masked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from mailer.config import KEYS, SECRET_KEYS, URL_KEYS, Settings, gather, load_settings
from mailer.masking import MASK, mask_url, url_passwords


def shown(
    config_path: str | Path | None, env: Mapping[str, str]
) -> list[tuple[str, str | None, str]]:
    """(key, value to show, where it came from) for every key; no secret is ever in the value."""
    settings = load_settings(config_path, env)
    raw, _, sources = gather(config_path, env)
    rows = []
    for key in KEYS:
        if key.endswith("_file"):
            value = raw.get(key)
            rows.append((key, str(value) if value else None, sources.get(key, "default")))
            continue
        rows.append((key, _value(settings, key), sources.get(key, "default")))
    return rows


def _value(settings: Settings, key: str) -> str | None:
    value = getattr(settings, "from_address" if key == "from" else key, None)
    if value is None or value == "":
        return None
    if key in SECRET_KEYS:
        return MASK
    if key in URL_KEYS:
        return mask_url(str(value))
    return str(value)


def secret_values(settings: Settings | None, env: Mapping[str, str]) -> set[str]:
    """Every secret this run knows, to be blotted out of anything shown (tracebacks included)."""
    found: set[str] = set()
    candidates: Iterable[object] = ()
    if settings is not None:
        candidates = [getattr(settings, key, None) for key in SECRET_KEYS] + [
            settings.smtp_url,
            settings.database_url,
        ]
    from_env = [env.get("REKINDLE_" + key.upper()) for key in (*SECRET_KEYS, *URL_KEYS)]
    for value in [*candidates, *from_env]:
        if not isinstance(value, str) or not value:
            continue
        if "://" in value:
            found.update(url_passwords(value))
        else:
            found.add(value)
    return {value for value in found if len(value) >= 4}  # shorter ones would garble text


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
