"""The alert webhook receiver down for a whole incident, then up: every notification waits
in the durable outbox and arrives once, in order, signed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from biomem.alerts import verify_signature
from tests.chaos.audit import recovery_story
from tests.chaos.data import jsonl_dataset
from tests.chaos.figures import round_s
from tests.chaos.harness import wait_for
from tests.chaos.scenario import WEBHOOK_SECRET, Scenario

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def undelivered(s: Scenario) -> int | None:
    assert s.daemon is not None
    response = s.daemon.get("/health/alerts")
    return None if response is None else int(response.json()["undelivered"])


def active_alerts(s: Scenario) -> list[dict[str, Any]] | None:
    assert s.daemon is not None
    response = s.daemon.get("/health/alerts")
    return None if response is None else list(response.json()["active"])


def test_webhook_down(scenario: Scenario) -> None:
    """Nothing listens at the webhook URL while Ollama fails and recovers; /health/alerts
    counts the undelivered notifications; once the receiver is up they all arrive, each
    once, firing before resolved, and the outbox ends empty."""
    s = scenario
    s.with_ollama(behind_proxy=True)
    assert s.proxy is not None
    data, uids = jsonl_dataset(s.tmp_path, 100)
    s.ingest_file(data)
    s.start(receiver=False)  # the receiver's port is reserved, nothing listens on it
    wait_for(
        lambda: s.watch.clean_run("short_term", started_after=datetime(2000, 1, 1, tzinfo=UTC)),
        timeout_s=120,
        what="a healthy first pass",
    )
    s.fault("the webhook receiver is down")
    s.proxy.refuse()  # the incident to tell the receiver about
    t_incident = time.monotonic()
    wait_for(lambda: (undelivered(s) or 0) > 0, timeout_s=60, what="undelivered notifications")
    assert s.t_fault is not None
    s.figures.time_to_detect_s = round_s(time.monotonic() - s.t_fault)
    s.figures.detected_by = "/health/alerts: undelivered > 0 (notifications wait in the outbox)"
    wait_for(lambda: time.monotonic() - t_incident >= 6, timeout_s=10, what="the incident")
    s.proxy.heal()  # the incident ends while the receiver is still down
    s.wait_troubled("ollama")
    wait_for(
        lambda: s.watch.holds_since(lambda smp: smp.healthy("ollama"), after=t_incident),
        timeout_s=60,
        what="ollama healthy again",
    )
    wait_for(
        lambda: (
            (active := active_alerts(s)) is not None
            and not any(a["labels"].get("component") == "ollama" for a in active)
        ),
        timeout_s=60,
        what="the incident's alerts resolved",
    )
    queued = undelivered(s)
    assert queued, "the resolution did not queue any notification"

    s.receiver.start()
    s.receiver_started = True
    s.heal("the receiver listens again")
    wait_for(lambda: undelivered(s) == 0, timeout_s=180, what="the outbox drained")
    assert s.t_heal is not None
    s.figures.time_to_recover_s = round_s(time.monotonic() - s.t_heal)
    s.figures.recovered_by = "/health/alerts: undelivered back to 0, receiver got everything"
    s.settle(["short_term", "long_term"])
    s.stop()
    audit = s.audit(uids)

    keys = [headers["idempotency-key"] for _, headers, _ in s.receiver.requests]
    assert len(keys) == len(set(keys)), "a notification was delivered twice"
    for _, headers, body in s.receiver.requests:
        assert verify_signature(
            WEBHOOK_SECRET,
            headers["x-biomem-timestamp"],
            body,
            headers["x-biomem-signature"],
            now=datetime.now(UTC).timestamp(),
        )
    order = [(a["fingerprint"], a["status"]) for _, a in s.receiver.alerts()]
    for fingerprint, status in order:
        if status == "resolved":
            first_firing = order.index((fingerprint, "firing"))
            assert first_firing < order.index((fingerprint, "resolved")), order
    assert s.receiver.about("ollama", "firing") and s.receiver.about("ollama", "resolved")
    assert audit.outbox.get("pending", 0) == 0 and audit.outbox.get("failed", 0) == 0
    names = sorted({a["labels"]["alertname"] for a in s.receiver.about("ollama", "firing")})
    s.figures.facts["outbox"] = audit.outbox
    s.figures.say(
        f"With nothing listening at the webhook URL, Ollama refused connections for 6 s and came "
        f"back; /health/alerts counted undelivered notifications "
        f"{s.figures.time_to_detect_s} s into the incident ({queued} waiting once it was over)."
    )
    s.figures.say(
        f"When the receiver started, the outbox drained in {s.figures.time_to_recover_s} s "
        f"(backoff with jitter, capped): {len(keys)} notification(s), each once, signed, "
        f"{', '.join(names)} firing for ollama before its resolution."
    )
    # The incident itself is an Ollama outage: ollama_restart may act on it when five health
    # checks in a row land inside those 6 s. The receiver being down never is a component's.
    recovery_story(
        s.figures, audit, components=("ollama",), fault=s.fault_window(),
        quiet_reason=(
            "a receiver that is down is the outbox's to handle, and the 6 s Ollama incident "
            "ended before ollama_restart's five unhealthy checks in a row"
        ),
    )  # fmt: skip
