"""Rules: triggers against observations, the defaults, overrides from the TOML file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from biomem.config import load_settings
from biomem.config.recovery import (
    ACTION_NAMES,
    DEFAULT_RULES,
    STAGE_NAMES,
    RecoveryRule,
    effective_rules,
)
from biomem.health.model import Status
from biomem.pipeline.runner import STAGES
from biomem.recovery import Fired, Observation, StageRun, Worker, build_actions, evaluate
from biomem.resilience.errors import ConfigurationError
from tests.conftest import REPO
from tests.support.recovery import rule

H, D, U, C = Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY, Status.CRITICAL


def _obs(**fields: object) -> Observation:
    return Observation(at=0.0, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param((U, U, U), Fired.FIRED, id="three-in-a-row"),
        pytest.param((U, C, U), Fired.FIRED, id="unhealthy-or-critical"),
        pytest.param((H, U, U), Fired.PENDING, id="only-two"),
        pytest.param((U, D, U), Fired.PENDING, id="broken-streak"),
        pytest.param((U, U, H), Fired.CLEAR, id="healthy-again"),
        pytest.param((), Fired.PENDING, id="not-checked-yet"),
        pytest.param((U, U, D), Fired.PENDING, id="degraded-is-not-healthy"),
        pytest.param((U, D, D, D), Fired.CLEAR, id="settled-below-the-trigger"),
        pytest.param((U, U, D, D), Fired.PENDING, id="not-settled-yet"),
    ],
)
def test_status_trigger_counts_consecutive_checks(
    history: tuple[Status, ...], expected: Fired
) -> None:
    """A status trigger fires on N checks in a row; a healthy check ends the incident, and so
    do N checks in a row below the trigger (settled, e.g. degraded after unhealthy)."""
    r = rule(consecutive_checks=3)
    assert evaluate(r, _obs(history={"postgresql": history})).state is expected


def test_resource_trigger_reads_the_resource_history() -> None:
    """memory critical twice in a row fires the memory rule, whatever disk does."""
    r = rule(
        "mem",
        component="system_resources",
        trigger="resource",
        resource="memory",
        when_status=["critical"],
        consecutive_checks=2,
        actions=["collect_garbage"],
    )
    fired = evaluate(r, _obs(resources={"memory": (D, C, C), "disk": (H, H, H)}))
    assert fired.state is Fired.FIRED and "memory critical" in fired.detail
    assert evaluate(r, _obs(resources={"memory": (C, D)})).state is Fired.PENDING
    assert evaluate(r, _obs(resources={"memory": (C, H)})).state is Fired.CLEAR


def test_breaker_trigger_fires_after_open_seconds() -> None:
    """Open for less than T: pending; for T or more: fired; closed: clear."""
    r = rule(trigger="breaker_open", open_seconds=300)
    assert evaluate(r, _obs(breakers_open_s={"postgresql": 299.0})).state is Fired.PENDING
    assert evaluate(r, _obs(breakers_open_s={"postgresql": 300.0})).state is Fired.FIRED
    assert evaluate(r, _obs(breakers_open_s={"ollama": 9999.0})).state is Fired.CLEAR


def test_dead_letter_trigger_fires_above_depth() -> None:
    """More than D pending fires; D or fewer clears; unreadable waits."""
    r = rule(component="pipeline", trigger="dead_letters", dead_letters_above=10)
    assert evaluate(r, _obs(dead_letters=11)).state is Fired.FIRED
    assert evaluate(r, _obs(dead_letters=10)).state is Fired.CLEAR
    assert evaluate(r, _obs(dead_letters=None)).state is Fired.PENDING


def test_stage_stuck_trigger_points_at_the_longest_run_of_the_watched_stages() -> None:
    """The stuck run's stage and pass are the trigger's target."""
    r = rule(
        component="pipeline",
        trigger="stage_stuck",
        stuck_seconds=600,
        stages=["short_term", "dreams"],
        actions=["cancel_stuck_stage"],
    )
    runs = (
        StageRun(1, "consolidation", "consolidation", 5000.0),  # not watched
        StageRun(2, "short_term", "short_term", 700.0),
    )
    fired = evaluate(r, _obs(stage_runs=runs))
    assert (fired.state, fired.target, fired.pass_id) == (Fired.FIRED, "short_term", 2)
    assert evaluate(r, _obs(stage_runs=runs[:1])).state is Fired.CLEAR


def test_worker_trigger() -> None:
    """A worker past its deadline fires; none clears."""
    r = rule(component="pipeline", trigger="worker_stuck", actions=["terminate_stuck_workers"])
    assert evaluate(r, _obs(stuck_workers=(Worker(42, "x", 3.0),))).state is Fired.FIRED
    assert evaluate(r, _obs()).state is Fired.CLEAR


def test_configuration_names_exactly_the_actions_and_stages_that_exist() -> None:
    """Action names in the config equal the implemented actions; stages equal the pipeline's."""
    assert set(build_actions()) == set(ACTION_NAMES)
    assert set(STAGE_NAMES) == {"ingest", *STAGES}


def test_every_default_rule_is_complete() -> None:
    """The defaults need no configuration: each has a component, actions and a known trigger."""
    names = [r.name for r in effective_rules([])]
    assert names == [r.name for r in DEFAULT_RULES]
    assert len(names) == len(set(names)) == 10


def test_an_override_changes_only_the_keys_it_gives() -> None:
    """name + cooldown_seconds keeps the default's trigger and actions; enabled=false disables."""
    rules = {
        r.name: r
        for r in effective_rules(
            [
                RecoveryRule(name="postgres_pool_reset", cooldown_seconds=5),
                RecoveryRule(name="ollama_restart", enabled=False),
            ]
        )
    }
    pg = rules["postgres_pool_reset"]
    assert (pg.cooldown_seconds, pg.consecutive_checks, pg.actions) == (
        5,
        3,
        ["reset_postgres_pool"],
    )
    assert not rules["ollama_restart"].enabled


def test_the_older_single_action_spelling_still_works() -> None:
    """action = "reconnect" on postgresql means resetting the pool."""
    (extra,) = effective_rules(
        [RecoveryRule(name="reconnect_pg", component="postgresql", action="reconnect")]
    )[len(DEFAULT_RULES) :]
    assert extra.actions == ["reset_postgres_pool"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "biomem.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[[recovery.rules]]\nname = "x"\ncomponent = "duckdb"\nactions = ["reboot"]\n',
            "unknown action",
            id="unknown-action",
        ),
        pytest.param(
            '[[recovery.rules]]\nname = "x"\nactions = ["escalate"]\n',
            "component is required",
            id="new-rule-without-component",
        ),
        pytest.param(
            '[[recovery.rules]]\nname = "x"\ncomponent = "ollama"\naction = "reconnect"\n',
            "reconnect applies",
            id="reconnect-on-ollama",
        ),
        pytest.param(
            '[[recovery.rules]]\nname = "x"\ncomponent = "s"\ntrigger = "resource"\n'
            'actions = ["escalate"]\n',
            "needs resource",
            id="resource-without-resource",
        ),
        pytest.param(
            '[[recovery.rules]]\nname = "duckdb_reopen"\n' * 2,
            "given twice",
            id="twice",
        ),
        pytest.param(
            '[[recovery.rules]]\nname = "stage_stuck"\nstages = ["sleeping"]\n',
            "stages",
            id="unknown-stage",
        ),
        pytest.param("[recovery]\nmax_unhealthy_share = 0\n", "max_unhealthy_share", id="share"),
    ],
)
def test_a_bad_rule_stops_the_program_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    """A rule that cannot work is a configuration error at start-up, with the reason."""
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(_write(tmp_path, text)))
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_restart_command_and_knobs_come_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[recovery] ollama_restart_command is an argv list; the switches come from the environment."""
    path = _write(
        tmp_path,
        '[recovery]\nollama_restart_command = ["systemctl", "--user", "restart", "ollama"]\n'
        "interval_seconds = 2\n",
    )
    monkeypatch.setenv("BIOMEM_CONFIG_FILE", str(path))
    monkeypatch.setenv("RECOVERY_DRY_RUN", "true")
    recovery = load_settings().recovery
    assert recovery.ollama_restart_command == ["systemctl", "--user", "restart", "ollama"]
    assert (recovery.interval_seconds, recovery.dry_run, recovery.enabled) == (2, True, True)


def test_the_example_file_documents_the_default_rules_key_for_key() -> None:
    """The commented [[recovery.rules]] in docs/config.example.toml are the defaults, exactly."""
    text = (REPO / "docs" / "config.example.toml").read_text(encoding="utf-8")
    block = text[text.index("# [[recovery.rules]]") :]
    uncommented = "\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines())
    documented = tomllib.loads(uncommented)["recovery"]["rules"]
    parsed = [RecoveryRule.model_validate(item).complete() for item in documented]
    assert parsed == effective_rules([])
