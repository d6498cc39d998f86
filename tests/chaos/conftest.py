"""Chaos fixtures: a scenario and its figures, written whatever the test's outcome."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.figures import Figures
from tests.chaos.scenario import Scenario


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None]:
    """Keep each phase's report on the item, so the figures can say how the test ended."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"chaos_report_{report.when}", report)


def _outcome(item: pytest.Item) -> tuple[str, str | None]:
    setup = getattr(item, "chaos_report_setup", None)
    call = getattr(item, "chaos_report_call", None)
    report = call if call is not None else setup
    if report is None:
        return "not run", None
    xfail = getattr(report, "wasxfail", None)
    if report.skipped:
        if xfail is not None:
            return "xfailed", str(xfail) or None
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = getattr(crash, "message", None) or str(report.longrepr)
        return "failed", message.splitlines()[0][:500]
    if xfail is not None:
        return "xpassed", str(xfail) or None
    return "passed", None


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The scenario's figures, named after the test (``test_<scenario>``), written at the end."""
    name = request.node.originalname.removeprefix("test_")
    record = Figures(scenario=name)
    yield record
    record.status, reason = _outcome(request.node)
    if reason is not None:
        record.reason = reason
    record.write()


@pytest.fixture
def scenario(tmp_path: Path, figures: Figures) -> Iterator[Scenario]:
    """A scenario whose parts are all stopped at the end, whatever happened."""
    running = Scenario(tmp_path, figures)
    try:
        yield running
    finally:
        running.close()
