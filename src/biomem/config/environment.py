"""Settings read from the environment: DESIGN.md's table, one field per variable.

Each field's ``description`` is what the variable accepts, in words; the
loader quotes it when a value is rejected.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["UNIT_SECONDS", "EnvSettings", "LogFormat", "LogLevel", "duration_seconds"]

# Seconds per duration suffix, for environment durations and TOML schedules alike.
UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"5m"``, ``"4h"`` or ``"1d"``; ValueError otherwise."""
    text = text.strip().lower()
    if text and text[-1] in UNIT_SECONDS:
        return float(text[:-1]) * UNIT_SECONDS[text[-1]]
    return float(text)


class LogFormat(StrEnum):
    """How log lines are rendered."""

    AUTO = "auto"  # console on a TTY, else JSON
    JSON = "json"  # one JSON object a line
    CONSOLE = "console"  # coloured, for people


class LogLevel(StrEnum):
    """Minimum level of the log lines written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    if parts.port is not None and not 0 < parts.port < 65536:
        raise ValueError("port out of range")
    return value.rstrip("/") if parts.path in ("", "/") else value


HttpURL = Annotated[str, AfterValidator(_http_url)]


class EnvSettings(BaseSettings):
    """Every environment variable biomem reads, validated once at start-up."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        populate_by_name=False,
    )

    duckdb_path: Path = Field(
        default=Path("./data/biomem.duckdb"),
        alias="DUCKDB_PATH",
        description="a file path for the embedded DuckDB store",
    )
    postgres_db_url: SecretStr | None = Field(
        default=None,
        alias="POSTGRES_DB_URL",
        description=(
            "a PostgreSQL URL such as postgresql://user:password@host:5432/dbname, or unset"
        ),
    )
    ollama_url: HttpURL = Field(
        default="http://localhost:11434",
        alias="OLLAMA_URL",
        description="an http(s) URL with a host, such as http://localhost:11434",
    )
    ollama_model: str = Field(
        default="llama3.2", alias="OLLAMA_MODEL", min_length=1, description="a model name"
    )
    ollama_embedding_model: str = Field(
        default="nomic-embed-text",
        alias="OLLAMA_EMBEDDING_MODEL",
        min_length=1,
        description="an embedding model name",
    )
    ollama_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        alias="OLLAMA_TIMEOUT_SECONDS",
        description="a number of seconds above 0 and at most 3600",
    )
    ollama_max_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        alias="OLLAMA_MAX_CONCURRENCY",
        description="a whole number from 1 to 256",
    )
    health_http_endpoints: bool = Field(
        default=True, alias="HEALTH_HTTP_ENDPOINTS", description="true or false"
    )
    health_http_host: str = Field(
        default="127.0.0.1",
        alias="HEALTH_HTTP_HOST",
        description="an IP address or host name to bind, such as 127.0.0.1 or 0.0.0.0",
    )
    health_http_port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        alias="HEALTH_HTTP_PORT",
        description="a TCP port from 1 to 65535",
    )
    health_api_token: SecretStr | None = Field(
        default=None,
        alias="HEALTH_API_TOKEN",
        min_length=16,
        description="a token of at least 16 characters, or unset",
    )
    health_continuous_monitoring: bool = Field(
        default=True, alias="HEALTH_CONTINUOUS_MONITORING", description="true or false"
    )
    health_check_interval_seconds: float = Field(
        default=15.0,
        ge=1,
        le=3600,
        alias="HEALTH_CHECK_INTERVAL_SECONDS",
        description="a number of seconds from 1 to 3600",
    )
    health_alert_webhook_url: HttpURL | None = Field(
        default=None,
        alias="HEALTH_ALERT_WEBHOOK_URL",
        description="an http(s) URL with a host, or unset",
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None,
        alias="ALERT_WEBHOOK_SECRET",
        min_length=16,
        description="a secret of at least 16 characters, or unset",
    )
    alert_group_wait: str = Field(
        default="10s",
        alias="ALERT_GROUP_WAIT",
        description='a duration such as "10s", "1m" (or seconds)',
    )
    alert_group_interval: str = Field(
        default="5m",
        alias="ALERT_GROUP_INTERVAL",
        description='a duration such as "30s", "5m" (wait before re-notifying a changed group)',
    )
    alert_repeat_interval: str = Field(
        default="4h",
        alias="ALERT_REPEAT_INTERVAL",
        description='a duration such as "30m", "4h", "1d" (or seconds)',
    )
    alert_resolve_settle: str = Field(
        default="30s",
        alias="ALERT_RESOLVE_SETTLE",
        description='a duration such as "30s" (how long a resolution is held against flapping)',
    )
    alert_restore_grace: str | None = Field(
        default=None,
        alias="ALERT_RESTORE_GRACE",
        description='a duration such as "1m" (how long an alert told firing before a restart '
        "waits to fire again before it is resolved), or unset",
    )
    automated_recovery_enabled: bool = Field(
        default=True, alias="AUTOMATED_RECOVERY_ENABLED", description="true or false"
    )
    recovery_dry_run: bool = Field(
        default=False, alias="RECOVERY_DRY_RUN", description="true or false"
    )
    biomem_config_file: Path | None = Field(
        default=None,
        alias="BIOMEM_CONFIG_FILE",
        description="the path of a readable TOML file, or unset",
    )
    biomem_log_format: LogFormat = Field(
        default=LogFormat.AUTO,
        alias="BIOMEM_LOG_FORMAT",
        description="one of auto, json, console",
    )
    biomem_log_level: LogLevel = Field(
        default=LogLevel.INFO,
        alias="BIOMEM_LOG_LEVEL",
        description="one of debug, info, warning, error, critical",
    )

    biomem_log_file: Path | None = Field(
        default=None,
        alias="BIOMEM_LOG_FILE",
        description="a file path for a copy of the log as JSON lines, or unset",
    )

    @field_validator("biomem_log_format", "biomem_log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "alert_group_wait",
        "alert_group_interval",
        "alert_repeat_interval",
        "alert_resolve_settle",
        "alert_restore_grace",
    )
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        try:
            seconds = duration_seconds(text)
        except ValueError:
            raise ValueError("not a duration") from None
        if seconds <= 0:
            raise ValueError("not a positive duration")
        return text

    @field_validator("postgres_db_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Local import: psycopg is heavy and only this check needs it here.
        from psycopg.conninfo import conninfo_to_dict

        raw = value.get_secret_value()
        parts = urlsplit(raw)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("not a postgresql:// URL")
        try:
            if parts.port is not None and not 0 < parts.port < 65536:
                raise ValueError("port out of range")
            conninfo_to_dict(raw)
        except Exception as exc:
            # The message of the parser may quote the URL: never pass it on.
            raise ValueError("malformed URL") from exc
        return value

    @field_validator("health_http_host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.rstrip(".").split(".")
        if not value or any(
            not label or len(label) > 63 or not all(c.isalnum() or c == "-" for c in label)
            for label in labels
        ):
            raise ValueError("not an IP address or host name")
        return value
