"""The alerting service of the daemon: sources wired to the manager, a loop delivering.

Sources: health status transitions (the monitor), breakers opening and
closing (every breaker of the guards), dead letters turning dead (the DLQ).
A background loop ticks the manager (grouping, repeats, settle) and delivers
due notifications from the durable outbox every second; a failure of either
is logged and the loop goes on.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import httpx

from biomem.alerts import AlertAdapters, AlertManager, Outbox, Receiver, WebhookDeliverer
from biomem.app import App
from biomem.health.monitor import HealthMonitor
from biomem.logging import get_logger
from biomem.resilience.errors import BiomemError

__all__ = ["AlertService"]

log = get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class AlertService:
    """Alerts for one daemon: manager, outbox, deliverer and the sources feeding them."""

    def __init__(self, app: App, monitor: HealthMonitor, *, external_url: str = "") -> None:
        settings = app.settings.alerts
        self.outbox = Outbox(app.store)
        self.outbox.ensure_schema()
        self.receivers: list[Receiver] = []
        if settings.webhook_url is not None:
            secret = settings.webhook_secret
            self.receivers.append(
                Receiver(
                    name="default",
                    url=settings.webhook_url,
                    secret=secret.get_secret_value() if secret is not None else None,
                )
            )
        self.manager = AlertManager(
            clock=app.guards.clock,
            wall_clock=_now,
            outbox=self.outbox,
            receivers=self.receivers,
            group_wait_s=settings.group_wait_seconds,
            repeat_interval_s=settings.repeat_interval_seconds,
            resolve_settle_s=settings.resolve_settle_seconds,
            external_url=external_url,
            # One process, one incident, one notification: alerts that fire
            # together are grouped whatever their name.
            group_by=(),
        )
        self._http = httpx.Client()
        self.deliverer = WebhookDeliverer(
            self.outbox, self.receivers, clock=app.guards.clock, wall_clock=_now, http=self._http
        )
        adapters = AlertAdapters(self.manager)
        monitor.add_listener(adapters.on_health_transition)
        for breaker in app.guards.breakers.all():
            breaker.add_listener(adapters.on_breaker_event)
        app.dlq.add_listener(adapters.on_dead_letter_dead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, Any]:
        """What /health/alerts shows."""
        return self.manager.snapshot()

    def step(self) -> None:
        """One tick and one delivery pass; errors are logged, never raised."""
        try:
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
