"""The settings tree every component receives: frozen, read once at the edge."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from biomem.config.environment import LogFormat, LogLevel
from biomem.config.filecfg import (
    IngestSettings,
    PipelineSettings,
    ResilienceSettings,
    ScheduleSettings,
    ThresholdSettings,
)
from biomem.config.recovery import RecoveryFileSettings

__all__ = [
    "AlertReceiver",
    "AlertSettings",
    "HealthSettings",
    "LoggingSettings",
    "OllamaSettings",
    "PostgresSettings",
    "RecoverySettings",
    "Settings",
    "StoreSettings",
]


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreSettings(_Group):
    path: Path


class PostgresSettings(_Group):
    url: SecretStr | None

    @property
    def configured(self) -> bool:
        return self.url is not None


class OllamaSettings(_Group):
    url: str
    model: str
    embedding_model: str
    timeout_seconds: float
    max_concurrency: int


class HealthSettings(_Group):
    http_endpoints: bool
    host: str
    port: int
    api_token: SecretStr | None
    continuous_monitoring: bool
    check_interval_seconds: float
    thresholds: ThresholdSettings


class AlertReceiver(_Group):
    """A webhook receiver from ``[[alerts.receivers]]``, its secret read from the environment."""

    name: str
    url: str
    secret: SecretStr | None
    matchers: dict[str, str]
    timeout_seconds: float
    send_resolved: bool


class AlertSettings(_Group):
    webhook_url: str | None
    webhook_secret: SecretStr | None
    group_wait_seconds: float
    repeat_interval_seconds: float
    resolve_settle_seconds: float
    group_interval_seconds: float = 300.0
    # After a restart, how long an alert receivers were told is firing waits to be
    # fired again before it is resolved; None: max(2 x check interval, group wait).
    restore_grace_seconds: float | None = None
    receivers: list[AlertReceiver] = []


class RecoverySettings(RecoveryFileSettings):
    """The [recovery] section (knobs and rules) and the two switches from the environment."""

    enabled: bool
    dry_run: bool


class LoggingSettings(_Group):
    format: LogFormat
    level: LogLevel
    file: Path | None = None  # BIOMEM_LOG_FILE: JSON lines also go there (rotated by recovery)


class Settings(_Group):
    """Everything biomem is configured with."""

    config_file: Path | None
    store: StoreSettings
    postgres: PostgresSettings
    ollama: OllamaSettings
    health: HealthSettings
    alerts: AlertSettings
    recovery: RecoverySettings
    logging: LoggingSettings
    ingest: IngestSettings
    schedules: ScheduleSettings
    pipeline: PipelineSettings
    resilience: ResilienceSettings
