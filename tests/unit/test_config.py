"""Configuration: defaults, rejection of bad values with one named reason, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomem.config import effective_config, load_settings
from biomem.resilience.errors import ConfigurationError


def test_defaults_match_design(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, the settings are DESIGN.md's defaults."""
    monkeypatch.delenv("DUCKDB_PATH")
    monkeypatch.delenv("HEALTH_HTTP_ENDPOINTS")
    s = load_settings()
    assert s.store.path == Path("./data/biomem.duckdb")
    assert s.postgres.url is None and not s.postgres.configured
    assert s.ollama.url == "http://localhost:11434"
    assert (s.ollama.model, s.ollama.embedding_model) == ("llama3.2", "nomic-embed-text")
    assert (s.ollama.timeout_seconds, s.ollama.max_concurrency) == (60, 4)
    assert (s.health.http_endpoints, s.health.host, s.health.port) == (True, "127.0.0.1", 8080)
    assert s.health.continuous_monitoring and s.health.check_interval_seconds == 15
    assert s.alerts.webhook_url is None and s.alerts.webhook_secret is None
    assert s.recovery.enabled and not s.recovery.dry_run
    assert s.pipeline.working_memory.capacity == 7
    assert s.schedules.consolidation == "1h"
    assert s.ingest.max_content_bytes == 65536


@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [
        pytest.param("HEALTH_HTTP_PORT", "70000", "TCP port from 1 to 65535", id="port"),
        pytest.param("HEALTH_HTTP_PORT", "http", "TCP port", id="port-text"),
        pytest.param("HEALTH_HTTP_ENDPOINTS", "maybe", "true or false", id="bool"),
        pytest.param("RECOVERY_DRY_RUN", "perhaps", "true or false", id="bool-2"),
        pytest.param("OLLAMA_URL", "localhost:11434", "http(s) URL", id="url-no-scheme"),
        pytest.param("HEALTH_ALERT_WEBHOOK_URL", "ftp://x/y", "http(s) URL", id="webhook"),
        pytest.param("POSTGRES_DB_URL", "mysql://u@h/d", "PostgreSQL URL", id="pg-scheme"),
        pytest.param("POSTGRES_DB_URL", "postgresql://h:99999/d", "PostgreSQL URL", id="pg-port"),
        pytest.param("OLLAMA_TIMEOUT_SECONDS", "0", "above 0", id="timeout"),
        pytest.param("OLLAMA_MAX_CONCURRENCY", "1000", "1 to 256", id="concurrency"),
        pytest.param("BIOMEM_LOG_LEVEL", "loud", "debug, info", id="level"),
        pytest.param("BIOMEM_LOG_FORMAT", "xml", "auto, json, console", id="format"),
        pytest.param("HEALTH_HTTP_HOST", "bad host!", "IP address or host name", id="host"),
        pytest.param("HEALTH_API_TOKEN", "short", "at least 16", id="token"),
    ],
)
def test_bad_value_names_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepts: str
) -> None:
    """A bad value raises ConfigurationError naming the variable and what it accepts."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert accepts in caught.value.accepts
    assert "\n" not in str(caught.value)


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected PostgreSQL URL or token is never quoted back."""
    monkeypatch.setenv("POSTGRES_DB_URL", "postgresql://u:hunter2secret@h:99999/d")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "hunter2secret" not in str(caught.value)
    monkeypatch.delenv("POSTGRES_DB_URL")
    monkeypatch.setenv("HEALTH_API_TOKEN", "tooshort-secret")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "tooshort-secret" not in str(caught.value)


def test_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty variable takes the default rather than failing."""
    monkeypatch.setenv("POSTGRES_DB_URL", "")
    monkeypatch.setenv("HEALTH_HTTP_PORT", "")
    s = load_settings()
    assert s.postgres.url is None and s.health.port == 8080


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "biomem.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_file_sets_sections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The TOML file sets schedules, thresholds, pipeline parameters and rules."""
    path = write_toml(
        tmp_path,
        """
[ingest]
batch_size = 50
[ingest.postgres]
table = "app.notes"
content_column = "body"
[schedules]
dreams = "30 2 * * *"
short_term = "10m"
[thresholds]
memory_degraded_percent = 70
[pipeline.working_memory]
capacity = 9
[[recovery.rules]]
name = "reconnect_pg"
component = "postgresql"
action = "reconnect"
""",
    )
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    s = load_settings()
    assert s.ingest.batch_size == 50
    assert (s.ingest.postgres.table, s.ingest.postgres.content_column) == ("app.notes", "body")
    assert s.schedules.dreams == "30 2 * * *" and s.schedules.short_term == "10m"
    assert s.health.thresholds.memory_degraded_percent == 70
    assert s.pipeline.working_memory.capacity == 9
    assert [rule.name for rule in s.recovery.rules] == ["reconnect_pg"]


@pytest.mark.parametrize(
    ("text", "where", "accepts"),
    [
        pytest.param("[ingest]\nbatch_sise = 5\n", "[ingest].batch_sise", "batch_size", id="typo"),
        pytest.param("[nonsense]\n", "nonsense", "ingest", id="section"),
        pytest.param(
            "[ingest]\nbatch_size = 0\n", "[ingest].batch_size", "1 to 100000", id="range"
        ),
        pytest.param(
            '[schedules]\ndreams = "61 * * * *"\n', "[schedules].dreams", "cron", id="cron"
        ),
        pytest.param(
            '[schedules]\ningest = "often"\n', "[schedules].ingest", "interval", id="interval"
        ),
        pytest.param(
            "[pipeline.working_memory]\ncapacity = 12\n",
            "[pipeline.working_memory].capacity",
            "5 to 9",
            id="capacity",
        ),
        pytest.param(
            '[ingest.postgres]\ntable = "x; drop table y"\n',
            "[ingest.postgres].table",
            "table name",
            id="injection",
        ),
        pytest.param("[ingest\n", "BIOMEM_CONFIG_FILE", "TOML", id="syntax"),
    ],
)
def test_bad_toml_names_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, where: str, accepts: str
) -> None:
    """A bad key or value in the TOML file names the file, the key and what it accepts."""
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(write_toml(tmp_path, text)))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert where in caught.value.variable
    assert accepts in caught.value.accepts
    assert "\n" not in str(caught.value)


def test_missing_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A config file that does not exist is a configuration error, not a crash."""
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings()


def test_effective_config_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The effective configuration shows no password, token, secret or webhook path."""
    monkeypatch.setenv("POSTGRES_DB_URL", "postgresql://app:pg-Secret-123@db.example:5432/mem")
    monkeypatch.setenv("HEALTH_API_TOKEN", "token-Secret-0123456789")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "hmac-Secret-0123456789")
    monkeypatch.setenv("HEALTH_ALERT_WEBHOOK_URL", "https://hooks.example/T0/B0/hook-Secret")
    shown = json.dumps(effective_config(load_settings()))
    assert "Secret" not in shown
    data = json.loads(shown)
    assert data["postgres"]["url"] == "postgresql://app:***@db.example:5432/mem"
    assert data["health"]["api_token"] == "***"
    assert data["alerts"]["webhook_url"] == "https://hooks.example/***"


def test_documented_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/config.example.toml loads and equals the defaults it claims to show."""
    from tests.conftest import REPO

    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(REPO / "docs" / "config.example.toml"))
    with_file = load_settings()
    monkeypatch.delenv("BIOMEM_CONFIG_FILE")
    defaults = load_settings()
    assert with_file.model_dump(exclude={"config_file"}) == defaults.model_dump(
        exclude={"config_file"}
    )


@pytest.mark.parametrize(
    ("expression", "expected_weekday"),
    [
        pytest.param("0 4 * * 0", 6, id="0-is-sunday"),
        pytest.param("0 4 * * 7", 6, id="7-is-sunday"),
        pytest.param("0 4 * * 1", 0, id="1-is-monday"),
        pytest.param("0 4 * * sat", 5, id="names"),
    ],
)
def test_cron_day_of_week_reads_as_standard_cron(expression: str, expected_weekday: int) -> None:
    """Schedules use cron's day numbering (0 and 7 are Sunday), not APScheduler's."""
    from datetime import UTC, datetime

    from biomem.config.filecfg import cron_trigger

    fire = cron_trigger(expression).get_next_fire_time(None, datetime(2026, 11, 23, tzinfo=UTC))
    assert fire.weekday() == expected_weekday


def test_resilience_section_builds_the_policies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """[resilience.<dependency>] sets that dependency's breaker and retry."""
    from biomem.guards import build_guards

    path = write_toml(
        tmp_path,
        "[resilience.ollama]\nminimum_calls = 3\nwindow_size = 6\nopen_seconds = 12\n"
        'max_attempts = 5\ndelay_multiplier = 3.0\njitter = "decorrelated"\n',
    )
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    monkeypatch.setenv("OLLAMA_MAX_CONCURRENCY", "6")
    guards = build_guards(load_settings())
    breaker = guards.ollama.breaker.config
    assert (breaker.minimum_calls, breaker.window_size, breaker.wait_duration_open_s) == (3, 6, 12)
    retry = guards.ollama.config.retry
    assert retry is not None
    assert (retry.max_attempts, retry.multiplier, retry.jitter) == (5, 3.0, "decorrelated")
    assert guards.ollama.bulkhead is not None and guards.ollama.bulkhead.max_concurrent == 6
    assert guards.postgresql.breaker.config.minimum_calls == 5  # the others keep defaults


def test_duckdb_section_sets_the_call_deadline_and_keeps_its_own_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """[resilience.duckdb] call_timeout_seconds is off unless set; a section setting one key
    keeps DuckDB's shorter waits for the others; the bulkhead is one call, shown, not settable."""
    defaults = load_settings().resilience.duckdb
    assert defaults.call_timeout_seconds is None and defaults.max_concurrent_calls == 1
    path = write_toml(tmp_path, "[resilience.duckdb]\ncall_timeout_seconds = 600\n")
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    duckdb = load_settings().resilience.duckdb
    assert duckdb.call_timeout_seconds == 600
    assert (duckdb.open_seconds, duckdb.base_delay_seconds, duckdb.max_delay_seconds) == (
        10,
        0.05,
        1,
    )
    shown = effective_config(load_settings())["resilience"]["duckdb"]
    assert (shown["call_timeout_seconds"], shown["max_concurrent_calls"]) == (600, 1)


@pytest.mark.parametrize(
    ("text", "key", "accepts"),
    [
        pytest.param(
            "[resilience.duckdb]\ncall_timeout_seconds = 0\n",
            "[resilience.duckdb].call_timeout_seconds",
            "seconds above 0",
            id="zero",
        ),
        pytest.param(
            "[resilience.duckdb]\nmax_concurrent_calls = 4\n",
            "[resilience.duckdb].max_concurrent_calls",
            "1: DuckDB runs one call at a time",
            id="bulkhead",
        ),
    ],
)
def test_bad_duckdb_guard_values_name_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, key: str, accepts: str
) -> None:
    """A bad DuckDB deadline or bulkhead value stops the program naming the key."""
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(write_toml(tmp_path, text)))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert key in str(caught.value) and accepts in caught.value.accepts


def test_postgresql_timeouts_and_pool_come_from_its_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """[resilience.postgresql] sets the client's deadlines and the pool, and the policy's
    bulkhead admits as many calls as the pool has connections."""
    from pydantic import SecretStr

    from biomem.app import postgres_client
    from biomem.guards import build_guards

    path = write_toml(
        tmp_path,
        "[resilience.postgresql]\nconnect_timeout_seconds = 2\nstatement_timeout_seconds = 10\n"
        "call_timeout_seconds = 12\nacquire_timeout_seconds = 1.5\nmax_connections = 6\n",
    )
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    settings = load_settings()
    guards = build_guards(settings)
    bulkhead = guards.postgresql.bulkhead
    assert bulkhead is not None and (bulkhead.max_concurrent, bulkhead.max_wait_s) == (6, 1.5)
    client = postgres_client(SecretStr("postgresql://u@127.0.0.1:1/db"), settings, guards)
    try:
        assert client.call_timeout_s == 12
        assert client.get_stats().get("pool_max", 6) == 6
    finally:
        client.close()


def test_postgresql_call_deadline_must_outlast_the_statement_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A client deadline at or below the server's statement_timeout is refused, by name."""
    path = write_toml(
        tmp_path,
        "[resilience.postgresql]\nstatement_timeout_seconds = 30\ncall_timeout_seconds = 30\n",
    )
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "resilience" in caught.value.variable
    assert "call_timeout_seconds" in str(caught.value)
