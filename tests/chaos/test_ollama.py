"""Ollama faults against the running daemon: refused, hanging, overloaded, talking nonsense.

In each, the pipeline must go on with the fallback heuristics while Ollama is
unusable, say so in /health and in an alert, and redo every fallback row with
the LLM once Ollama is back: at the end no fallback row is left.
"""

from __future__ import annotations

import time

import pytest

from tests.chaos.audit import recovery_story
from tests.chaos.data import jsonl_dataset
from tests.chaos.figures import round_s
from tests.chaos.harness import wait_for
from tests.chaos.scenario import Scenario
from tests.fakes.ollama import CONTENT_PATHS, FakeOllama, _Fault, _Plan

# Why no rule acted when the outage was short (ollama_restart's default trigger).
OLLAMA_QUIET = "the fault ended before ollama_restart's trigger (unhealthy for 5 checks in a row)"

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def fallback_runs(s: Scenario, stage: str) -> list[dict[str, object]]:
    return [
        r
        for r in s.watch.stage_runs(stage)
        if r["status"] == "succeeded" and (r.get("counts") or {}).get("fallback")
    ]


def alert_story(s: Scenario, component: str) -> None:
    """The receiver heard of the incident, naming the component, and of its end."""
    firing = s.receiver.about(component, "firing")
    resolved = s.receiver.about(component, "resolved")
    assert firing, f"no firing alert named {component}"
    assert resolved, f"no resolved alert named {component}"
    names = sorted({a["labels"]["alertname"] for a in firing})
    s.figures.facts["alerts"] = {"firing": names, "resolved": len(resolved)}
    s.figures.say(s.alerts_sentence())


@pytest.mark.chaos_smoke
def test_ollama_refused(scenario: Scenario, tmp_path: object) -> None:
    """Ollama refuses connections for a whole pipeline pass: every memory is enriched and
    embedded by the fallback, /health and an alert say so; once it is back, the LLM redoes
    them all."""
    s = scenario
    s.with_ollama(behind_proxy=True)
    data, uids = jsonl_dataset(s.tmp_path, 150)
    s.ingest_file(data)
    assert s.proxy is not None
    s.proxy.refuse()
    s.fault("Ollama's port refuses connections")
    s.start()

    # A whole pass in fallback: short-term and long-term did every memory by heuristics.
    wait_for(
        lambda: (
            any(r["counts"]["fallback"] == 150 for r in fallback_runs(s, "short_term"))
            and fallback_runs(s, "long_term")
        ),
        timeout_s=120,
        what="a whole pass done by the fallback",
    )
    s.wait_troubled("ollama")
    wait_for(lambda: s.receiver.about("ollama", "firing"), timeout_s=60, what="a firing alert")
    detect = s.detected("ollama")
    assert detect is not None
    s.figures.say(
        f"With Ollama refusing, the first pass enriched and embedded all 150 memories by the "
        f"fallback heuristics; /health reported ollama unhealthy {detect:.1f} s after the "
        "fault, with the fallback named in its output."
    )

    s.proxy.heal()
    s.heal("Ollama's port accepts again")
    recover = s.wait_recovered("ollama")
    s.figures.time_to_recover_s = round_s(recover)
    s.figures.recovered_by = "/health: ollama healthy, breaker closed"
    runs = s.settle(["short_term", "long_term"])
    wait_for(lambda: s.receiver.about("ollama", "resolved"), timeout_s=60, what="resolution")
    redone = runs["short_term"]["counts"]
    s.figures.say(
        f"Ollama was reported healthy again {recover:.1f} s after it came back; the next "
        f"short-term run redid {redone['llm']} memories with the LLM and left none to the fallback."
    )
    s.stop()

    audit = s.audit(uids)
    outputs = [o for smp in s.watch.snapshot() if (o := smp.outputs.get("ollama"))]
    assert any("fallback" in o for o in outputs), "the outage's /health output names no fallback"
    alert_story(s, "ollama")
    # LLM work waits as fallback rows to redo, not as dead letters.
    assert audit.dead_letters == []
    recovery_story(
        s.figures, audit, components=("ollama",), fault=s.fault_window(),
        quiet_reason=OLLAMA_QUIET,
    )  # fmt: skip


def slow_ollama(latency_s: float = 0.02, **kwargs: object) -> FakeOllama:
    """A fake Ollama slow enough that a pass is still running when the fault lands."""
    fake = FakeOllama(**kwargs)  # type: ignore[arg-type]
    fake.set_latency(latency_s)
    return fake


def test_ollama_hang(scenario: Scenario) -> None:
    """Mid-enrichment, Ollama accepts connections and never answers: calls time out, the run
    finishes by the fallback instead of waiting, /health says ollama timed out; after the
    hang the LLM redoes every fallback row."""
    s = scenario
    s.with_ollama(slow_ollama(), behind_proxy=True)
    assert s.ollama is not None and s.proxy is not None
    data, uids = jsonl_dataset(s.tmp_path, 300)
    s.ingest_file(data)
    s.start()
    wait_for(
        lambda: s.ollama is not None and s.ollama.request_count("/api/chat") >= 40,
        timeout_s=120,
        what="enrichment under way",
    )
    s.proxy.blackhole()
    s.fault("Ollama accepts and never answers")
    answered = s.ollama.request_count("/api/chat")
    s.wait_troubled("ollama")
    detect = s.detected("ollama")
    assert detect is not None
    # The stage must not sit on the hang: a pass in fallback finishes while it lasts.
    hung = wait_for(
        lambda: [
            r
            for r in fallback_runs(s, "short_term")
            if s.wall_fault is not None and r["finished"] and r["finished"] > s.wall_fault
        ],
        timeout_s=90,
        what="a short-term run finished by the fallback during the hang",
    )[0]
    lasted = (hung["finished"] - hung["started"]).total_seconds()
    s.figures.facts["run_during_hang"] = {"seconds": round_s(lasted), **hung["counts"]}
    outputs = {smp.outputs.get("ollama") for smp in s.watch.snapshot() if smp.t >= s.t_fault}
    s.figures.say(
        f"Ollama stopped answering after {answered} chat requests. "
        f"/health reported ollama {s.watch.snapshot()[-1].components.get('ollama')} "
        f"{detect:.1f} s later; the short-term run caught in the hang finished in "
        f"{lasted:.1f} s with {hung['counts']['fallback']} memories by the fallback."
    )
    assert any(o and ("timed out" in o or "breaker" in o) for o in outputs), outputs

    s.proxy.heal()
    s.heal("Ollama answers again")
    recover = s.wait_recovered("ollama")
    s.figures.time_to_recover_s = round_s(recover)
    s.figures.recovered_by = "/health: ollama healthy, breaker closed"
    s.settle(["short_term", "long_term"])
    wait_for(lambda: s.receiver.about("ollama", "resolved"), timeout_s=60, what="resolution")
    s.figures.say(
        f"After the hang ended, ollama was healthy again within {recover:.1f} s and the "
        "fallback rows were redone by the LLM."
    )
    s.stop()
    audit = s.audit(uids)
    alert_story(s, "ollama")
    assert audit.dead_letters == []
    recovery_story(
        s.figures, audit, components=("ollama",), fault=s.fault_window(),
        quiet_reason=OLLAMA_QUIET,
    )  # fmt: skip


def retry_gaps(fake: FakeOllama, start: float, end: float) -> list[float]:
    """For each request first sent inside [start, end): the wait before its first resend."""
    first: dict[bytes, float] = {}
    gaps: list[float] = []
    for record in fake.request_log:
        if record.path != "/api/chat":
            continue
        if record.body in first:
            if start <= first[record.body] < end:
                gaps.append(record.received_at - first[record.body])
            first[record.body] = float("inf")  # only the first resend counts
        elif record.received_at >= start:
            first[record.body] = record.received_at
    return gaps


def test_ollama_overloaded(scenario: Scenario) -> None:
    """Under load, Ollama answers every chat and embed request 503 then 429 with Retry-After:
    resends wait at least that long, the breaker opens and the fallback carries the work;
    afterwards the LLM redoes it."""
    s = scenario
    s.with_ollama(slow_ollama(log_size=20_000))
    fake = s.ollama
    assert fake is not None
    data, uids = jsonl_dataset(s.tmp_path, 300)
    s.ingest_file(data)
    s.start()
    wait_for(lambda: fake.request_count("/api/chat") >= 30, timeout_s=120, what="load")
    work = ("/api/chat", "/api/embed")
    fake.fail_with(503, paths=work, retry_after=1)
    s.fault("503 with Retry-After: 1 on chat and embed")
    t_503 = time.monotonic()
    s.wait_troubled("ollama")
    wait_for(lambda: time.monotonic() - t_503 >= 6, timeout_s=10, what="6 s of 503")
    fake.reset_faults()
    fake.set_latency(0.02)
    fake.fail_with(429, paths=work, retry_after=2)
    t_429 = time.monotonic()
    wait_for(lambda: time.monotonic() - t_429 >= 6, timeout_s=10, what="6 s of 429")
    fake.reset_faults()
    s.heal("Ollama answers normally")
    detect = s.detected("ollama")
    assert detect is not None

    gaps_503 = retry_gaps(fake, t_503, t_429)
    gaps_429 = retry_gaps(fake, t_429, s.t_heal or t_429)
    served = fake.request_count("/api/chat")
    s.figures.facts["resends"] = {
        "after_503": len(gaps_503),
        "min_wait_after_503_s": round_s(min(gaps_503, default=None) or None),
        "after_429": len(gaps_429),
        "min_wait_after_429_s": round_s(min(gaps_429, default=None) or None),
    }
    assert gaps_503 or gaps_429, "no request was resent: Retry-After was never exercised"
    # A resend never comes sooner than the server asked (each gap also spans the answer).
    assert all(g >= 1.0 for g in gaps_503), sorted(gaps_503)[:5]
    assert all(g >= 2.0 for g in gaps_429), sorted(gaps_429)[:5]
    states = {smp.breakers.get("ollama") for smp in s.watch.snapshot() if smp.t >= t_503}
    assert "open" in states, f"the ollama breaker never opened under 503/429: {states}"
    s.figures.say(
        f"For 6 s every chat and embed request was answered 503 (Retry-After 1 s), then for "
        f"6 s 429 (Retry-After 2 s). Resends waited at least as long as asked "
        f"({len(gaps_503)} after a 503, {len(gaps_429)} after a 429); the ollama breaker "
        f"opened and /health reported ollama in trouble {detect:.1f} s into the overload."
    )

    recover = s.wait_recovered("ollama")
    s.figures.time_to_recover_s = round_s(recover)
    s.figures.recovered_by = "/health: ollama healthy, breaker closed"
    s.settle(["short_term", "long_term"])
    s.figures.say(
        f"Ollama was healthy {recover:.1f} s after the overload ended; the LLM then redid "
        f"every fallback row ({fake.request_count('/api/chat') - served} further chat requests)."
    )
    s.stop()
    audit = s.audit(uids)
    assert audit.dead_letters == []
    s.figures.say(s.alerts_sentence())
    recovery_story(
        s.figures, audit, components=("ollama",), fault=s.fault_window(),
        quiet_reason=OLLAMA_QUIET,
    )  # fmt: skip


class NonsenseShare(FakeOllama):
    """A fake Ollama whose every third chat answer, while :attr:`active`, is unusable:
    alternately prose with no JSON in it and a truncated (invalid JSON) body."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.active = False
        self.spoiled = 0
        self._seen = 0

    def _arrive(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Plan:
        plan = super()._arrive(method, path, headers, body)
        if self.active and path in CONTENT_PATHS and plan.fault is None:
            with self._lock:
                self._seen += 1
                if self._seen % 3 == 0:
                    self.spoiled += 1
                    kind = "malformed" if self.spoiled % 2 else "malformed_content"
                    plan.fault = _Fault(kind, None, None, style="garbage")
        return plan


def test_ollama_malformed(scenario: Scenario) -> None:
    """A third of Ollama's answers are not JSON: each memory is asked again or falls back,
    none is lost or crashes a run, the fallback share shows in /health; once the answers are
    good again, no fallback row is left."""
    s = scenario
    fake = NonsenseShare()
    fake.set_latency(0.01)
    s.with_ollama(fake)
    data, uids = jsonl_dataset(s.tmp_path, 200)
    s.ingest_file(data)
    fake.active = True
    s.fault("every third chat answer unusable")
    s.start()
    wait_for(
        lambda: s.watch.first(lambda smp: "ollama:fallbackShare" in smp.warnings, after=0),
        timeout_s=120,
        what="the fallback share in /health",
    )
    first = s.watch.first(lambda smp: "ollama:fallbackShare" in smp.warnings, after=0)
    assert first is not None and s.t_fault is not None
    s.figures.time_to_detect_s = round_s(first.t - s.t_fault)
    s.figures.detected_by = "/health: ollama:fallbackShare warn (ollama itself stays healthy)"
    runs = fallback_runs(s, "short_term")
    assert runs, "no memory fell back although a third of the answers were unusable"
    # Nonsense from a live server says nothing about its health: no breaker trips on it.
    assert all(smp.breakers.get("ollama") == "closed" for smp in s.watch.snapshot() if smp.up)
    s.figures.say(
        f"With every third chat answer unusable ({fake.spoiled} spoiled), the first short-term "
        f"run gave {runs[0]['counts']['fallback']} of {runs[0]['counts']['items']} memories to "
        "the fallback (a parse failure is asked again once; a truncated body falls back at "
        "once). The ollama breaker stayed closed: a live server talking nonsense is not down."
    )
    fake.active = False
    s.heal("answers are good JSON again")
    runs_after = s.settle(["short_term", "long_term"])
    finished = runs_after["short_term"]["finished"]
    assert s.wall_heal is not None
    s.figures.time_to_recover_s = round_s((finished - s.wall_heal).total_seconds())
    s.figures.recovered_by = "runs: a short-term run with no fallback left"
    s.figures.say(
        f"After the answers were good again, the next clean short-term run finished "
        f"{s.figures.time_to_recover_s} s later and left no memory to the fallback."
    )
    s.stop()
    audit = s.audit(uids)
    assert audit.dead_letters == []
    s.figures.say(s.alerts_sentence())
    recovery_story(
        s.figures, audit, components=("ollama",), fault=s.fault_window(),
        quiet_reason='ollama stayed healthy: a live server talking nonsense is not down',
    )  # fmt: skip
