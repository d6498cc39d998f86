"""What receivers were last told is firing, read back from the outbox at start.

The outbox is the durable record of every notification, written in the same
transaction as the manager's decision to send it, and a notification lists
*every* alert of its group that its receiver hears of (firing ones, settling
ones as firing, settled ones as resolved). So the newest notification per
receiver and group says what that receiver believes, and nothing else has to
be kept in step with it: no second table that could disagree with the
outbox after a crash between two writes, and a store written by an earlier
version (an upgrade in the middle of an incident) restores as well.

A row counts as told once it is enqueued, whatever its delivery state, as in
the running manager: a pending row will be delivered (in order, before any
later row about the same alert), and a FAILED one was refused for good.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from biomem.alerts.grouping import Alert, Timing
from biomem.alerts.model import AlertStatus
from biomem.alerts.outbox import Notification

__all__ = ["Restored", "expire_restored", "restore", "told_firing"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Restored:
    """An alert some receivers were last told is firing."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    told_to: frozenset[str]  # the receivers whose newest word on it is "firing"
    told_at: datetime  # when the newest of those notifications was enqueued


def _alerts(note: Notification) -> list[dict[str, Any]]:
    try:
        payload = json.loads(note.payload)
        alerts = payload["alerts"]
        if not isinstance(alerts, list):
            raise TypeError("alerts is not a list")
        return [a for a in alerts if isinstance(a, dict)]
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("alert_restore_bad_payload", notification=note.id, error=str(exc))
        return []


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def told_firing(latest: Iterable[Notification]) -> list[Restored]:
    """The alerts listed as firing in the newest notification of each receiver and group.

    Args:
        latest: the newest notification per (receiver, group), in enqueue order
            (:meth:`~biomem.alerts.outbox.Outbox.latest`). When the grouping
            changed between runs an alert may appear in two of a receiver's
            groups: the later notification is its word on it.
    """
    # (receiver, fingerprint) -> the alert as last listed to that receiver, and when.
    last: dict[tuple[str, str], tuple[dict[str, Any], datetime]] = {}
    for note in latest:
        for alert in _alerts(note):
            fp = alert.get("fingerprint")
            if isinstance(fp, str) and fp:
                last[(note.receiver, fp)] = (alert, note.created_at)
    by_fp: dict[str, tuple[dict[str, Any], set[str], datetime]] = {}
    for (receiver, fp), (alert, at) in last.items():
        if alert.get("status") != AlertStatus.FIRING.value:
            continue
        known = by_fp.get(fp)
        if known is None:
            by_fp[fp] = (alert, {receiver}, at)
        else:
            _, receivers, seen_at = known
            receivers.add(receiver)
            if at > seen_at:
                by_fp[fp] = (alert, receivers, at)
    out: list[Restored] = []
    for fp, (alert, receivers, at) in by_fp.items():
        labels = _strings(alert.get("labels"))
        try:
            starts_at = datetime.fromisoformat(str(alert.get("startsAt")))
        except ValueError:
            log.warning("alert_restore_bad_alert", fingerprint=fp, starts_at=alert.get("startsAt"))
            continue
        if not labels.get("alertname") or starts_at.tzinfo is None:
            log.warning("alert_restore_bad_alert", fingerprint=fp)
            continue
        out.append(
            Restored(
                fingerprint=fp,
                labels=labels,
                annotations=_strings(alert.get("annotations")),
                starts_at=starts_at,
                told_to=frozenset(receivers),
                told_at=at,
            )
        )
    return out


def restore(
    restored: Iterable[Restored],
    *,
    now: float,
    wall: datetime,
    timing: Timing,
    grace_s: float,
    keep: frozenset[str],
) -> Iterator[tuple[Alert, float]]:
    """Each restored alert as the manager's state (already notified, ``told_to`` the
    receivers told) and when its group was last notified, on the clock ``now`` reads.

    Alerts named in ``keep`` wait for no source: they stay firing until resolved.
    """
    for item in restored:
        alert = Alert(
            fingerprint=item.fingerprint,
            labels=item.labels,
            annotations=item.annotations,
            starts_at=item.starts_at,
            notified=AlertStatus.FIRING,
            restored_until=None if item.labels["alertname"] in keep else now + grace_s,
            told_to=item.told_to,
        )
        # The last notification on this clock, so group_interval and repeat go on;
        # but a repeat waits until the grace and a settle time are over, when what
        # still fires is known.
        told = now - max(0.0, (wall - item.told_at).total_seconds())
        hold = now + grace_s + timing.resolve_settle_s - timing.repeat_interval_s
        log.info(
            "alert_restored",
            alertname=item.labels["alertname"],
            fingerprint=item.fingerprint,
            receivers=sorted(item.told_to),
            grace_s=None if alert.restored_until is None else grace_s,
        )
        yield alert, min(now, max(told, hold))


def expire_restored(alerts: Iterable[Alert], now: float, wall: datetime) -> None:
    """Resolve the restored alerts no source fired again before their grace ended."""
    for alert in alerts:
        if alert.restored_until is None or now < alert.restored_until:
            continue
        alert.restored_until = None
        if alert.status is AlertStatus.FIRING:
            alert.status, alert.ends_at, alert.resolved_mono = AlertStatus.RESOLVED, wall, now
            log.info(
                "alert_restore_expired",
                alertname=alert.labels["alertname"],
                fingerprint=alert.fingerprint,
            )
