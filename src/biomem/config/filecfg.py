"""Settings read from the optional TOML file (BIOMEM_CONFIG_FILE).

Every section forbids unknown keys, so a typo stops the program instead of
being ignored. Field descriptions say what each key accepts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from biomem.config.environment import UNIT_SECONDS, HttpURL
from biomem.config.recovery import RecoveryFileSettings as RecoverySettings
from biomem.config.recovery import RecoveryRule

__all__ = [
    "AlertFileSettings",
    "ConsolidationSettings",
    "DependencyGuard",
    "DreamSettings",
    "DuckDBGuard",
    "FileSettings",
    "HomeostasisSettings",
    "IngestSettings",
    "LongTermSettings",
    "PipelineSettings",
    "PostgresGuard",
    "PostgresSourceSettings",
    "ReceiverSettings",
    "RecoveryRule",
    "RecoverySettings",
    "ResilienceSettings",
    "ScheduleSettings",
    "ShortTermSettings",
    "ThresholdSettings",
    "WorkingMemorySettings",
    "cron_trigger",
    "parse_schedule",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # APScheduler's order


def _cron_days(field: str) -> str:
    """Standard cron day-of-week (0 or 7 = Sunday) as APScheduler day names.

    APScheduler 3 reads a numeric day of week with 0 = Monday; people write
    cron with 0 = Sunday. Numbers, ranges, lists and steps are expanded to
    names so both mean the same day.
    """
    if field == "*" or not any(ch.isdigit() for ch in field):
        return field
    days: set[int] = set()  # cron numbering, 0..6 with Sunday = 0
    for item in field.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            low, high = 0, 6
        elif "-" in body:
            first, last = body.split("-", 1)
            low, high = int(first), int(last)
        else:
            low = high = int(body)
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high and step >= 1):
            raise ValueError(f"day of week {item!r} out of range")
        days.update(day % 7 for day in range(low, high + 1, step))
    # cron day d (0 = Sunday) is APScheduler's (d - 1) mod 7.
    return ",".join(_DAYS[(day - 1) % 7] for day in sorted(days, key=lambda d: (d - 1) % 7))


def cron_trigger(expression: str) -> Any:
    """An APScheduler CronTrigger (UTC) reading ``expression`` as standard cron does."""
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, day_of_week = expression.split()
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_cron_days(day_of_week),
        timezone="UTC",
    )


def parse_schedule(value: str) -> tuple[Literal["interval"], float] | tuple[Literal["cron"], str]:
    """Parse ``"90s"``/``"5m"``/``"6h"``/``"1d"`` or a five-field cron expression."""
    match = _INTERVAL.match(value)
    if match:
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
        if seconds < 1:
            raise ValueError("interval below 1 s")
        return ("interval", seconds)
    fields = value.split()
    if len(fields) != 5:
        raise ValueError("neither an interval nor a five-field cron expression")
    try:
        cron_trigger(value)
    except ValueError as exc:
        raise ValueError(f"bad cron expression ({exc})") from exc
    return ("cron", value)


def _schedule(value: str) -> str:
    parse_schedule(value)
    return value


Schedule = Annotated[
    str,
    AfterValidator(_schedule),
    Field(description='an interval such as "90s", "5m", "6h", "1d" or a cron expression'),
]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]
QualifiedName = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$", max_length=127)
]
Percent = Annotated[float, Field(gt=0, le=100)]


class PostgresSourceSettings(_Section):
    """Where memories live in PostgreSQL."""

    table: QualifiedName = Field(default="public.memories", description="a [schema.]table name")
    id_column: Identifier = Field(default="id", description="a column name")
    content_column: Identifier = Field(default="content", description="a column name")
    created_at_column: Identifier = Field(default="created_at", description="a column name")
    updated_at_column: Identifier = Field(default="updated_at", description="a column name")
    metadata_column: Identifier = Field(default="metadata", description="a column name")


class IngestSettings(_Section):
    """Batching and record limits of ingest."""

    batch_size: int = Field(default=1000, ge=1, le=100_000, description="1 to 100000")
    max_content_bytes: int = Field(
        default=65536, ge=1, le=16 * 1024 * 1024, description="1 to 16777216 bytes"
    )
    postgres: PostgresSourceSettings = PostgresSourceSettings()


class ScheduleSettings(_Section):
    """When each stage runs."""

    ingest: Schedule = "1m"
    working_memory: Schedule = "1m"
    short_term: Schedule = "5m"
    consolidation: Schedule = "1h"
    long_term: Schedule = "6h"
    dreams: Schedule = "0 3 * * *"
    homeostasis: Schedule = "0 4 * * 0"
    writeback: Schedule = "5m"
    dead_letter_replay: Schedule = "30s"


class ThresholdSettings(_Section):
    """Resource thresholds, in percent, for degraded and critical."""

    memory_degraded_percent: Percent = 80
    memory_critical_percent: Percent = 90
    disk_degraded_percent: Percent = 85
    disk_critical_percent: Percent = 95
    cpu_degraded_percent: Percent = 80
    cpu_critical_percent: Percent = 95

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdSettings:
        for name in ("memory", "disk", "cpu"):
            if getattr(self, f"{name}_degraded_percent") >= getattr(
                self, f"{name}_critical_percent"
            ):
                raise ValueError(f"{name}_degraded_percent must be below {name}_critical_percent")
        return self


class WorkingMemorySettings(_Section):
    window_seconds: float = Field(default=300, gt=0, description="seconds above 0")
    capacity: int = Field(default=7, ge=5, le=9, description="a whole number from 5 to 9")


class ShortTermSettings(_Section):
    episode_gap_seconds: float = Field(default=1800, gt=0, description="seconds above 0")
    max_episode_size: int = Field(default=50, ge=2, le=1000, description="2 to 1000")
    batch_size: int = Field(default=64, ge=1, le=10_000, description="1 to 10000")
    # Finished enrichments are committed together every commit_seconds, or as soon
    # as commit_max of them wait: a kill loses at most that much work.
    commit_seconds: float = Field(default=1.0, gt=0, le=600, description="seconds in (0, 600]")
    commit_max: int = Field(default=4096, ge=1, le=100_000, description="1 to 100000")


class ConsolidationSettings(_Section):
    learning_rate: float = Field(default=0.1, gt=0, le=1, description="a number in (0, 1]")
    decay_per_hour: float = Field(default=0.001, ge=0, lt=1, description="a number in [0, 1)")
    prune_below: float = Field(default=0.01, ge=0, lt=1, description="a number in [0, 1)")
    replay_threshold: float = Field(default=0.5, ge=0, le=1, description="a number in [0, 1]")
    transfer_threshold: float = Field(default=0.7, ge=0, le=1, description="a number in [0, 1]")


class LongTermSettings(_Section):
    dimensions: int = Field(default=768, ge=8, le=8192, description="8 to 8192")
    neighbours: int = Field(default=10, ge=1, le=100, description="1 to 100")
    min_cosine: float = Field(default=0.5, ge=-1, le=1, description="a number in [-1, 1]")
    batch_size: int = Field(default=32, ge=1, le=1000, description="1 to 1000")
    # Groups of comparable vectors up to this size get the exact network; larger
    # ones the approximate one (LSH with sorted windows; pipeline/semantic_network.py).
    exact_max: int = Field(default=5_000, ge=0, le=1_000_000, description="0 to 1000000")
    lsh_bands: int = Field(default=8, ge=1, le=32, description="1 to 32")
    lsh_bits: int = Field(default=16, ge=1, le=30, description="1 to 30")
    lsh_window: int = Field(default=32, ge=2, le=128, description="2 to 128")


class DreamSettings(_Section):
    per_run: int = Field(default=5, ge=0, le=1000, description="0 to 1000")
    candidates: int = Field(default=50, ge=2, le=10_000, description="2 to 10000")
    min_strength: float = Field(default=0.5, ge=0, le=1, description="a number in [0, 1]")
    plausibility_threshold: float = Field(default=0.5, ge=0, le=1, description="a number in [0, 1]")


class HomeostasisSettings(_Section):
    band_low: float = Field(default=0.25, ge=0, le=1, description="a number in [0, 1]")
    band_high: float = Field(default=0.75, ge=0, le=1, description="a number in [0, 1]")
    target_mean: float = Field(default=0.5, gt=0, lt=1, description="a number in (0, 1)")

    @model_validator(mode="after")
    def _band(self) -> HomeostasisSettings:
        if not self.band_low < self.target_mean < self.band_high:
            raise ValueError("band_low < target_mean < band_high must hold")
        return self


class PipelineSettings(_Section):
    """The stages' parameters (DESIGN.md 'Pipeline defaults')."""

    working_memory: WorkingMemorySettings = WorkingMemorySettings()
    short_term: ShortTermSettings = ShortTermSettings()
    consolidation: ConsolidationSettings = ConsolidationSettings()
    long_term: LongTermSettings = LongTermSettings()
    dreams: DreamSettings = DreamSettings()
    homeostasis: HomeostasisSettings = HomeostasisSettings()


class DependencyGuard(_Section):
    """Breaker, retry and bulkhead settings of one dependency."""

    window_size: int = Field(default=20, ge=1, le=10_000, description="1 to 10000 calls")
    minimum_calls: int = Field(default=5, ge=1, le=10_000, description="1 to 10000 calls")
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1, description="in (0, 1]")
    slow_call_rate_threshold: float = Field(default=0.5, gt=0, le=1, description="in (0, 1]")
    slow_call_seconds: float = Field(default=30, gt=0, description="seconds above 0")
    open_seconds: float = Field(default=30, gt=0, description="seconds above 0")
    open_multiplier: float = Field(default=2.0, ge=1, le=10, description="1 to 10")
    max_open_seconds: float = Field(default=600, gt=0, description="seconds above 0")
    half_open_calls: int = Field(default=2, ge=1, le=100, description="1 to 100")
    max_attempts: int = Field(default=3, ge=1, le=20, description="1 to 20")
    base_delay_seconds: float = Field(default=0.5, ge=0, description="seconds, 0 or more")
    delay_multiplier: float = Field(default=2.0, ge=1, le=10, description="1 to 10")
    jitter: Literal["full", "decorrelated"] = Field(
        default="full", description='"full" or "decorrelated"'
    )
    max_delay_seconds: float = Field(default=10, ge=0, description="seconds, 0 or more")
    retry_timeout_seconds: float = Field(default=30, gt=0, description="seconds above 0")
    retry_budget_ratio: float = Field(default=0.1, ge=0, le=1, description="in [0, 1]")


class DuckDBGuard(DependencyGuard):
    """The DuckDB guard: a call deadline, and the store's one-call bulkhead made visible."""

    # A local file fails and recovers fast: shorter waits than a network
    # dependency's. Class defaults, so that a [resilience.duckdb] section
    # setting one key keeps them for the others.
    open_seconds: float = Field(default=10, gt=0, description="seconds above 0")
    base_delay_seconds: float = Field(default=0.05, ge=0, description="seconds, 0 or more")
    max_delay_seconds: float = Field(default=1, ge=0, description="seconds, 0 or more")
    # Off by default: stages legitimately run minutes-long statements on big
    # stores (the semantic network's cross products), and an interrupted stage
    # redoes its whole batch; set it to bound a hung or runaway call.
    call_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "seconds above 0 that one store call (a statement, or a transaction as a "
            "whole) may take before it is interrupted; unset: no deadline"
        ),
    )
    max_concurrent_calls: Literal[1] = Field(
        default=1,
        description="1: DuckDB runs one call at a time, on one connection behind one lock",
    )


class PostgresGuard(DependencyGuard):
    """PostgreSQL's guard, with its timeouts and its pool (the bulkhead's size).

    ``statement_timeout_seconds`` is the server's limit; the server can only
    enforce it while it hears from us. ``call_timeout_seconds`` is the
    client's own deadline for any answer, so a call into a partitioned server
    (nothing arrives, not even the error) fails instead of waiting for TCP.
    """

    connect_timeout_seconds: float = Field(
        default=5, ge=1, le=300, description="seconds from 1 to 300"
    )
    statement_timeout_seconds: float = Field(
        default=60, gt=0, le=86_400, description="seconds above 0, at most 86400"
    )
    call_timeout_seconds: float = Field(
        default=65,
        gt=0,
        le=86_400,
        description="seconds above statement_timeout_seconds, at most 86400",
    )
    acquire_timeout_seconds: float = Field(
        default=3, gt=0, le=300, description="seconds above 0, at most 300"
    )
    max_connections: int = Field(default=4, ge=1, le=100, description="1 to 100 connections")

    @model_validator(mode="after")
    def _deadline_after_the_server_limit(self) -> PostgresGuard:
        # Below the server's limit, the client would cut statements the server
        # was still allowed to finish, and no server-side error would ever be seen.
        if self.call_timeout_seconds <= self.statement_timeout_seconds:
            raise ValueError("call_timeout_seconds must be above statement_timeout_seconds")
        return self


class ResilienceSettings(_Section):
    """One guard per dependency (Ollama's timeout and concurrency come from the environment)."""

    postgresql: PostgresGuard = PostgresGuard()
    duckdb: DuckDBGuard = DuckDBGuard()
    ollama: DependencyGuard = DependencyGuard()


def _matchers(value: dict[str, str]) -> dict[str, str]:
    for label, wanted in value.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
            raise ValueError(f"matcher label {label!r} is not a label name")
        if wanted.startswith("=~"):
            try:
                re.compile(wanted[2:])
            except re.error as exc:
                raise ValueError(f"matcher {label!r}: bad regular expression ({exc})") from None
    return value


Matchers = Annotated[
    dict[str, str],
    AfterValidator(_matchers),
    Field(description='label = "value" or label = "=~regex"; every matcher must match'),
]


class ReceiverSettings(_Section):
    """One webhook receiver; its secret comes from the environment variable ``secret_env``."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,63}$", description="a name of letters, digits, _ . -"
    )
    url: HttpURL = Field(description="an http(s) URL with a host")
    secret_env: Identifier | None = Field(
        default=None, description="the name of an environment variable holding the HMAC secret"
    )
    matchers: Matchers = Field(default_factory=dict)
    timeout_seconds: float = Field(default=10, gt=0, le=300, description="seconds in (0, 300]")
    send_resolved: bool = True


class AlertFileSettings(_Section):
    """Webhook receivers besides HEALTH_ALERT_WEBHOOK_URL (which is the receiver "default")."""

    receivers: list[ReceiverSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> AlertFileSettings:
        names = [r.name for r in self.receivers]
        if "default" in names:
            raise ValueError('receiver name "default" is HEALTH_ALERT_WEBHOOK_URL\'s')
        if len(names) != len(set(names)):
            raise ValueError("receiver names must be unique")
        return self


class FileSettings(_Section):
    """The whole TOML file; every section optional."""

    ingest: IngestSettings = IngestSettings()
    schedules: ScheduleSettings = ScheduleSettings()
    thresholds: ThresholdSettings = ThresholdSettings()
    pipeline: PipelineSettings = PipelineSettings()
    recovery: RecoverySettings = Field(
        default=RecoverySettings(),
        description="[recovery] keys and [[recovery.rules]] as in docs/config.example.toml",
    )
    resilience: ResilienceSettings = ResilienceSettings()
    alerts: AlertFileSettings = AlertFileSettings()
