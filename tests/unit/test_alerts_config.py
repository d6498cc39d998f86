"""Alert settings: several receivers from the TOML file, secrets from the environment,
ALERT_GROUP_INTERVAL, and one-line errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomem.alerting import receivers_from_settings
from biomem.config import effective_config, load_settings
from biomem.resilience.errors import ConfigurationError

SECRET = "oncall-Secret-0123456789"


def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "biomem.toml"
    path.write_text(text)
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    return path


def test_receivers_come_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEALTH_ALERT_WEBHOOK_URL is "default"; each [[alerts.receivers]] follows, secret by name."""
    write(
        tmp_path,
        monkeypatch,
        """
[[alerts.receivers]]
name = "oncall"
url = "https://pager.example/hook/T0KEN-in-path"
secret_env = "ONCALL_SECRET"
matchers = { severity = "=~error|critical" }
timeout_seconds = 5

[[alerts.receivers]]
name = "chat"
url = "http://127.0.0.1:9000/chat"
send_resolved = false
""",
    )
    monkeypatch.setenv("ONCALL_SECRET", SECRET)
    monkeypatch.setenv("HEALTH_ALERT_WEBHOOK_URL", "http://127.0.0.1:9000")
    settings = load_settings()
    receivers = receivers_from_settings(settings.alerts)
    assert [r.name for r in receivers] == ["default", "oncall", "chat"]
    oncall, chat = receivers[1], receivers[2]
    assert (oncall.secret, oncall.timeout_s, chat.secret, chat.send_resolved) == (
        SECRET,
        5.0,
        None,
        False,
    )
    assert oncall.accepts({"alertname": "X", "severity": "critical"})
    assert not oncall.accepts({"alertname": "X", "severity": "warning"})
    assert chat.accepts({"alertname": "X", "severity": "info"})
    shown = json.dumps(effective_config(settings))
    assert SECRET not in shown
    assert "T0KEN-in-path" not in shown


def test_group_interval_defaults_to_five_minutes_and_reads_durations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ALERT_GROUP_INTERVAL: 5 minutes by default, "30s" style durations otherwise."""
    assert load_settings().alerts.group_interval_seconds == 300
    monkeypatch.setenv("ALERT_GROUP_INTERVAL", "90s")
    assert load_settings().alerts.group_interval_seconds == 90
    monkeypatch.setenv("ALERT_GROUP_INTERVAL", "soon")
    with pytest.raises(ConfigurationError, match="ALERT_GROUP_INTERVAL"):
        load_settings()


def test_restore_grace_is_unset_by_default_and_reads_durations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ALERT_RESTORE_GRACE: unset (the daemon derives it) by default, durations otherwise."""
    assert load_settings().alerts.restore_grace_seconds is None
    monkeypatch.setenv("ALERT_RESTORE_GRACE", "2m")
    assert load_settings().alerts.restore_grace_seconds == 120
    monkeypatch.setenv("ALERT_RESTORE_GRACE", "later")
    with pytest.raises(ConfigurationError, match="ALERT_RESTORE_GRACE"):
        load_settings()


@pytest.mark.parametrize(
    ("toml", "env", "names", "hidden"),
    [
        pytest.param(
            '[[alerts.receivers]]\nname = "a"\nurl = "ftp://files.example/T0KEN"\n',
            {},
            "[alerts.receivers][0].url",
            "T0KEN",
            id="bad-url",
        ),
        pytest.param(
            '[[alerts.receivers]]\nname = "a"\nurl = "http://x.example"\n'
            'secret = "s3cr3t-in-file"\n',
            {},
            "[alerts.receivers][0].secret",
            "s3cr3t-in-file",
            id="secret-in-file",
        ),
        pytest.param(
            '[[alerts.receivers]]\nname = "a"\nurl = "http://x.example"\nsecret_env = "NOPE"\n',
            {},
            "[alerts.receivers][0].secret_env",
            None,
            id="secret-variable-unset",
        ),
        pytest.param(
            '[[alerts.receivers]]\nname = "a"\nurl = "http://x.example"\nsecret_env = "SHORT"\n',
            {"SHORT": "tiny-secret"},
            "[alerts.receivers][0].secret_env",
            "tiny-secret",
            id="secret-too-short",
        ),
        pytest.param(
            '[[alerts.receivers]]\nname = "a"\nurl = "http://x.example"\n'
            'matchers = { severity = "=~(" }\n',
            {},
            "[alerts.receivers][0].matchers",
            None,
            id="bad-regex",
        ),
        pytest.param(
            '[[alerts.receivers]]\nname = "default"\nurl = "http://x.example"\n',
            {},
            "alerts",
            None,
            id="default-is-reserved",
        ),
        pytest.param(
            '[[alerts.receivers]]\nname = "a"\nurl = "http://x.example"\n'
            '[[alerts.receivers]]\nname = "a"\nurl = "http://y.example"\n',
            {},
            "alerts",
            None,
            id="duplicate-names",
        ),
    ],
)
def test_bad_receivers_are_one_line_errors_naming_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toml: str,
    env: dict[str, str],
    names: str,
    hidden: str | None,
) -> None:
    """A bad receiver stops start-up with one line that names the key and hides secrets."""
    write(tmp_path, monkeypatch, toml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert names in message
    assert "\n" not in message
    if hidden is not None:
        assert hidden not in message
