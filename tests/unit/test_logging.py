"""The logging pipeline: JSON lines, level filter, redaction, injection-safe console."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from biomem.config import LogFormat, LogLevel
from biomem.logging import configure_logging, get_logger


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_lines_with_level_filter() -> None:
    """JSON format writes one object per line and drops events below the level."""
    out = io.StringIO()
    configure_logging(level=LogLevel.INFO, fmt=LogFormat.JSON, stream=out)
    log = get_logger("test")
    log.debug("hidden")
    log.info("shown", count=3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "shown" and record["count"] == 3
    assert record["level"] == "info" and record["module"] == "test" and "timestamp" in record


def test_module_loggers_created_before_configuration_follow_it() -> None:
    """A logger made at import time obeys the configuration made later."""
    early = get_logger("early")
    out = io.StringIO()
    configure_logging(level=LogLevel.WARNING, fmt=LogFormat.JSON, stream=out)
    early.info("dropped")
    early.warning("kept")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["kept"]


def test_secrets_never_reach_the_log() -> None:
    """Secrets in fields and in URLs are masked before rendering."""
    out = io.StringIO()
    configure_logging(fmt=LogFormat.JSON, stream=out)
    get_logger("t").error("boom", password="pw-1", url="postgresql://u:pw-2@h/d")
    text = out.getvalue()
    assert "pw-1" not in text and "pw-2" not in text and "***" in text


def test_stdlib_logging_goes_through_the_same_pipeline() -> None:
    """Standard-library log records are rendered as JSON and redacted too."""
    import logging

    out = io.StringIO()
    configure_logging(fmt=LogFormat.JSON, stream=out)
    logging.getLogger("psycopg.pool").warning("error connecting to postgresql://u:pw-3@h/d")
    record = json.loads(out.getvalue().splitlines()[-1])
    assert "pw-3" not in record["event"] and record["level"] == "warning"


def test_console_format_cannot_forge_lines() -> None:
    """A newline inside a value cannot start a forged log line in console format."""
    out = io.StringIO()
    configure_logging(fmt=LogFormat.CONSOLE, stream=out)
    get_logger("t").info("ingest", content="ok\n2026-01-01 [critical] forged")
    assert len(out.getvalue().strip().splitlines()) == 1
