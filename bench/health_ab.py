"""A/B of ``GET /health`` under wrk: the framework route vs the cached rendering, h11 vs httptools.

The same health server as the daemon's (``build_health_server`` over five
fixed checks, one snapshot), four ways in one run:

* ``route``  — every request through FastAPI (the route renders the snapshot);
* ``cached`` — :class:`biomem.health.fastpath.CachedHealth` in front, as shipped;

each with uvicorn's pure-Python ``h11`` parser on ``asyncio`` and with
``httptools`` on ``uvloop`` (what uvicorn picks when they are installed, as
they are with biomem). Prints a Markdown table: requests/s and wrk's latency
percentiles, and each configuration's throughput as a ratio to the first.

Run:  .venv/bin/python bench/health_ab.py [--duration 15] [--connections 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _timing import loadavg  # noqa: E402

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wrk(url: str, duration: int, threads: int, connections: int) -> dict[str, float]:
    binary = shutil.which("wrk")
    assert binary is not None
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        result[f"p{pct}"] = float(match.group(1)) * _UNITS_MS[match.group(2)]
    return result


def measure(mode: str, http: str, loop: str, args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn
    from tests.integration.test_health_api import standard_checks

    from biomem.app import open_app
    from biomem.config import load_settings
    from biomem.health.monitor import HealthMonitor
    from biomem.health.server import build_health_server

    original = uvicorn.Config.__init__

    def configured(self: uvicorn.Config, *a: Any, **k: Any) -> None:
        k["http"], k["loop"] = http, loop
        original(self, *a, **k)

    uvicorn.Config.__init__ = configured  # type: ignore[method-assign]
    os.environ["HEALTH_HTTP_PORT"] = str(free_port())
    app = open_app(load_settings())
    try:
        monitor = HealthMonitor(standard_checks(), interval_s=15)
        asyncio.run(monitor.run_once())
        server = build_health_server(app, monitor)
        if mode == "route":
            server.front = None
        server.start()
        try:
            figures = wrk(f"{server.url}/health", args.duration, args.threads, args.connections)
        finally:
            server.stop()
    finally:
        app.close()
        uvicorn.Config.__init__ = original  # type: ignore[method-assign]
    return {"mode": mode, "http": f"{http} on {loop}", **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    data = tempfile.mkdtemp(prefix="biomem-bench-")
    os.environ["DUCKDB_PATH"] = f"{data}/biomem.duckdb"
    os.environ["BIOMEM_LOG_LEVEL"] = "warning"
    rows = []
    before = loadavg()[0]
    for mode, http, loop in (
        ("route", "h11", "asyncio"),
        ("cached", "h11", "asyncio"),
        ("route", "httptools", "uvloop"),
        ("cached", "httptools", "uvloop"),
    ):
        rows.append(measure(mode, http, loop, args))
    after = loadavg()[0]
    base = rows[0]["rps"]
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s; "
        f"load average before {before:.2f}, after {after:.2f}\n"
    )
    print("| /health via | server | requests/s | × route/h11 | p50 ms | p90 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['http']} | {row['rps']:,.0f} | {row['rps'] / base:.2f} "
            f"| {row['p50']:.2f} | {row['p90']:.2f} | {row['p99']:.2f} |"
        )
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
