"""Load on ``GET /health`` with every dependency up, then with Ollama hanging.

The health API answers from the monitor's last snapshot, so a dependency that
hangs should not slow it down. This benchmark checks that claim end to end:

1. a temporary directory, a :class:`tests.fakes.ollama.FakeOllama` on loopback,
   ``biomem ingest samples/memories.jsonl`` into a fresh DuckDB file;
2. ``biomem run`` (the daemon) with its health endpoints on a free port and a
   health check every 2 s; wait until ``/health`` shows Ollama measured and the
   first pipeline pass has finished (so that the stages do not share the CPU
   with the measurement);
3. ``wrk --latency`` against ``/health`` (scenario "all up");
4. ``fake.hang()`` — every Ollama request is accepted and never answered —
   then wait until ``/health`` reports Ollama unhealthy (its check times out),
   and the same ``wrk`` again (scenario "ollama hanging");
5. ``fake.reset_faults()``, SIGTERM to the daemon (it must exit 0), the fake stops.

While each ``wrk`` runs, ``/health`` is also sampled every 2 s by this script
(one request at a time), to show which status the endpoint reported and why.
The results are printed as a Markdown table (latencies in ms, from wrk's
latency distribution).

Run:  .venv/bin/python bench/health_load.py [--duration 30] [--threads 2] [--connections 64]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _timing import loadavg, wait_for_quiet

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes.ollama import FakeOllama  # noqa: E402

# The daemon's own configuration comes only from what this script sets.
_INHERITED_PREFIXES = ("BIOMEM_", "DUCKDB_", "HEALTH_", "OLLAMA_", "POSTGRES_", "ALERT_")
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION_RE = r"([\d.]+)(us|ms|s|m|h)"
# One troubled component in /health's "output": "name status (why)", joined by "; ".
_TROUBLE_RE = re.compile(r"(?:^|; )([a-z_]+) (degraded|unhealthy|critical|unknown)\b")


@dataclass(slots=True)
class WrkResult:
    """What one wrk run printed, latencies in ms."""

    requests_per_s: float
    requests: int
    percentiles_ms: dict[int, float]
    non_2xx: int
    socket_errors: dict[str, int]
    raw: str


@dataclass(slots=True)
class Scenario:
    name: str
    wrk: WrkResult
    load_before: float
    load_after: float
    sampled: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_health(port: int, path: str = "/health", timeout: float = 5.0) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body) of one GET; (0, None) when the server does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        raw = response.read()
    except OSError:
        return 0, None
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


def ollama_state(body: Any) -> str:
    """Ollama's state in a /health body: "measured", "unhealthy" or "pending"."""
    if not isinstance(body, dict):
        return "pending"
    checks = body.get("checks") or {}
    if "ollama:responseTime" in checks:
        return "measured"
    for entry in checks.get("ollama:status", []):
        if entry.get("observedValue") in ("unhealthy", "critical"):
            return "unhealthy"
    return "pending"


def wait_until(
    what: str, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.25
) -> float:
    """Poll ``predicate()`` until true; return the seconds waited or exit with ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(poll_s)
    raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")


def first_pass_done(port: int, stages: int) -> bool:
    """True once ``stages`` distinct stages have a finished run (the daemon's first pass)."""
    status, body = get_health(port, "/health/detailed")
    if status == 0 or not isinstance(body, dict):
        return False
    runs = (body.get("runs") or {}).get("last") or []
    return len({r["stage"] for r in runs if r.get("finished_at")}) >= stages


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    env.update(extra)
    return env


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def to_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    percentiles = {
        int(m.group(1)): to_ms(m.group(2), m.group(3))
        for m in re.finditer(rf"^\s+(50|75|90|99)%\s+{_DURATION_RE}\s*$", out, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        requests=int(total.group(1)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        raw=out,
    )


def run_wrk(name: str, args: argparse.Namespace, port: int) -> Scenario:
    """One wrk run, with /health sampled every 2 s alongside it."""
    url = f"http://127.0.0.1:{port}/health"
    cmd = [
        args.wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        url,
    ]
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    sampled: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(2.0):
            status, body = get_health(port, timeout=10.0)
            wire = body.get("status") if isinstance(body, dict) else None
            sampled[f"{status} {wire}"] += 1
            if isinstance(body, dict) and body.get("output"):
                # "...; system_resources critical (cpu 99.1% ≥ ...)" -> "system_resources critical"
                for match in _TROUBLE_RE.finditer(str(body["output"])):
                    reasons[f"{match.group(1)} {match.group(2)}"] += 1

    load_before = loadavg()[0]
    sampler = threading.Thread(target=sample, name="health-sampler", daemon=True)
    sampler.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    stop.set()
    sampler.join()
    load_after = loadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = parse_wrk(proc.stdout)
    if args.show_wrk:
        print(proc.stdout)
    return Scenario(name, result, load_before, load_after, sampled, reasons)


# --------------------------------------------------------------------------- report


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}"


def table(up: Scenario, hanging: Scenario) -> str:
    rows = [
        "| scenario | requests/s | p50 ms | p90 ms | p99 ms | requests | non-2xx |"
        " socket errors (connect/read/write/timeout) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for sc in (up, hanging):
        p = sc.wrk.percentiles_ms
        errors = "/".join(str(v) for v in sc.wrk.socket_errors.values()) or "0/0/0/0"
        rows.append(
            f"| {sc.name} | {sc.wrk.requests_per_s:,.0f} | {fmt_ms(p.get(50))} |"
            f" {fmt_ms(p.get(90))} | {fmt_ms(p.get(99))} | {sc.wrk.requests:,} |"
            f" {sc.wrk.non_2xx:,} | {errors} |"
        )
    rows.append(
        f"| ratio hanging / up | {ratio(hanging.wrk.requests_per_s, up.wrk.requests_per_s)} |"
        f" {ratio(hanging.wrk.percentiles_ms.get(50), up.wrk.percentiles_ms.get(50))} |"
        f" {ratio(hanging.wrk.percentiles_ms.get(90), up.wrk.percentiles_ms.get(90))} |"
        f" {ratio(hanging.wrk.percentiles_ms.get(99), up.wrk.percentiles_ms.get(99))} |"
        " — | — | — |"
    )
    return "\n".join(rows)


def report(up: Scenario, hanging: Scenario, target_ms: float) -> None:
    print()
    print(table(up, hanging))
    print()
    for sc in (up, hanging):
        p75 = fmt_ms(sc.wrk.percentiles_ms.get(75))
        samples = ", ".join(f"{k}: {v}" for k, v in sorted(sc.sampled.items())) or "none"
        why = "; ".join(f"{k} ×{v}" for k, v in sc.reasons.most_common()) or "none"
        print(
            f"- {sc.name}: p75 {p75} ms; 1-min load {sc.load_before:.2f} → {sc.load_after:.2f};"
            f" /health sampled during the run: {samples}; reasons given: {why}"
        )
    p99_up = up.wrk.percentiles_ms.get(99)
    p99_hang = hanging.wrk.percentiles_ms.get(99)
    if p99_up is not None and p99_hang is not None:
        met = max(p99_up, p99_hang) < target_ms
        print(
            f"- target p99 < {target_ms:g} ms in both scenarios:"
            f" {'met' if met else 'NOT met'} ({p99_up:.2f} / {p99_hang:.2f} ms)"
        )


# --------------------------------------------------------------------------- main


def stop_daemon(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SystemExit(f"biomem run did not exit within {timeout_s:g} s of SIGTERM") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--samples", type=Path, default=REPO / "samples" / "memories.jsonl")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    parser.add_argument("--target-ms", type=float, default=10.0, help="p99 target")
    parser.add_argument("--max-load", type=float, default=1.2, help="wait for a quieter load")
    parser.add_argument("--load-wait-s", type=float, default=720.0, help="at most this long")
    parser.add_argument("--show-wrk", action="store_true", help="print wrk's own output too")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    wrk = shutil.which(args.wrk)
    if wrk is None:
        raise SystemExit(f"{args.wrk} not found (Debian: apt-get install wrk)")
    args.wrk = wrk
    print(f"wrk: {wrk_version(wrk)}")

    # Imported here: biomem is heavy and only the stage count is needed.
    from biomem.pipeline.runner import STAGES

    quiet, waited = wait_for_quiet(args.max_load, args.load_wait_s)
    one, five, fifteen = loadavg()
    print(
        f"load before the run: {one:.2f} {five:.2f} {fifteen:.2f}"
        f" ({'quiet' if quiet else f'still above {args.max_load} after waiting'},"
        f" waited {waited:.0f} s)"
    )

    tmp = Path(tempfile.mkdtemp(prefix="biomem-health-load-"))
    fake = FakeOllama().start()
    daemon: subprocess.Popen[bytes] | None = None
    try:
        db = tmp / "biomem.duckdb"
        port = free_port()
        env = child_env(
            DUCKDB_PATH=str(db),
            OLLAMA_URL=fake.url,
            HEALTH_HTTP_ENDPOINTS="true",
            HEALTH_HTTP_HOST="127.0.0.1",
            HEALTH_HTTP_PORT=str(port),
            HEALTH_CHECK_INTERVAL_SECONDS="2",
            BIOMEM_LOG_LEVEL="warning",
        )
        biomem = [sys.executable, "-m", "biomem"]
        ingest = subprocess.run(
            [*biomem, "ingest", str(args.samples)], env=env, capture_output=True, text=True
        )
        if ingest.returncode != 0:
            raise SystemExit(f"biomem ingest failed:\n{ingest.stdout}\n{ingest.stderr}")
        print(ingest.stdout.strip().splitlines()[0])

        with (tmp / "daemon.out").open("wb") as out, (tmp / "daemon.err").open("wb") as err:
            daemon = subprocess.Popen([*biomem, "run"], env=env, stdout=out, stderr=err)
        waited = wait_until(
            "/health to show ollama measured",
            lambda: ollama_state(get_health(port)[1]) == "measured",
            timeout_s=60,
        )
        print(f"/health answers with ollama measured after {waited:.1f} s")
        waited = wait_until(
            "the first pipeline pass", lambda: first_pass_done(port, len(STAGES)), timeout_s=300
        )
        print(f"first pipeline pass finished {waited:.1f} s later")
        time.sleep(3)  # let the last pass's threads settle

        up = run_wrk("all up", args, port)

        fake.hang()
        hung_at = time.monotonic()
        wait_until(
            "/health to show ollama unhealthy",
            lambda: ollama_state(get_health(port)[1]) == "unhealthy",
            timeout_s=30,
        )
        print(f"/health shows ollama unhealthy {time.monotonic() - hung_at:.1f} s after hang()")
        hanging = run_wrk("ollama hanging", args, port)
        status, body = get_health(port)
        print(f"after the run: /health {status} ollama {ollama_state(body)}")

        fake.reset_faults()
        code = stop_daemon(daemon, timeout_s=60)
        daemon = None
        print(f"biomem run exited with {code} after SIGTERM")
        report(up, hanging, args.target_ms)
        return 0 if code == 0 else 1
    finally:
        fake.reset_faults()
        if daemon is not None:
            with contextlib.suppress(SystemExit):
                stop_daemon(daemon, timeout_s=30)
        fake.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
