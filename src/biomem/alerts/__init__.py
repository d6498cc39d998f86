"""Alerting: Alertmanager-style grouping and silencing, a durable outbox, signed webhooks.

Wiring (the daemon)::

    outbox = Outbox(store); outbox.ensure_schema()
    manager = AlertManager(clock=SYSTEM_CLOCK, outbox=outbox, receivers=receivers)
    deliverer = WebhookDeliverer(outbox, receivers, clock=SYSTEM_CLOCK,
                                 wall_clock=utc_now, http=httpx.Client())
    adapters = AlertAdapters(manager)      # listeners for health, breakers, dead letters
    every second: manager.tick(); deliverer.deliver_due()
"""

from __future__ import annotations

from biomem.alerts.adapters import AlertAdapters
from biomem.alerts.manager import AlertManager, AlertStats, WallClock
from biomem.alerts.model import (
    AlertStatus,
    AlertView,
    Receiver,
    Severity,
    Silence,
    build_payload,
    fingerprint,
)
from biomem.alerts.outbox import Notification, NotificationStatus, Outbox
from biomem.alerts.webhook import DeliveryReport, WebhookDeliverer, sign, verify_signature

__all__ = [
    "AlertAdapters",
    "AlertManager",
    "AlertStats",
    "AlertStatus",
    "AlertView",
    "DeliveryReport",
    "Notification",
    "NotificationStatus",
    "Outbox",
    "Receiver",
    "Severity",
    "Silence",
    "WallClock",
    "WebhookDeliverer",
    "build_payload",
    "fingerprint",
    "sign",
    "verify_signature",
]
