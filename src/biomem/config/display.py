"""The effective configuration as people may see it: every secret masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from biomem.config.tree import Settings
from biomem.resilience.redact import MASK, mask_url

__all__ = ["effective_config"]


def effective_config(settings: Settings) -> dict[str, Any]:
    """Return the settings as plain data with secrets masked.

    Passwords inside URLs are masked, tokens and secrets are shown only as
    set/unset, and webhook URLs (which carry their token in the path) show
    scheme and host only.
    """
    data: dict[str, Any] = _plain(settings.model_dump())
    pg_url = settings.postgres.url
    data["postgres"]["url"] = mask_url(pg_url.get_secret_value()) if pg_url else None
    hook = settings.alerts.webhook_url
    data["alerts"]["webhook_url"] = mask_url(hook, hide_path=True) if hook else None
    for shown, receiver in zip(data["alerts"]["receivers"], settings.alerts.receivers, strict=True):
        shown["url"] = mask_url(receiver.url, hide_path=True)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    return value
