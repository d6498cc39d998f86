"""The committed sample set is exactly what the seeded generator produces."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

from tests.conftest import REPO, SAMPLES


def test_generator_reproduces_committed_samples() -> None:
    """Running the generator with its defaults gives the committed file byte for byte."""
    produced = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_samples.py"), "--output", "-"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    assert produced == SAMPLES.read_bytes()


def test_samples_cover_six_weeks_of_one_life() -> None:
    """At least 500 memories, chronological, spanning about six weeks, with recurring people."""
    records = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()]
    assert len(records) >= 500
    times = [datetime.fromisoformat(r["created_at"]) for r in records]
    assert times == sorted(times)
    assert 35 <= (times[-1] - times[0]).days <= 43
    people = [p for r in records for p in r["metadata"]["people"]]
    recurring = {p for p in set(people) if people.count(p) >= 5}
    assert len(recurring) >= 10
    assert len({r["id"] for r in records}) == len(records)
