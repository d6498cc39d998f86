"""The alerting service of the daemon: sources wired to the manager, a loop delivering.

Sources: health status transitions (the monitor), breakers opening and
closing (every breaker of the guards), dead letters turning dead (the DLQ),
resource thresholds (each new health snapshot) and recovery escalations
(:meth:`AlertService.escalate`, called by the recovery engine). A
background loop ticks the manager (grouping, repeats, settle) and delivers
due notifications from the durable outbox every second; a failure of either
is logged and the loop goes on.

Receivers: HEALTH_ALERT_WEBHOOK_URL is the receiver ``default`` (signed
with ALERT_WEBHOOK_SECRET); ``[[alerts.receivers]]`` in the TOML file adds
more, each with its own secret and label matchers for routing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from biomem.alerts import (
    AlertAdapters,
    AlertManager,
    AlertStats,
    NotificationStatus,
    Outbox,
    Receiver,
    SilenceStore,
    WebhookDeliverer,
)
from biomem.alerts.adapters import NOT_REFIRED
from biomem.app import App
from biomem.bounded import BoundedReader
from biomem.config import AlertSettings
from biomem.health.model import HealthSnapshot
from biomem.health.monitor import HealthMonitor
from biomem.logging import get_logger
from biomem.resilience.errors import BiomemError

__all__ = ["AlertService", "receivers_from_settings"]

log = get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def receivers_from_settings(settings: AlertSettings) -> list[Receiver]:
    """``default`` (HEALTH_ALERT_WEBHOOK_URL) first, then the TOML file's receivers."""
    out: list[Receiver] = []
    if settings.webhook_url is not None:
        secret = settings.webhook_secret
        out.append(
            Receiver(
                name="default",
                url=settings.webhook_url,
                secret=secret.get_secret_value() if secret is not None else None,
            )
        )
    for item in settings.receivers:
        out.append(
            Receiver(
                name=item.name,
                url=item.url,
                secret=item.secret.get_secret_value() if item.secret is not None else None,
                timeout_s=item.timeout_seconds,
                send_resolved=item.send_resolved,
                matchers=dict(item.matchers),
            )
        )
    return out


class AlertService:
    """Alerts for one daemon: manager, outbox, deliverer and the sources feeding them."""

    def __init__(self, app: App, monitor: HealthMonitor, *, external_url: str = "") -> None:
        settings = app.settings.alerts
        self.outbox = Outbox(app.store)
        self.outbox.ensure_schema()
        silences = SilenceStore(app.store)
        silences.ensure_schema()
        self.receivers = receivers_from_settings(settings)
        # Alerts told firing before a restart wait this long for their source to fire
        # them again: two health checks (the first may run before a dependency answers)
        # and at least the group wait, which the README sizes to how long an incident's
        # alerts take to fire (a breaker opens some checks after the check fails).
        grace = settings.restore_grace_seconds
        if grace is None:
            grace = max(2 * app.settings.health.check_interval_seconds, settings.group_wait_seconds)
        self.manager = AlertManager(
            clock=app.guards.clock,
            wall_clock=_now,
            outbox=self.outbox,
            receivers=self.receivers,
            group_wait_s=settings.group_wait_seconds,
            group_interval_s=settings.group_interval_seconds,
            repeat_interval_s=settings.repeat_interval_seconds,
            resolve_settle_s=settings.resolve_settle_seconds,
            external_url=external_url,
            # One process, one incident, one notification: alerts that fire
            # together are grouped whatever their name.
            group_by=(),
            silence_store=silences,
            restore_grace_s=grace,
            restore_keep=NOT_REFIRED,
        )
        self._http = httpx.Client()
        self.deliverer = WebhookDeliverer(
            self.outbox, self.receivers, clock=app.guards.clock, wall_clock=_now, http=self._http
        )
        self._monitor = monitor
        self._adapters = AlertAdapters(self.manager)
        monitor.add_listener(self._adapters.on_health_transition)
        for breaker in app.guards.breakers.all():
            breaker.add_listener(self._adapters.on_breaker_event)
        app.dlq.add_listener(self._adapters.on_dead_letter_dead)
        self._seen: HealthSnapshot | None = None
        self._reader = BoundedReader(timeout_s=2.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- sources

    def escalate(self, *, rule: str, component: str, summary: str) -> None:
        """Raise a critical ``RecoveryEscalated`` alert (labels rule, component).

        It stays firing until the component is healthy again: the first
        healthy result of ``component`` checked after this call resolves it.
        Called by the recovery engine when a rule has given up.
        """
        self._adapters.on_escalation(rule=rule, component=component, summary=summary, at=_now())

    def _observe(self) -> None:
        snapshot = self._monitor.snapshot()
        if snapshot is not self._seen:  # a new monitor pass: read it once
            self._seen = snapshot
            self._adapters.on_snapshot(snapshot)

    # ----------------------------------------------------------------- surfaces

    def snapshot(self) -> dict[str, Any]:
        """What /health/alerts shows; the outbox read waits at most 2 s for a busy store."""
        return self.manager.snapshot(read=self._reader.call)

    def add_silence(
        self, *, matchers: Mapping[str, str], ends_at: datetime, comment: str, created_by: str
    ) -> dict[str, Any]:
        """Store a silence and put it in force; its JSON form.

        Raises:
            ValueError: bad matchers or an end not in the future.
        """
        silence = self.manager.silence(
            matchers, ends_at=ends_at, comment=comment, created_by=created_by
        )
        return silence.as_dict(_now())

    def remove_silence(self, silence_id: str) -> dict[str, Any] | None:
        """End a silence now; its JSON form, or None when no active silence has that id."""
        ended = self.manager.unsilence(silence_id)
        return None if ended is None else ended.as_dict(_now())

    def stats(self) -> AlertStats:
        """Alerts firing and outbox counts (reads the store)."""
        return self.manager.stats()

    def firing_by_severity(self) -> dict[str, int]:
        """Alerts firing, not silenced, by severity (memory only)."""
        return self.manager.firing_by_severity()

    def pending_notifications(self) -> int:
        """Notifications waiting in the outbox (reads the store)."""
        return self.outbox.counts()[NotificationStatus.PENDING]

    def delivery_attempts(self) -> dict[tuple[str, str], int]:
        """Delivery attempts since start by (receiver, ``sent`` | ``failed``)."""
        return self.deliverer.attempts()

    # ----------------------------------------------------------------- loop

    def step(self) -> None:
        """One snapshot look, one tick and one delivery pass; errors are logged, never raised."""
        try:
            self._observe()
            self.manager.tick()
            if self.receivers:
                self.deliverer.deliver_due(limit=100)
        except BiomemError as exc:
            log.error("alerting_step_failed", error=str(exc))
        except Exception:  # the loop never dies; a bug is logged whole
            log.exception("alerting_step_crashed")

    def start(self, interval_s: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.step()

        self._thread = threading.Thread(target=loop, name="alerting", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        # Whatever is still undelivered stays in the outbox for the next start:
        # no last delivery attempt here, shutdown must not wait on a receiver.
        self._http.close()
