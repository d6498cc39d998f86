"""One chaos scenario's course: configure, start the daemon, fault, heal, settle, stop, audit.

A :class:`Scenario` owns the fake Ollama (optionally behind a fault proxy),
the webhook receiver, the daemon and its health watcher, and the scenario's
:class:`~tests.chaos.figures.Figures`. Schedules, breaker waits and the
health interval are short (seconds), so a scenario takes tens of seconds
instead of hours; the code paths are the production ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos.audit import StoreAudit, assert_complete, audit_store
from tests.chaos.figures import Figures, round_s
from tests.chaos.harness import Daemon, Receiver, Sample, Watcher, wait_for
from tests.conftest import run_cli
from tests.fakes.ollama import FakeOllama
from tests.fakes.proxy import FaultProxy

__all__ = ["BASE_CONFIG", "Scenario", "toml_text"]

WEBHOOK_SECRET = "chaos-receiver-secret-0123456789"
LLM_STAGES = ("short_term", "long_term")
# Events in the daemon's log that mean a bug escaped a loop (and APScheduler's
# "Job ... raised an exception", checked apart: a job that does not catch-log-continue).
CRASH_EVENTS = ("job_crashed", "alerting_step_crashed", "alert_adapter_failed")

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "schedules": {
        "ingest": "1s",
        "working_memory": "2s",
        "short_term": "2s",
        "consolidation": "3s",
        "long_term": "2s",
        "dreams": "5s",
        "homeostasis": "5s",
        "writeback": "2s",
        "dead_letter_replay": "1s",
    },
    # The machine is shared and busy: CPU and memory must not decide the story.
    "thresholds": {
        "cpu_degraded_percent": 99.0,
        "cpu_critical_percent": 100.0,
        "memory_degraded_percent": 98.0,
        "memory_critical_percent": 99.5,
    },
    "ingest": {"batch_size": 50},
    "pipeline.short_term": {"batch_size": 16},
    "pipeline.long_term": {"batch_size": 16},
    "pipeline.dreams": {"per_run": 2},
    # Quick to open, quick to try again: a breaker wait of 2 s instead of 30.
    "resilience.postgresql": {
        "window_size": 6,
        "minimum_calls": 2,
        "open_seconds": 2.0,
        "open_multiplier": 1.0,
        "max_attempts": 2,
        "base_delay_seconds": 0.1,
        "max_delay_seconds": 0.5,
        "retry_timeout_seconds": 5.0,
        # Deadlines in seconds, not a minute: a call into a partition gives up within the
        # scenario (the statements here take milliseconds).
        "connect_timeout_seconds": 2.0,
        "statement_timeout_seconds": 10.0,
        "call_timeout_seconds": 15.0,
    },
    "resilience.duckdb": {
        "open_seconds": 2.0,
        "open_multiplier": 1.0,
    },
    "resilience.ollama": {
        "window_size": 10,
        "minimum_calls": 3,
        "open_seconds": 2.0,
        "open_multiplier": 1.0,
        "max_attempts": 2,
        "base_delay_seconds": 0.1,
        "max_delay_seconds": 2.5,
        "retry_timeout_seconds": 5.0,
    },
}


def toml_text(config: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for a two-level config (section names may be dotted)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    parts = []
    for section, keys in config.items():
        parts.append(f"[{section}]")
        parts += [f"{key} = {value(v)}" for key, v in keys.items()]
        parts.append("")
    return "\n".join(parts)


class Scenario:
    """The parts and the timeline of one scenario."""

    def __init__(self, tmp_path: Path, figures: Figures) -> None:
        self.tmp_path = tmp_path
        self.figures = figures
        self.store_path = Path(os.environ["DUCKDB_PATH"])
        self.config: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE_CONFIG.items()}
        self.extra_env: dict[str, str] = {}
        self.ollama: FakeOllama | None = None
        self.proxy: FaultProxy | None = None
        self.receiver = Receiver()
        self.receiver_started = False
        # Anything else with a stop() to call at the end (a proxy to PostgreSQL, a producer).
        self.others: list[Any] = []
        self.daemon: Daemon | None = None
        self.watcher: Watcher | None = None
        self.t_fault: float | None = None
        self.t_heal: float | None = None
        self.wall_fault: datetime | None = None
        self.wall_heal: datetime | None = None

    # ---- set-up ------------------------------------------------------------------------

    def configure(self, section: str, **keys: Any) -> None:
        self.config.setdefault(section, {}).update(keys)

    def with_ollama(self, fake: FakeOllama | None = None, *, behind_proxy: bool = False) -> None:
        self.ollama = (fake or FakeOllama()).start()
        if behind_proxy:
            self.proxy = FaultProxy(self.ollama.host, self.ollama.port).start()

    @property
    def ollama_url(self) -> str:
        if self.proxy is not None:
            return f"http://{self.proxy.host}:{self.proxy.port}"
        assert self.ollama is not None
        return self.ollama.url

    def env(self) -> dict[str, str]:
        config = self.tmp_path / "biomem.toml"
        config.write_text(toml_text(self.config), encoding="utf-8")
        env = {
            "DUCKDB_PATH": str(self.store_path),
            "BIOMEM_CONFIG_FILE": str(config),
            "OLLAMA_URL": self.ollama_url if self.ollama is not None else "http://127.0.0.1:1",
            "OLLAMA_MAX_CONCURRENCY": "4",
            "OLLAMA_TIMEOUT_SECONDS": "3",
            "HEALTH_CHECK_INTERVAL_SECONDS": "1",
            "HEALTH_ALERT_WEBHOOK_URL": self.receiver.url,
            "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ALERT_GROUP_WAIT": "1s",
            # Changes to a notified group (a resolution) wait this long: 5 minutes by
            # default, which would outlast every scenario's deadline.
            "ALERT_GROUP_INTERVAL": "2s",
            "ALERT_RESOLVE_SETTLE": "2s",
            "BIOMEM_LOG_LEVEL": "info",
        }
        env.update(self.extra_env)
        return env

    def ingest_file(self, path: Path) -> None:
        """`biomem ingest FILE` before the daemon starts."""
        result = run_cli("ingest", str(path), env=self.env(), timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]

    def start(self, *, receiver: bool = True, wait: bool = True) -> Daemon:
        """Start the receiver (unless told not to), the daemon and (``wait``: once it serves
        /livez) the watcher."""
        if receiver and not self.receiver_started:
            self.receiver.start()
            self.receiver_started = True
        if self.daemon is None:
            self.daemon = Daemon(self.env(), self.tmp_path / "daemon.log")
        self.daemon.start(wait=wait)
        if wait and self.watcher is None:
            self.watcher = Watcher(self.daemon).start()
        return self.daemon

    # ---- timeline ----------------------------------------------------------------------

    def fault(self, what: str) -> None:
        self.t_fault, self.wall_fault = time.monotonic(), datetime.now(UTC)
        self.figures.facts.setdefault("timeline", []).append(("fault", what))

    def heal(self, what: str) -> None:
        self.t_heal, self.wall_heal = time.monotonic(), datetime.now(UTC)
        self.figures.facts.setdefault("timeline", []).append(("heal", what))
        if self.t_fault is not None:
            self.figures.facts["fault_lasted_s"] = round_s(self.t_heal - self.t_fault)

    def fault_window(self) -> tuple[datetime, datetime] | None:
        """When the fault began and ended (wall clock), once both happened."""
        if self.wall_fault is None or self.wall_heal is None:
            return None
        return self.wall_fault, self.wall_heal

    @property
    def watch(self) -> Watcher:
        assert self.watcher is not None, "start() first"
        return self.watcher

    def wait_troubled(self, component: str, timeout_s: float = 60) -> Sample:
        """Wait until /health reports ``component`` not healthy (or its breaker open)."""
        assert self.t_fault is not None
        after = self.t_fault
        return wait_for(
            lambda: self.watch.first(lambda s: s.troubled(component), after=after),
            timeout_s=timeout_s,
            what=f"/health to report {component} in trouble",
        )

    def detected(self, component: str) -> float | None:
        """Fault → /health first reports ``component`` in trouble; recorded in the figures."""
        assert self.t_fault is not None
        sample = self.watch.first(lambda s: s.troubled(component), after=self.t_fault)
        if sample is None:
            return None
        seconds = sample.t - self.t_fault
        self.figures.time_to_detect_s = round_s(seconds)
        self.figures.detected_by = (
            f"/health: {component} {sample.components.get(component)},"
            f" breaker {sample.breakers.get(component, 'n/a')}"
        )
        return seconds

    def wait_recovered(self, component: str, timeout_s: float = 120) -> float:
        """Heal → /health reports ``component`` healthy with its breaker closed, for good."""
        assert self.t_heal is not None
        after = self.t_heal

        def since() -> Sample | None:
            sample = self.watch.holds_since(lambda s: s.healthy(component), after=after)
            # "For good": it must also hold in the newest sample, a few polls on.
            samples = self.watch.snapshot()
            if sample is None or samples[-1].t - sample.t < 1.0:
                return None
            return sample

        sample = wait_for(since, timeout_s=timeout_s, what=f"{component} healthy again")
        return sample.t - after

    def settle(
        self,
        stages: Sequence[str],
        *,
        after: datetime | None = None,
        llm: bool = True,
        timeout_s: float = 180,
    ) -> dict[str, dict[str, Any]]:
        """Wait for a clean run of each stage, in order, each started after the one before
        it finished (the first after ``after``, default the heal); then no open dead letter."""
        cursor = after or self.wall_heal or datetime.now(UTC)
        runs: dict[str, dict[str, Any]] = {}
        for stage in stages:
            since = cursor
            run = wait_for(
                lambda stage=stage, since=since: self.watch.clean_run(
                    stage, started_after=since, llm=llm and stage in LLM_STAGES
                ),
                timeout_s=timeout_s,
                what=f"a clean {stage} run started after {since:%H:%M:%S}",
            )
            runs[stage] = run
            cursor = run["finished"] or cursor
        wait_for(
            lambda: (
                self.watch.poll().dead_letters.get("pending", 0) == 0
                and self.watch.poll().dead_letters.get("replaying", 0) == 0
            ),
            timeout_s=timeout_s,
            what="no pending dead letter",
        )
        return runs

    def alerts_sentence(self) -> str:
        """What the receiver heard, per component, as one sentence for the report."""
        heard: dict[str, dict[str, set[str]]] = {}
        for _, alert in self.receiver.alerts():
            component = alert["labels"].get("component", "?")
            entry = heard.setdefault(component, {"names": set(), "statuses": set()})
            entry["names"].add(alert["labels"]["alertname"])
            entry["statuses"].add(alert["status"])
        self.figures.notifications_sent = len(self.receiver.requests)
        if not heard:
            return "The receiver got no notification."
        parts = []
        for component, entry in sorted(heard.items()):
            statuses = " then ".join(s for s in ("firing", "resolved") if s in entry["statuses"])
            cpu = component == "system_resources" and entry["names"] == {"ComponentDegraded"}
            note = " (the shared test machine's CPU)" if cpu else ""
            parts.append(f"{'/'.join(sorted(entry['names']))} about {component}{note}, {statuses}")
        return (
            f"The receiver got {len(self.receiver.requests)} notification(s): "
            + "; ".join(parts)
            + "."
        )

    # ---- the end -----------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM; the daemon must exit 0 with no crash in its log."""
        assert self.daemon is not None
        if self.watcher is not None:
            self.watcher.stop()
        code = self.daemon.stop()
        assert code == 0, f"biomem exited {code}:\n{self.daemon.log_tail()}"
        crashes = [
            e
            for e in self.daemon.log_events()
            if e.get("event") in CRASH_EVENTS or "raised an exception" in str(e.get("event"))
        ]
        assert not crashes, f"a loop caught a bug: {crashes[:3]}"

    def audit(self, expected: set[str], *, llm: bool = True) -> StoreAudit:
        """Audit the store against the source, record the figures, assert completeness."""
        audit = audit_store(
            self.store_path, expected, postgres_url=self.extra_env.get("POSTGRES_DB_URL")
        )
        self.figures.source_items = len(expected)
        self.figures.items_lost = len(audit.lost)
        self.figures.items_duplicated = audit.duplicated
        self.figures.notifications_sent = len(self.receiver.requests)
        self.figures.facts["store"] = audit.summary()
        assert_complete(audit, llm=llm)
        return audit

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.daemon is not None:
            self.daemon.close()
        for other in reversed(self.others):
            other.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.ollama is not None:
            self.ollama.stop()
        self.receiver.close()
