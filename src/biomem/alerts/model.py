"""Alerts, silences and receivers, and the Alertmanager webhook (version 4) payload.

An alert is identified by its *fingerprint*: the SHA-256 of its sorted
labels, so firing the same labels twice is the same alert. Labels and
annotations are redacted on the way in (:func:`clean_labels`), so a secret
planted in an annotation never reaches memory, the outbox or a receiver.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from biomem.resilience.redact import mask_url, redact_value

__all__ = [
    "ZERO_TIME",
    "AlertStatus",
    "AlertView",
    "Matchers",
    "Receiver",
    "Severity",
    "build_payload",
    "clean_labels",
    "fingerprint",
    "group_key",
    "rfc3339",
]

ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt while an alert fires


class Severity(StrEnum):
    """How bad an alert is, mildest first."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    """An alert's status as receivers see it."""

    FIRING = "firing"
    RESOLVED = "resolved"


def clean_labels(labels: Mapping[str, object], *, what: str = "labels") -> dict[str, str]:
    """Labels (or annotations) as redacted text, with a valid severity when labels.

    Raises:
        ValueError: labels without ``alertname``, or an unknown ``severity``.
    """
    # redact_value masks values under secret-named keys and secrets inside text.
    redacted = redact_value(what, {str(k): str(v) for k, v in labels.items()})
    out = {str(k): str(v) for k, v in redacted.items()}
    if what == "labels":
        if not out.get("alertname"):
            raise ValueError("alert labels need a non-empty 'alertname'")
        severity = out.setdefault("severity", Severity.WARNING.value)
        if severity not in Severity.__members__.values():
            choices = ", ".join(s.value for s in Severity)
            raise ValueError(f"alert severity must be one of {choices}, got {severity!r}")
    return out


def fingerprint(labels: Mapping[str, str]) -> str:
    """The alert's identity: SHA-256 (hex) of its labels sorted by name."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def group_key(group_labels: Mapping[str, str]) -> str:
    """Alertmanager's group key for the root route: ``{}:{alertname="X"}``."""
    inner = ",".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(group_labels.items())
    )
    return "{}:{" + inner + "}"


def rfc3339(when: datetime | None) -> str:
    """RFC 3339 in UTC with a ``Z``; :data:`ZERO_TIME` for None."""
    if when is None:
        return ZERO_TIME
    if when.tzinfo is None:
        raise ValueError(f"alert times must be timezone-aware, got {when!r}")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


_LABEL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Matchers:
    """Label matchers: ``{"label": "value"}`` matches exactly, ``{"label": "=~regex"}`` by
    full regular expression; labels match when every matcher does (no matcher: all match).

    Raises:
        ValueError: a label that is not a label name, or a bad regular expression.
    """

    __slots__ = ("_exact", "_patterns")

    def __init__(self, matchers: Mapping[str, str]) -> None:
        self._exact: dict[str, str] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}
        for name, value in matchers.items():
            if not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"matcher label {name!r} is not a label name")
            if not isinstance(value, str):
                raise ValueError(f"matcher {name!r}: the value must be text")
            if value.startswith("=~"):
                try:
                    self._patterns[name] = re.compile(value[2:])
                except re.error as exc:
                    raise ValueError(f"matcher {name!r}: bad regular expression ({exc})") from None
            else:
                self._exact[name] = value

    def __call__(self, labels: Mapping[str, str]) -> bool:
        for name, value in self._exact.items():
            if labels.get(name, "") != value:
                return False
        return all(p.fullmatch(labels.get(n, "")) is not None for n, p in self._patterns.items())

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def as_dict(self) -> dict[str, str]:
        return {**self._exact, **{n: "=~" + p.pattern for n, p in self._patterns.items()}}


@dataclass(frozen=True, slots=True, kw_only=True)
class Receiver:
    """A webhook that receives notifications.

    Attributes:
        name: names the receiver in payloads, the outbox and its breaker.
        url: where notifications are POSTed (printed with its path masked).
        secret: signs each request (see :mod:`biomem.alerts.webhook`); None: unsigned.
        timeout_s: the whole request's timeout.
        send_resolved: whether resolved notifications go to this receiver.
        matchers: routing: only alerts whose labels match (see :class:`Matchers`); none: all.
    """

    name: str
    url: str
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    send_resolved: bool = True
    matchers: Mapping[str, str] = field(default_factory=dict)
    _route: Matchers = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_route", Matchers(self.matchers))
        if not self.name:
            raise ValueError("Receiver.name must be non-empty")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"Receiver.url must be an http(s) URL, got {mask_url(self.url)}")
        if not self.timeout_s > 0:
            raise ValueError(f"Receiver.timeout_s must be > 0, got {self.timeout_s!r}")

    def __repr__(self) -> str:
        return f"Receiver(name={self.name!r}, url={mask_url(self.url, hide_path=True)!r})"

    def accepts(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with ``labels`` is routed to this receiver."""
        return self._route(labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertView:
    """One alert as it goes into a notification."""

    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None = None

    def as_dict(self, generator_url: str) -> dict[str, Any]:
        """The alert in webhook v4 form."""
        return {
            "status": self.status.value,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "generatorURL": generator_url,
            "fingerprint": self.fingerprint,
        }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def build_payload(
    *,
    receiver: str,
    group_labels: Mapping[str, str],
    alerts: Iterable[AlertView],
    external_url: str = "",
) -> dict[str, Any]:
    """An Alertmanager webhook (version 4) body: firing if any alert fires, else resolved."""
    views = list(alerts)
    external = mask_url(external_url) if external_url else ""
    generator = f"{external.rstrip('/')}/health/alerts" if external else ""
    firing = any(v.status is AlertStatus.FIRING for v in views)
    return {
        "version": "4",
        "groupKey": group_key(group_labels),
        "truncatedAlerts": 0,
        "status": (AlertStatus.FIRING if firing else AlertStatus.RESOLVED).value,
        "receiver": receiver,
        "groupLabels": dict(sorted(group_labels.items())),
        "commonLabels": _common([v.labels for v in views]),
        "commonAnnotations": _common([v.annotations for v in views]),
        "externalURL": external,
        "alerts": [v.as_dict(generator) for v in views],
    }
