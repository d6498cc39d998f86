"""Alerts across a restart: a new manager on the same store takes back what receivers were
told is firing, and each receiver ends up with the truth, told once.

A restart here is a second manager on the same DuckDB store with a new fake
monotonic clock (a new process's clock starts anew) and a wall clock that
went on through the downtime.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from biomem.alerts import Receiver, fingerprint
from biomem.alerts.outbox import NotificationStatus
from biomem.resilience.clock import FakeClock
from biomem.store import DuckDBStore
from tests.support.alert_rig import DOWN, Env, make_env

GRACE = 20.0  # the restore grace of the restarted managers
ZERO_TIME = "0001-01-01T00:00:00Z"
DEAD = {"alertname": "DeadLetterDead", "operation": "writeback", "component": "postgresql"}


def restart(store: DuckDBStore, before: Env, *, down_s: float = 60.0, **options: Any) -> Env:
    """A new manager on ``store``, ``down_s`` of wall time after ``before``'s last tick."""
    clock = FakeClock(5.0)
    epoch = before.wall() + timedelta(seconds=down_s) - timedelta(seconds=clock.monotonic())
    options.setdefault("restore_grace_s", GRACE)
    return make_env(store, clock=clock, epoch=epoch, receivers=before.receivers, **options)


def statuses(env: Env, receiver: str | None = None) -> list[str]:
    return [p["status"] for p in env.payloads(receiver)]


def told_firing(store: DuckDBStore, **options: Any) -> tuple[Env, dict[str, Any]]:
    """DOWN fired and notified; the manager's env and the firing payload's alert."""
    env = make_env(store, **options)
    env.manager.fire(DOWN, {"summary": "duckdb is down"})
    env.run(15)
    (firing,) = env.payloads()
    assert firing["status"] == "firing"
    return env, firing["alerts"][0]


def test_restored_alert_fired_again_sends_nothing_then_one_resolved(store: DuckDBStore) -> None:
    """Fired again after a restart, a notified alert sends no second firing; its later
    resolution sends exactly one resolved with the original startsAt."""
    before, told = told_firing(store)
    env = restart(store, before)
    assert [a["startsAt"] for a in env.manager.snapshot()["active"]] == [told["startsAt"]]
    env.run(3)
    env.manager.fire(DOWN, {"summary": "duckdb is still down"})  # the first health check
    env.run(GRACE * 10)
    assert statuses(env) == ["firing"]
    env.manager.resolve(DOWN)
    env.run(200)
    assert statuses(env) == ["firing", "resolved"]
    (resolved,) = env.payloads()[1]["alerts"]
    assert resolved["fingerprint"] == told["fingerprint"] == fingerprint(DOWN)
    assert resolved["startsAt"] == told["startsAt"]
    assert resolved["endsAt"] != ZERO_TIME


def test_restored_alert_not_fired_again_resolves_once_after_the_grace(
    store: DuckDBStore,
) -> None:
    """A restored alert no source fires again is resolved after the grace: one resolved
    notification, with the original startsAt and an endsAt, after the firing one."""
    before, told = told_firing(store)
    env = restart(store, before)
    env.run(GRACE - 1)
    assert statuses(env) == ["firing"]
    env.run(1000)
    assert statuses(env) == ["firing", "resolved"]
    firing_row, resolved_row = env.outbox.list()
    assert resolved_row.seq > firing_row.seq and resolved_row.id != firing_row.id
    assert resolved_row.status is NotificationStatus.PENDING  # the deliverer sends it, in order
    (resolved,) = env.payloads()[1]["alerts"]
    assert (resolved["status"], resolved["startsAt"]) == ("resolved", told["startsAt"])
    assert resolved["endsAt"] >= (env.epoch + timedelta(seconds=5 + GRACE)).isoformat()[:19]
    assert env.manager.snapshot()["active"] == []


def test_alert_firing_again_within_the_settle_time_after_the_grace_sends_nothing(
    store: DuckDBStore,
) -> None:
    """A source that fires later than the grace but within the settle time (a breaker
    opening some checks after the start) is flap-damped: no resolved, no new firing."""
    before, _ = told_firing(store)
    env = restart(store, before)
    env.run(GRACE + 10)  # resolving since the grace ended, settle is 30 s
    env.manager.fire(DOWN)
    env.run(500)
    assert statuses(env) == ["firing"]


def test_a_second_restart_still_knows_the_alert(store: DuckDBStore) -> None:
    """Restarted twice while the incident lasts, the receiver still hears one firing and,
    in the end, one resolved."""
    before, _ = told_firing(store)
    middle = restart(store, before)
    middle.run(2)
    middle.manager.fire(DOWN)
    middle.run(100)
    env = restart(store, middle)
    env.run(2000)
    assert statuses(env) == ["firing", "resolved"]


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("resolved", id="resolved-and-told-before-restart"),
        pytest.param("silenced", id="fired-while-silenced-never-told"),
        pytest.param("pending", id="resolved-within-group-wait"),
    ],
)
def test_alerts_not_told_firing_are_not_resurrected(store: DuckDBStore, how: str) -> None:
    """Alerts receivers were not last told are firing stay gone after a restart."""
    before = make_env(store)
    if how == "silenced":
        before.manager.silence({"component": "duckdb"}, ends_at=before.wall() + timedelta(hours=2))
    before.manager.fire(DOWN)
    before.run(5 if how == "pending" else 15)
    if how != "silenced":
        before.manager.resolve(DOWN)
    before.run(100)
    sent = statuses(before)
    assert sent == {"resolved": ["firing", "resolved"], "silenced": [], "pending": []}[how]
    env = restart(store, before)
    assert env.manager.snapshot()["active"] == []
    env.run(1000)
    assert statuses(env) == sent


def test_resolution_goes_only_to_receivers_told_it_was_firing(store: DuckDBStore) -> None:
    """A receiver that already heard "resolved" is not told again; one that was last told
    "firing" hears the resolution."""
    ops = Receiver(name="ops", url="http://127.0.0.1:9/ops")
    quiet = Receiver(name="quiet", url="http://127.0.0.1:9/quiet", send_resolved=False)
    before = make_env(store, receivers=[ops, quiet])
    before.manager.fire(DOWN)
    before.run(15)
    before.manager.resolve(DOWN)
    before.run(100)
    # "quiet" takes no resolutions: its newest word on DOWN is "firing".
    assert (statuses(before, "ops"), statuses(before, "quiet")) == (
        ["firing", "resolved"],
        ["firing"],
    )
    env = restart(store, before)
    env.run(1000)
    assert (statuses(env, "ops"), statuses(env, "quiet")) == (["firing", "resolved"], ["firing"])


def test_restored_alert_joins_a_new_alerts_notification_as_told(store: DuckDBStore) -> None:
    """A new alert after a restart lists the restored one as firing, unchanged; the
    restored one, not fired again, then resolves once."""
    before, told = told_firing(store)
    env = restart(store, before)
    env.manager.fire({**DOWN, "component": "ollama"})
    env.run(15)
    assert statuses(env) == ["firing", "firing"]
    listed = {a["fingerprint"]: a for a in env.payloads()[1]["alerts"]}
    assert listed[told["fingerprint"]]["startsAt"] == told["startsAt"]
    env.manager.fire({**DOWN, "component": "ollama"})
    env.run(1000)
    assert statuses(env) == ["firing", "firing", "firing"]
    last = {a["fingerprint"]: a["status"] for a in env.payloads()[2]["alerts"]}
    assert last == {
        told["fingerprint"]: "resolved",
        fingerprint({**DOWN, "component": "ollama"}): "firing",
    }


def test_alerts_no_source_fires_again_are_kept(store: DuckDBStore) -> None:
    """An alertname in restore_keep (DeadLetterDead) is not resolved by the grace."""
    before = make_env(store)
    before.manager.fire(DEAD)
    before.run(15)
    env = restart(store, before, restore_keep=("DeadLetterDead",))
    env.run(2000)
    assert statuses(env) == ["firing"]
    assert [a["state"] for a in env.manager.snapshot()["active"]] == ["active"]


def test_default_grace_is_the_group_wait(store: DuckDBStore) -> None:
    """Without restore_grace_s a restored alert waits the group wait (10 s here)."""
    before, _ = told_firing(store)
    env = restart(store, before, restore_grace_s=None)
    env.run(9)
    env.manager.fire(DOWN)
    env.run(1000)
    assert statuses(env) == ["firing"]


def test_an_overdue_repeat_waits_until_what_still_fires_is_known(store: DuckDBStore) -> None:
    """Restarted past the repeat interval, a restored alert fired again repeats once the
    grace and a settle time are over, not at the first tick."""
    before, _ = told_firing(store)
    env = restart(store, before, down_s=2 * 3600)
    env.run(3)
    env.manager.fire(DOWN)
    env.run(GRACE + 30 - 5)
    assert statuses(env) == ["firing"]
    env.run(10)
    assert statuses(env) == ["firing", "firing"]
