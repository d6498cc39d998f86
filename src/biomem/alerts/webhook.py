"""Webhook delivery of the outbox: signed POSTs, backoff, a breaker per receiver.

Signing: with a receiver secret, each request carries ::

    X-Biomem-Timestamp: <unix seconds>
    X-Biomem-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>
    Idempotency-Key: <notification id>   (always; the same on every retry)

A receiver verifies a request by recomputing the HMAC over the timestamp
header, a dot and the raw body bytes, comparing in constant time
(:func:`verify_signature` does both), and **rejects replays**: a timestamp
more than 5 minutes from its own clock (either way) is refused, and an
``Idempotency-Key`` it has already processed is acknowledged (2xx) without
acting again. Delivery is at least once: a crash after the POST but before
the outbox records it sends the same notification again, with the same key.

Outcomes: 2xx delivered; network error, timeout, 5xx, 408 and 429 are retried
without limit after ``full_jitter`` backoff capped at ``max_delay_s`` (a
``Retry-After`` header wins, capped too); any other 4xx is FAILED with its
code and a redacted body excerpt, never retried. While a receiver's breaker
is open its notifications stay pending, untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

import httpx
import structlog

from biomem.alerts.manager import WallClock
from biomem.alerts.model import Receiver
from biomem.alerts.outbox import Notification, Outbox
from biomem.resilience.breaker import BreakerConfig, BreakerRegistry, CircuitBreaker
from biomem.resilience.clock import Clock
from biomem.resilience.errors import CircuitOpenError
from biomem.resilience.redact import redact_text
from biomem.resilience.retry import full_jitter

__all__ = [
    "DEFAULT_BREAKER",
    "DeliveryReport",
    "WebhookDeliverer",
    "sign",
    "verify_signature",
]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

DEFAULT_BREAKER: Final = BreakerConfig(
    window_size=10, minimum_calls=3, failure_rate_threshold=0.5, wait_duration_open_s=30.0
)
_RETRYABLE_4XX: Final = frozenset({408, 429})
_EXCERPT: Final = 300


def sign(secret: str, timestamp: str, body: bytes | str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + raw, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes | str,
    signature: str,
    *,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """Whether ``signature`` is valid for ``body`` at ``timestamp`` and fresh at ``now``.

    ``now`` is unix seconds; a timestamp more than ``tolerance_s`` away from it
    (a replay, or a skewed clock) is refused, as is a malformed timestamp.
    """
    try:
        stamp = int(str(timestamp))
    except ValueError:
        return False
    if abs(now - stamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, str(stamp), body), signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    """What one :meth:`WebhookDeliverer.deliver_due` did, as notification ids."""

    delivered: tuple[str, ...] = ()
    retrying: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # breaker open, or an earlier row of the same alert held back


@dataclass(slots=True)
class _Tally:
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def report(self) -> DeliveryReport:
        return DeliveryReport(
            delivered=tuple(self.delivered),
            retrying=tuple(self.retrying),
            failed=tuple(self.failed),
            skipped=tuple(self.skipped),
        )


def _retry_after_s(response: httpx.Response, wall: datetime) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - wall).total_seconds())


class WebhookDeliverer:
    """Sends due outbox notifications to their receivers.

    Args:
        outbox: where notifications wait.
        receivers: by name; a row for an unknown receiver stays pending.
        clock: the breakers' clock.
        wall_clock: for ``next_attempt_at``, ``delivered_at`` and the signature timestamp.
        http: the injected client (its own timeouts are overridden per receiver).
        max_delay_s: the cap on backoff between attempts.
        base_delay_s: the first backoff ceiling (doubles each attempt).
        breakers: where to get one breaker per receiver (``alert_webhook:<name>``).
        rng: the jitter source.
    """

    def __init__(
        self,
        outbox: Outbox,
        receivers: Sequence[Receiver],
        *,
        clock: Clock,
        wall_clock: WallClock,
        http: httpx.Client,
        max_delay_s: float = 300.0,
        base_delay_s: float = 1.0,
        breakers: BreakerRegistry | None = None,
        breaker_config: BreakerConfig = DEFAULT_BREAKER,
        rng: random.Random | None = None,
    ) -> None:
        if not max_delay_s > 0 or not base_delay_s > 0:
            raise ValueError("max_delay_s and base_delay_s must be > 0")
        self._outbox = outbox
        self._receivers = {r.name: r for r in receivers}
        self._wall = wall_clock
        self._http = http
        self._max_delay = float(max_delay_s)
        self._base_delay = float(base_delay_s)
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter
        self._breakers: dict[str, CircuitBreaker] = {}
        for name in self._receivers:
            breaker_name = f"alert_webhook:{name}"
            self._breakers[name] = (
                breakers.get(breaker_name, breaker_config)
                if breakers is not None
                else CircuitBreaker(breaker_name, breaker_config, clock=clock)
            )
        self.sent_total = 0
        self.failed_total = 0
        self.retried_total = 0
        # Attempts by (receiver, result) since start: "sent" (2xx) and "failed"
        # (every attempt that did not deliver: retried later, or refused for good),
        # as Alertmanager counts notifications and failed notifications.
        self._attempts: dict[tuple[str, str], int] = {}
        for name in self._receivers:
            self._attempts[(name, "sent")] = self._attempts[(name, "failed")] = 0

    def attempts(self) -> dict[tuple[str, str], int]:
        """Delivery attempts since start by (receiver, ``sent`` | ``failed``)."""
        return dict(self._attempts)

    def _count(self, receiver: str, result: str) -> None:
        # Only the delivery thread writes; readers copy the dict.
        self._attempts[(receiver, result)] = self._attempts.get((receiver, result), 0) + 1

    def breaker(self, receiver: str) -> CircuitBreaker:
        return self._breakers[receiver]

    def deliver_due(self, limit: int = 100) -> DeliveryReport:
        """Send up to ``limit`` due notifications, in order per alert and receiver.

        Rounds repeat while they make progress, so a "resolved" queued behind
        its "firing" goes out in the same call once the "firing" is delivered.
        """
        tally = _Tally()
        held: set[str] = set()  # receivers that failed this call: leave the rest for later
        done = 0
        while done < limit:
            batch = [
                n for n in self._outbox.due(self._wall(), limit - done) if n.id not in tally.skipped
            ]
            if not batch:
                break
            progress = False
            for note in batch:
                done += 1
                if note.receiver in held or note.receiver not in self._receivers:
                    tally.skipped.append(note.id)
                    continue
                outcome = self._deliver_one(note)
                getattr(tally, outcome).append(note.id)
                if outcome == "delivered" or outcome == "failed":
                    progress = True
                else:
                    held.add(note.receiver)
            if not progress:
                break
        return tally.report()

    def _headers(self, receiver: Receiver, note: Notification) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "biomem-alerts",
            "Idempotency-Key": note.id,
        }
        if receiver.secret:
            stamp = str(int(self._wall().timestamp()))
            headers["X-Biomem-Timestamp"] = stamp
            headers["X-Biomem-Signature"] = sign(receiver.secret, stamp, note.payload)
        return headers

    def _deliver_one(self, note: Notification) -> str:
        receiver = self._receivers[note.receiver]
        try:
            permit = self._breakers[receiver.name].acquire()
        except CircuitOpenError:
            return "skipped"
        try:
            response = self._http.post(
                receiver.url,
                content=note.payload.encode("utf-8"),
                headers=self._headers(receiver, note),
                timeout=receiver.timeout_s,
            )
        except httpx.HTTPError as exc:
            permit.failure(exc)
            error = f"{type(exc).__name__}: {redact_text(str(exc))}"
            return self._retry(note, error=error, status_code=None, retry_after=None)
        code = response.status_code
        if 200 <= code < 300:
            permit.success()
            self._outbox.mark_delivered(note.id, status_code=code, now=self._wall())
            self.sent_total += 1
            self._count(receiver.name, "sent")
            log.info("alert_delivered", receiver=receiver.name, id=note.id, status=code)
            return "delivered"
        excerpt = " ".join(redact_text(response.text[:_EXCERPT]).split())
        error = f"HTTP {code}: {excerpt}"
        if code >= 500 or code in _RETRYABLE_4XX:
            permit.failure()
            return self._retry(
                note,
                error=error,
                status_code=code,
                retry_after=_retry_after_s(response, self._wall()),
            )
        # The receiver answered, so it is up: a refusal is not a breaker failure.
        permit.success()
        self._outbox.mark_failed(note.id, error=error, status_code=code)
        self.failed_total += 1
        self._count(receiver.name, "failed")
        log.error("alert_delivery_refused", receiver=receiver.name, id=note.id, status=code)
        return "failed"

    def _retry(
        self, note: Notification, *, error: str, status_code: int | None, retry_after: float | None
    ) -> str:
        delay = full_jitter(
            note.attempts,
            base_s=self._base_delay,
            multiplier=2.0,
            cap_s=self._max_delay,
            rng=self._rng,
        )
        if retry_after is not None:
            delay = min(self._max_delay, max(delay, retry_after))
        self._outbox.mark_retry(
            note.id,
            error=error,
            status_code=status_code,
            next_attempt_at=self._wall() + timedelta(seconds=delay),
        )
        self.retried_total += 1
        self._count(note.receiver, "failed")
        log.warning(
            "alert_delivery_retry",
            receiver=note.receiver,
            id=note.id,
            attempts=note.attempts + 1,
            delay_s=round(delay, 3),
            error=error,
        )
        return "retrying"
