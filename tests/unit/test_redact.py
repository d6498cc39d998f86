"""Redaction: secrets are masked in URLs, free text and log events."""

from __future__ import annotations

import pytest

from biomem.resilience.redact import RedactSecrets, mask_url, redact_text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("postgresql://u:pw@h:5432/d", "postgresql://u:***@h:5432/d", id="password"),
        pytest.param("postgresql://u@h/d", "postgresql://u@h/d", id="no-password"),
        pytest.param("http://h/x?token=abc&a=1", "http://h/x?token=***&a=1", id="query-token"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    """Passwords and secret query parameters are masked; the rest stays readable."""
    assert mask_url(url) == expected


def test_mask_url_hides_webhook_path() -> None:
    """Webhook URLs carry their token in the path: only scheme and host stay."""
    assert (
        mask_url("https://hooks.example/T0/B0/xyz", hide_path=True) == "https://hooks.example/***"
    )


def test_redact_text_masks_embedded_credentials() -> None:
    """URLs, key=value pairs and bearer tokens inside free text are masked."""
    text = (
        'connection to "postgresql://app:s3cr3t@db/x" failed; password=s3cr3t '
        "Authorization: Bearer abc.def.ghi"
    )
    out = redact_text(text)
    assert "s3cr3t" not in out and "abc.def.ghi" not in out
    assert "postgresql://app:***@db/x" in out


def test_processor_masks_secret_keys_and_nested_values() -> None:
    """The structlog processor masks secret-named keys, nested dicts and URLs in values."""
    event = {
        "event": "connect",
        "password": "pw1",
        "api_key": "k-123",
        "tokens": 42,
        "nested": {"secret": "s-1", "url": "postgresql://u:pw2@h/d"},
        "items": ["Bearer tok-9"],
    }
    out = RedactSecrets()(None, "info", event)
    flat = repr(out)
    for secret in ("pw1", "k-123", "s-1", "pw2", "tok-9"):
        assert secret not in flat
    assert out["tokens"] == 42
