"""Faults of the embedded store and of the process itself: the DuckDB file held by another
process, a full disk under it, and biomem killed with SIGKILL mid-stage."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos.audit import Expected, recovery_story
from tests.chaos.data import jsonl_dataset
from tests.chaos.figures import round_s
from tests.chaos.harness import wait_for
from tests.chaos.scenario import Scenario
from tests.conftest import SAMPLES, run_cli
from tests.fakes.ollama import FakeOllama

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# Opens the store for writing (taking DuckDB's file lock) and holds it until stdin closes.
HOLDER = (
    "import duckdb, sys\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"
    "con.close()\n"
)


def slow_ollama(latency_s: float) -> FakeOllama:
    fake = FakeOllama()
    fake.set_latency(latency_s)
    return fake


@pytest.mark.chaos_smoke
def test_sigkill_mid_stage(scenario: Scenario) -> None:
    """SIGKILL inside short-term enrichment, restart, SIGKILL inside long-term embedding,
    restart: the store ends complete, each memory once, the killed runs left visible."""
    s = scenario
    s.with_ollama(slow_ollama(0.03))
    fake = s.ollama
    assert fake is not None
    data, uids = jsonl_dataset(s.tmp_path, 150)
    s.ingest_file(data)
    daemon = s.start()
    wait_for(lambda: fake.request_count("/api/chat") >= 40, timeout_s=120, what="enrichment")
    daemon.kill()
    s.fault("SIGKILL inside short-term enrichment")
    wait_for(
        lambda: s.watch.first(lambda smp: not smp.up, after=s.t_fault or 0),
        timeout_s=10,
        what="/health gone",
    )
    down = s.watch.first(lambda smp: not smp.up, after=s.t_fault or 0)
    assert down is not None and s.t_fault is not None
    s.figures.time_to_detect_s = round_s(down.t - s.t_fault)
    s.figures.detected_by = "/health stops answering (the process is gone)"
    enriched_first = fake.request_count("/api/chat")

    s.start()
    embeds = fake.request_count("/api/embed")
    wait_for(
        lambda: fake.request_count("/api/embed") >= embeds + 5, timeout_s=120, what="embedding"
    )
    daemon.kill()
    s.figures.facts["kills"] = [f"short_term (after {enriched_first} chat requests)", "long_term"]
    s.heal("restarted after the second SIGKILL")
    s.start()
    assert s.t_heal is not None
    recover = s.wait_recovered("duckdb")
    s.figures.time_to_recover_s = round_s(recover)
    s.figures.recovered_by = "/health answers again, duckdb healthy (restart included)"
    s.settle(["short_term", "long_term"])
    s.stop()

    audit = s.audit(uids)
    crashed = audit.runs_by_status.get("running", 0)
    assert crashed >= 2, f"the killed runs are not visible as unfinished: {audit.runs_by_status}"
    s.figures.notifications_sent = len(s.receiver.requests)
    s.figures.say(
        f"biomem was SIGKILLed after {enriched_first} chat requests (inside short-term "
        "enrichment), restarted, and SIGKILLed again inside long-term embedding. Each "
        "restart took up where the committed batches ended."
    )
    s.figures.say(
        f"After the last restart /health reported the store healthy {recover:.1f} s later; "
        f"all 150 memories are in the store once with their derived rows, and the {crashed} "
        "killed runs stay 'running' in the runs table, so a crash is told apart from a clean "
        "end. No alert: a killed process sends none (its supervisor sees the exit)."
    )
    s.figures.say(s.alerts_sentence())
    recovery_story(
        s.figures, audit, fault=s.fault_window(),
        quiet_reason="the restart recovered by itself (the killed run is redone), no rule fired",
    )  # fmt: skip


def test_duckdb_held(scenario: Scenario) -> None:
    """While another process holds the store, biomem refuses to start and to ingest with one
    line naming the file and the holder, and writes nothing; once released, it starts and
    everything is processed once."""
    s = scenario
    s.with_ollama()
    first, uids = jsonl_dataset(s.tmp_path, 100)
    s.ingest_file(first)
    more = s.tmp_path / "more.jsonl"
    more.write_text("".join(SAMPLES.read_text(encoding="utf-8").splitlines(True)[100:160]))
    uids |= {f"jsonl:mem-{n:05d}" for n in range(101, 161)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(s.store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    s.others.append(_Stopper(holder))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    s.fault("another process holds the store's write lock")

    daemon = s.start(wait=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(timeout=60)
    assert s.t_fault is not None
    s.figures.time_to_detect_s = round_s(time.monotonic() - s.t_fault)
    s.figures.detected_by = "biomem run exits 1 at once, naming the file and the holder"
    line = daemon.log_tail(5).strip().splitlines()[-1]
    assert code == 1, daemon.log_tail()
    assert str(s.store_path) in line and f"process {holder.pid}" in line, line
    refused = run_cli("ingest", str(more), env=s.env())
    assert refused.returncode == 1 and f"process {holder.pid}" in refused.stderr
    s.figures.say(
        f"With another process holding the store, `biomem run` exited 1 at once with: {line!r}; "
        "`biomem ingest` was refused the same way and wrote nothing."
    )

    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=30)
    s.heal("the other process lets go")
    s.ingest_file(more)
    s.start()
    assert s.t_heal is not None
    recover = s.wait_recovered("duckdb")
    s.figures.time_to_recover_s = round_s(recover)
    s.figures.recovered_by = "/health: duckdb healthy once the lock is free and biomem started"
    # A second writer while the daemon runs is the one refused; the daemon carries on.
    intruder = run_cli("ingest", str(more), env=s.env())
    assert intruder.returncode == 1 and f"process {daemon.proc.pid}" in intruder.stderr
    s.settle(["short_term", "long_term"], after=None)
    seen = {smp.components.get("duckdb") for smp in s.watch.snapshot() if smp.up}
    assert not seen & {"unhealthy", "critical"}, f"the intruder disturbed the daemon: {seen}"
    s.stop()
    audit = s.audit(uids)
    s.figures.notifications_sent = len(s.receiver.requests)
    s.figures.say(
        f"Released, the ingest was run again and biomem started: /health reported the store "
        f"healthy {recover:.1f} s after the release, all {len(uids)} memories were processed "
        "once; a second writer trying the store while the daemon ran was refused and the "
        "daemon went on undisturbed. "
        "The daemon never ran while the lock was held: exit code 1 is the signal, not an alert."
    )
    s.figures.say(s.alerts_sentence())
    assert audit.quarantined == 0
    recovery_story(
        s.figures, audit, fault=s.fault_window(),
        quiet_reason="biomem refused to start while the store was held, so nothing ran",
    )  # fmt: skip


class _Stopper:
    """Teardown for a helper process: kill it if it still runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class _Tmpfs:
    """A small tmpfs mounted for the test; unmounted at teardown."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'})")

    def stop(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)


DISK = "system_resources:diskUtilization"


def disk_alerts(s: Scenario, status: str) -> list[dict[str, object]]:
    """Alerts about the full disk: system_resources unhealthy/critical, or the store itself
    (a saturated CPU only ever degrades system_resources)."""
    return [
        a
        for a in s.receiver.about("system_resources", status) + s.receiver.about("duckdb", status)
        if a["labels"]["alertname"] != "ComponentDegraded"
    ]


def fill(directory: Path) -> int:
    """Write to ``directory`` until the disk is full; the bytes written."""
    written = 0
    with (directory / "filler").open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 14, 1 << 10, 64, 1):
            block = b"\0" * size
            while True:
                try:
                    written += out.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def resumed(s: Scenario) -> bool:
    """Recovery has resumed stages (the resolve phase of heavy_stages_pause), per the daemon."""
    response = s.daemon.get("/health/detailed") if s.daemon is not None else None
    if response is None or response.status_code not in (200, 503):
        return False
    recent = response.json().get("recovery", {}).get("recent", [])
    return any(r.get("action") == "resume_stages" and r.get("outcome") == "done" for r in recent)


def test_disk_full(scenario: Scenario, tmp_path: Path) -> None:
    """The data directory fills up mid-run: /health fails on the disk, stages fail and are
    retried, nothing committed is lost; once space is freed, the pipeline completes."""
    s = scenario
    mount = _Tmpfs(tmp_path / "data", "64m")
    s.others.append(mount)
    s.store_path = mount.path / "biomem.duckdb"
    s.with_ollama(slow_ollama(0.02))
    fake = s.ollama
    assert fake is not None
    data, uids = jsonl_dataset(s.tmp_path, 300)
    s.ingest_file(data)
    daemon = s.start()
    wait_for(lambda: fake.request_count("/api/chat") >= 30, timeout_s=120, what="enrichment")
    filled = fill(mount.path)
    s.fault("the data directory is full")
    full_s = 15  # long enough for the breakers, the alerts and the retries to play out
    # The disk's own measurement: a saturated CPU may degrade system_resources anyway.
    full = wait_for(
        lambda: s.watch.first(lambda smp: DISK in smp.warnings, after=s.t_fault or 0),
        timeout_s=60,
        what="the disk reported full",
    )
    detect = full.t - (s.t_fault or 0)
    s.figures.time_to_detect_s = round_s(detect)
    s.figures.detected_by = (
        f"/health: {DISK} {'critical' if full.status == 'fail' else 'not healthy'}, "
        f"system_resources {full.components.get('system_resources')}"
    )
    # The runs table is on the full disk too: a failed run may not be recorded; the log is.
    failures = wait_for(
        lambda: [
            e
            for e in daemon.log_events()
            if e.get("event") == "stage_failed"
            and "No space left" in str(e.get("error"))
            and e["timestamp"] >= f"{s.wall_fault:%Y-%m-%dT%H:%M:%S}"
        ],
        timeout_s=60,
        what="a stage failing on the full disk",
    )
    wait_for(
        lambda: time.monotonic() - (s.t_fault or 0) >= full_s,
        timeout_s=full_s + 5,
        what=f"{full_s} s of full disk",
    )
    statuses = {smp.status for smp in s.watch.snapshot() if smp.t >= (s.t_fault or 0) and smp.up}
    with contextlib.suppress(FileNotFoundError):
        os.remove(mount.path / "filler")
    s.heal("the filler file is removed")
    after = s.t_heal or 0
    room = wait_for(
        lambda: (
            smp
            if (smp := s.watch.holds_since(lambda x: x.up and DISK not in x.warnings, after=after))
            and s.watch.snapshot()[-1].t - smp.t >= 1.0
            else None
        ),
        timeout_s=60,
        what="the disk reported below its thresholds",
    )
    recover = room.t - after
    s.figures.time_to_recover_s = round_s(recover)
    s.figures.recovered_by = f"/health: {DISK} healthy again (below its thresholds)"
    s.settle(["short_term", "long_term"])
    # The incident's end, even when its start could not be written to the full disk.
    wait_for(lambda: disk_alerts(s, "resolved"), timeout_s=60, what="the incident resolved")
    wait_for(lambda: resumed(s), timeout_s=60, what="recovery resuming the paused heavy stages")
    s.stop()
    audit = s.audit(uids)
    failed = len([e for e in daemon.log_events() if e.get("event") == "stage_failed"])
    s.figures.say(
        f"{filled >> 20} MiB of filler left the 64 MiB data directory without a free byte for "
        f"{full_s} s while short-term enrichment ran; /health reported the disk full "
        f"{detect:.1f} s later (overall status seen: {', '.join(sorted(map(str, statuses)))}); "
        "the first stage to commit "
        f"failed with {failures[0]['error'][:90]!r}, and in all {failed} stage runs failed "
        "(on the disk or on the open duckdb breaker), each rolled back whole."
    )
    s.figures.say(
        f"With the filler removed, /health reported the disk healthy {recover:.1f} s later and the "
        f"pipeline completed: all {len(uids)} memories once, with their derived rows."
    )
    assert "fail" in statuses, f"a full data disk did not fail /health: {statuses}"
    unfinished = audit.runs_by_status.get("running", 0)
    if unfinished:
        s.figures.say(
            f"{unfinished} run(s) whose end could not be written to the full disk stay "
            "'running' in the runs table, as if the process had been killed."
        )
    recovery_story(
        s.figures, audit, components=("system_resources", "duckdb", "pipeline"),
        fault=s.fault_window(),
        # The guard holds the DuckDB rule back (the store and the machine are down at
        # once) but spares the rules about the machine itself, which act on the cause.
        required=[
            Expected("disk_pressure", "remove_temp_files"),
            Expected("heavy_stages_pause", "pause_stages"),
            Expected("heavy_stages_pause", "resume_stages"),
        ],
    )  # fmt: skip
    s.figures.facts["alerts_heard"] = [
        (a["labels"]["alertname"], a["labels"].get("component"), a["status"])
        for _, a in s.receiver.alerts()
    ]
    s.figures.say(s.alerts_sentence())
    firing = {
        (a["labels"]["alertname"], a["labels"]["component"]) for a in disk_alerts(s, "firing")
    }
    told_late = sorted(
        f"{name} about {component}"
        for name, component in {
            (a["labels"]["alertname"], a["labels"]["component"]) for a in disk_alerts(s, "resolved")
        }
        - firing
    )
    if told_late:
        s.figures.say(
            f"The firing of {', '.join(told_late)} could not be written while the disk was full "
            "(the outbox lives in the store); the receiver was told of it, with its start and "
            "end, in a resolved notification once the disk had room."
        )
