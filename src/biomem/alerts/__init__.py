"""Alerting: Alertmanager-style grouping and silencing, a durable outbox, signed webhooks.

Wiring (the daemon)::

    outbox = Outbox(store); outbox.ensure_schema()
    silences = SilenceStore(store); silences.ensure_schema()
    manager = AlertManager(clock=SYSTEM_CLOCK, outbox=outbox, receivers=receivers,
                           silence_store=silences)
    deliverer = WebhookDeliverer(outbox, receivers, clock=SYSTEM_CLOCK,
                                 wall_clock=utc_now, http=httpx.Client())
    adapters = AlertAdapters(manager)      # listeners for health, breakers, dead letters
    every second: adapters.on_snapshot(monitor.snapshot()); manager.tick();
                  deliverer.deliver_due()
"""

from __future__ import annotations

from biomem.alerts.adapters import AlertAdapters
from biomem.alerts.manager import AlertManager, AlertStats, WallClock
from biomem.alerts.model import (
    AlertStatus,
    AlertView,
    Matchers,
    Receiver,
    Severity,
    build_payload,
    fingerprint,
)
from biomem.alerts.outbox import Notification, NotificationStatus, Outbox
from biomem.alerts.silences import Silence, SilenceStore
from biomem.alerts.webhook import DeliveryReport, WebhookDeliverer, sign, verify_signature

__all__ = [
    "AlertAdapters",
    "AlertManager",
    "AlertStats",
    "AlertStatus",
    "AlertView",
    "DeliveryReport",
    "Matchers",
    "Notification",
    "NotificationStatus",
    "Outbox",
    "Receiver",
    "Severity",
    "Silence",
    "SilenceStore",
    "WallClock",
    "WebhookDeliverer",
    "build_payload",
    "fingerprint",
    "sign",
    "verify_signature",
]
