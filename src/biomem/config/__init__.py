"""Configuration: one settings tree, read once from the environment and a TOML file."""

from __future__ import annotations

from biomem.config.display import effective_config
from biomem.config.environment import EnvSettings, LogFormat, LogLevel
from biomem.config.filecfg import (
    FileSettings,
    IngestSettings,
    PipelineSettings,
    PostgresSourceSettings,
    ScheduleSettings,
    ThresholdSettings,
    parse_schedule,
)
from biomem.config.loader import load_file_settings, load_settings
from biomem.config.tree import (
    AlertReceiver,
    AlertSettings,
    HealthSettings,
    LoggingSettings,
    OllamaSettings,
    PostgresSettings,
    RecoverySettings,
    Settings,
    StoreSettings,
)

__all__ = [
    "AlertReceiver",
    "AlertSettings",
    "EnvSettings",
    "FileSettings",
    "HealthSettings",
    "IngestSettings",
    "LogFormat",
    "LogLevel",
    "LoggingSettings",
    "OllamaSettings",
    "PipelineSettings",
    "PostgresSettings",
    "PostgresSourceSettings",
    "RecoverySettings",
    "ScheduleSettings",
    "Settings",
    "StoreSettings",
    "ThresholdSettings",
    "effective_config",
    "load_file_settings",
    "load_settings",
    "parse_schedule",
]
