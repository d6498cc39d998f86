"""The last hour of a component, minute by minute, at any check interval, in bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from biomem.health.model import Check, ComponentHealth, Status
from biomem.health.monitor import HealthMonitor
from biomem.health.timeline import StatusTimeline

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # on a minute boundary


class WallClock:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class ScriptedCheck(Check):
    """A real check that reports the status the test sets, stamped with the test's clock."""

    def __init__(self, name: str, clock: WallClock) -> None:
        self.name = name
        self.component_type = "component"
        self.required = False
        self.status = Status.HEALTHY
        self._clock = clock

    async def run(self) -> ComponentHealth:
        return ComponentHealth(
            name=self.name,
            component_type=self.component_type,
            status=self.status,
            required=self.required,
            checked_at=self._clock(),
            duration_ms=1.0,
        )


def strip(timeline: StatusTimeline, now: datetime) -> list[str]:
    return [
        "gap" if s.gap else s.status.value + ("~" if s.carried else "") for s in timeline.slots(now)
    ]


async def test_one_second_interval_shows_the_whole_hour_and_keeps_history_bounded() -> None:
    """At a 1 s interval an hour of checks fills all 60 minutes (a degraded spell in the
    right ones), while the recent history stays at its size and the timeline at 61 buckets."""
    clock = WallClock(START)
    check = ScriptedCheck("ollama", clock)
    monitor = HealthMonitor([check], interval_s=1, wall_clock=clock)
    for second in range(3600):
        clock.now = START + timedelta(seconds=second)
        check.status = Status.DEGRADED if 600 <= second < 780 else Status.HEALTHY
        await monitor.run_once()
    slots = monitor.timeline("ollama", clock.now)
    assert len(slots) == 60
    assert [s.checks for s in slots] == [60] * 60
    assert not any(s.gap or s.carried for s in slots)
    degraded = [i for i, s in enumerate(slots) if s.status is Status.DEGRADED]
    assert degraded == [10, 11, 12]  # 12:10 to 12:12
    assert slots[0].start == START and slots[-1].start == START + timedelta(minutes=59)
    assert len(monitor.history("ollama")) == 240  # /health/detailed and recovery read these
    assert monitor.history("ollama")[-1] == (clock.now, Status.HEALTHY)


def test_memory_stays_bounded_however_many_results() -> None:
    """Three hours of results every 2 s leave at most slots + 1 buckets."""
    timeline = StatusTimeline(stale_after_s=9)
    for second in range(0, 3 * 3600, 2):
        timeline.record(START + timedelta(seconds=second), Status.HEALTHY)
    assert len(timeline) == 61


@pytest.mark.parametrize(
    ("interval_s", "checked_minutes"),
    [
        pytest.param(300, range(0, 60, 5), id="5-min"),
        pytest.param(3600, [0], id="hourly"),
    ],
)
def test_long_intervals_carry_each_result_until_the_next_is_due(
    interval_s: float, checked_minutes: range | list[int]
) -> None:
    """With a check every 5 min (or hour) the minutes between checks show the last result,
    carried; none is a gap."""
    timeline = StatusTimeline(stale_after_s=2 * interval_s + 5)
    for minute in checked_minutes:
        timeline.record(START + timedelta(minutes=minute, seconds=3), Status.HEALTHY)
    slots = timeline.slots(START + timedelta(minutes=59, seconds=30))
    assert [s.checks for s in slots] == [1 if i in checked_minutes else 0 for i in range(60)]
    assert all(s.status is Status.HEALTHY and not s.gap for s in slots)
    assert [s.carried for s in slots] == [i not in checked_minutes for i in range(60)]


def test_a_stopped_monitor_leaves_gaps_shown_as_unknown() -> None:
    """Checks every 15 s until 12:10, then none: the result holds for its 35 s, the rest of
    the hour is gaps, unknown; the minutes before the first check are gaps too."""
    timeline = StatusTimeline(stale_after_s=2 * 15 + 5)
    for second in range(120, 600, 15):  # 12:02:00 .. 12:09:45
        timeline.record(START + timedelta(seconds=second), Status.DEGRADED)
    got = strip(timeline, START + timedelta(minutes=59, seconds=1))
    assert got[:2] == ["gap", "gap"]
    assert got[2:10] == ["degraded"] * 8
    assert got[10] == "degraded~"  # 12:09:45 + 35 s reaches into 12:10
    assert set(got[11:]) == {"gap"}
    assert all(s.status is Status.UNKNOWN for s in timeline.slots(START) if s.gap)


def test_a_slot_shows_its_worst_check_and_carries_its_last() -> None:
    """A minute with healthy, critical, healthy checks is critical; the next, unchecked
    minute carries the last result (healthy), not the worst."""
    timeline = StatusTimeline(stale_after_s=120)
    for second, status in [(5, Status.HEALTHY), (20, Status.CRITICAL), (50, Status.HEALTHY)]:
        timeline.record(START + timedelta(seconds=second), status)
    assert strip(timeline, START + timedelta(seconds=70))[-2:] == ["critical", "healthy~"]


def test_results_a_moment_out_of_order_land_in_their_own_minute() -> None:
    """A concurrent run's result stamped before the newest still counts in its minute."""
    timeline = StatusTimeline(stale_after_s=0)
    timeline.record(START + timedelta(seconds=61), Status.HEALTHY)
    timeline.record(START + timedelta(seconds=59), Status.UNHEALTHY)
    timeline.record(START + timedelta(seconds=62), Status.HEALTHY)
    slots = timeline.slots(START + timedelta(seconds=62))
    assert [(s.status, s.checks) for s in slots[-2:]] == [
        (Status.UNHEALTHY, 1),
        (Status.HEALTHY, 2),
    ]


def test_bad_shapes_are_refused() -> None:
    """A timeline needs a positive slot width, one slot or more and a staleness of 0 or more."""
    with pytest.raises(ValueError, match="slot_s > 0"):
        StatusTimeline(stale_after_s=1, slot_s=0)
