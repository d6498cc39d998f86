"""Load the settings tree from the environment and the TOML file.

Any invalid value raises :class:`ConfigurationError` naming the variable (or
``file [section].key``) and what it accepts, without echoing secrets.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from biomem.config.environment import EnvSettings, duration_seconds
from biomem.config.filecfg import AlertFileSettings, FileSettings
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
from biomem.resilience.errors import ConfigurationError
from biomem.resilience.redact import mask_url

__all__ = ["load_file_settings", "load_settings"]

# Variables whose values are never echoed in an error, even masked.
_SECRET_VARIABLES = {"POSTGRES_DB_URL", "HEALTH_API_TOKEN", "ALERT_WEBHOOK_SECRET"}
_URL_VARIABLES = {"OLLAMA_URL", "HEALTH_ALERT_WEBHOOK_URL"}


def load_settings() -> Settings:
    """Read the environment (once) and the TOML file it names; validate both."""
    try:
        env = EnvSettings()
    except ValidationError as exc:
        raise _env_error(exc.errors()[0]) from None
    file = load_file_settings(env.biomem_config_file)
    return Settings(
        config_file=env.biomem_config_file,
        store=StoreSettings(path=env.duckdb_path),
        postgres=PostgresSettings(url=env.postgres_db_url),
        ollama=OllamaSettings(
            url=env.ollama_url,
            model=env.ollama_model,
            embedding_model=env.ollama_embedding_model,
            timeout_seconds=env.ollama_timeout_seconds,
            max_concurrency=env.ollama_max_concurrency,
        ),
        health=HealthSettings(
            http_endpoints=env.health_http_endpoints,
            host=env.health_http_host,
            port=env.health_http_port,
            api_token=env.health_api_token,
            continuous_monitoring=env.health_continuous_monitoring,
            check_interval_seconds=env.health_check_interval_seconds,
            thresholds=file.thresholds,
        ),
        alerts=AlertSettings(
            webhook_url=env.health_alert_webhook_url,
            webhook_secret=env.alert_webhook_secret,
            group_wait_seconds=duration_seconds(env.alert_group_wait),
            repeat_interval_seconds=duration_seconds(env.alert_repeat_interval),
            resolve_settle_seconds=duration_seconds(env.alert_resolve_settle),
            group_interval_seconds=duration_seconds(env.alert_group_interval),
            restore_grace_seconds=(
                None
                if env.alert_restore_grace is None
                else duration_seconds(env.alert_restore_grace)
            ),
            receivers=_receivers(file.alerts, env.biomem_config_file, os.environ),
        ),
        recovery=RecoverySettings(
            enabled=env.automated_recovery_enabled,
            dry_run=env.recovery_dry_run,
            **dict(file.recovery),
        ),
        logging=LoggingSettings(
            format=env.biomem_log_format, level=env.biomem_log_level, file=env.biomem_log_file
        ),
        ingest=file.ingest,
        schedules=file.schedules,
        pipeline=file.pipeline,
        resilience=file.resilience,
    )


def load_file_settings(path: Path | None) -> FileSettings:
    """Parse and validate the TOML file; defaults when ``path`` is None."""
    if path is None:
        return FileSettings()
    where = f"BIOMEM_CONFIG_FILE ({path})"
    accepts = "the path of a readable TOML file"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            "BIOMEM_CONFIG_FILE", accepts, detail=f"{path} does not exist"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = f"{path} cannot be read ({type(exc).__name__})"
        raise ConfigurationError("BIOMEM_CONFIG_FILE", accepts, detail=detail) from None
    except tomllib.TOMLDecodeError as exc:
        detail = f"{path} is not valid TOML ({exc})"
        raise ConfigurationError("BIOMEM_CONFIG_FILE", accepts, detail=detail) from None
    try:
        return FileSettings.model_validate(data)
    except ValidationError as exc:
        raise _file_error(where, exc.errors()[0]) from None


_MIN_SECRET = 16


def _receivers(
    alerts: AlertFileSettings, path: Path | None, environ: Mapping[str, str]
) -> list[AlertReceiver]:
    """The TOML receivers with their secrets read from the variables they name."""
    out = []
    for index, receiver in enumerate(alerts.receivers):
        secret = None
        if receiver.secret_env is not None:
            value = environ.get(receiver.secret_env, "")
            if len(value) < _MIN_SECRET:
                state = "is not set" if not value else f"has only {len(value)} characters"
                raise ConfigurationError(
                    f"BIOMEM_CONFIG_FILE ({path}) [alerts.receivers][{index}].secret_env",
                    f"the name of an environment variable holding at least {_MIN_SECRET} "
                    "characters",
                    detail=f"{receiver.secret_env} {state}",
                )
            secret = SecretStr(value)
        out.append(
            AlertReceiver(
                name=receiver.name,
                url=receiver.url,
                secret=secret,
                matchers=dict(receiver.matchers),
                timeout_seconds=receiver.timeout_seconds,
                send_resolved=receiver.send_resolved,
            )
        )
    return out


def _env_error(error: ErrorDetails) -> ConfigurationError:
    variable = str(error["loc"][0]) if error["loc"] else "environment"
    field = _field_by_alias(variable)
    accepts = (field.description if field is not None else None) or "a valid value"
    raw = error.get("input")
    if variable in _SECRET_VARIABLES:
        shown = "(value hidden)"
    elif variable in _URL_VARIABLES and isinstance(raw, str):
        shown = repr(mask_url(raw, hide_path=variable == "HEALTH_ALERT_WEBHOOK_URL"))
    else:
        shown = repr(raw) if isinstance(raw, str) else ""
    detail = f"{shown} is not accepted" if shown else "invalid value"
    if error["type"] == "value_error":
        # Our own validators' reasons never quote the value.
        detail += f" ({error['msg'].removeprefix('Value error, ')})"
    return ConfigurationError(variable, accepts, detail=detail)


def _field_by_alias(alias: str) -> Any:
    for field in EnvSettings.model_fields.values():
        if field.alias == alias:
            return field
    return None


def _file_error(where: str, error: ErrorDetails) -> ConfigurationError:
    loc = [part for part in error["loc"] if isinstance(part, str)]
    model, field_desc = _walk(FileSettings, loc)
    section = ".".join(loc[:-1])
    key = f"[{section}].{loc[-1]}" if section else (loc[-1] if loc else "(top level)")
    indexes = "".join(f"[{part}]" for part in error["loc"] if isinstance(part, int))
    if indexes and section:  # which entry of an array of tables: [alerts.receivers][1].url
        key = f"[{section}]{indexes}.{loc[-1]}"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields) if model is not None else "known keys"
        return ConfigurationError(
            f"{where} {key}", f"only the keys {allowed}", detail="unknown key"
        )
    accepts = field_desc or _describe_type(error)
    raw = error.get("input")
    if loc and loc[-1] == "url" and isinstance(raw, str):
        raw = mask_url(raw, hide_path=True)  # webhook URLs carry their token in the path
    shown = (
        f"{raw!r} is not accepted ({error['msg']})" if not isinstance(raw, dict) else error["msg"]
    )
    return ConfigurationError(f"{where} {key}", accepts, detail=shown)


def _walk(model: type[BaseModel], loc: list[str]) -> tuple[type[BaseModel] | None, str | None]:
    """Return the model that holds the last key of ``loc`` and that key's description."""
    current: type[BaseModel] | None = model
    description: str | None = None
    for index, part in enumerate(loc):
        if current is None or part not in current.model_fields:
            return current, None
        field = current.model_fields[part]
        description = field.description
        if index == len(loc) - 1:
            return current, description
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        current = next((t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return current, description


def _describe_type(error: ErrorDetails) -> str:
    kind = error["type"]
    if "int" in kind:
        return "a whole number"
    if "float" in kind:
        return "a number"
    if "bool" in kind:
        return "true or false"
    return "a valid value"
