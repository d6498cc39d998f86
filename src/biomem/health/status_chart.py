"""The status page's chart: memories ingested and consolidated over time, as inline SVG.

:func:`chart_data` reads the points from the store; :func:`chart_svg` draws
them, server-side, as two step lines (no library, no script). Ingested is the
cumulative count of memories by the minute they were first ingested;
consolidated is the number of memories with a fate after each consolidation
run. Both hold their value until the next point (a step, not a slope: nothing
happens between two runs). Colours come from the stylesheet (classes), so the
SVG carries no style attribute.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from biomem.store import DuckDBStore

__all__ = ["chart_data", "chart_svg", "run_counts"]

CHART_MAX_WINDOW = timedelta(hours=24)
CHART_MIN_WINDOW = timedelta(hours=1)
WIDTH, HEIGHT = 480, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 26  # margins around the plot, in viewBox units
SERIES = (("ingested", "memories ingested"), ("consolidated", "memories consolidated"))


# --------------------------------------------------------------------------- data


def run_counts(raw: Any) -> dict[str, Any]:
    """A run's counts as a dict (DuckDB hands JSON columns back as text)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return dict(raw) if isinstance(raw, Mapping) else {}


_INGESTED_SQL = """
SELECT date_trunc('minute', first_ingested_at) AS t, count(*) FROM memories
WHERE first_ingested_at >= ? GROUP BY t ORDER BY t
"""
_CONSOLIDATED_SQL = """
SELECT finished_at, counts FROM runs
WHERE stage = 'consolidation' AND status = 'succeeded' AND finished_at IS NOT NULL
  AND (finished_at >= ? OR id = (
      SELECT max(id) FROM runs
      WHERE stage = 'consolidation' AND status = 'succeeded' AND finished_at < ?))
ORDER BY finished_at
"""


def _consolidated(counts: Mapping[str, Any]) -> int:
    """Memories with a fate after a consolidation run (the "None" group has none yet)."""
    fates = counts.get("fates")
    if not isinstance(fates, Mapping):
        return 0
    return sum(int(n) for fate, n in fates.items() if fate not in ("None", "null", ""))


def chart_data(store: DuckDBStore, now: datetime) -> dict[str, Any]:
    """Memories ingested (cumulative) and consolidated (after each run) over a window.

    The window ends now and starts at the first data of the last 24 hours,
    but spans at least an hour: a fresh machine still shows a readable shape.
    """
    horizon = now - CHART_MAX_WINDOW
    before = store.fetchone("SELECT count(*) FROM memories WHERE first_ingested_at < ?", [horizon])
    total = int(before[0]) if before else 0
    ingested: list[tuple[datetime, int]] = []
    for minute, count in store.execute(_INGESTED_SQL, [horizon]):
        total += int(count)
        ingested.append((minute, total))
    consolidated = [
        (finished, _consolidated(run_counts(counts)))
        for finished, counts in store.execute(_CONSOLIDATED_SQL, [horizon, horizon])
    ]
    firsts = [points[0][0] for points in (ingested, consolidated) if points]
    start = max(horizon, min(firsts, default=now))
    start = min(start, now - CHART_MIN_WINDOW)
    return {
        "from": start,
        "to": now,
        "ingested_before": int(before[0]) if before else 0,
        "ingested": ingested,
        "consolidated": consolidated,
    }


# --------------------------------------------------------------------------- drawing


def _time(value: Any) -> datetime | None:
    """An aware UTC time from ISO 8601 text (naive times are taken as UTC)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _points(raw: Sequence[Any]) -> list[tuple[datetime, float]]:
    out = []
    for item in raw:
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            continue
        moment, value = _time(item[0]), item[1]
        if moment is not None and isinstance(value, int | float):
            out.append((moment, float(value)))
    return sorted(out, key=lambda p: p[0])


def _steps(
    points: list[tuple[datetime, float]], start: datetime, end: datetime, initial: float
) -> list[tuple[datetime, float]]:
    """Corners of a step line from ``start`` to ``end``; earlier points set its first level."""
    level = initial
    corners: list[tuple[datetime, float]] = []
    for moment, value in points:
        if moment <= start:
            level = value
            continue
        if moment > end:
            break
        if not corners:
            corners.append((start, level))
        corners += [(moment, level), (moment, value)]
        level = value
    if not corners:
        corners.append((start, level))
    corners.append((end, level))
    return corners


def _ticks(top: float) -> list[float]:
    """0, the middle and the top of the y axis, on whole numbers."""
    peak = max(1.0, top)
    return sorted({0.0, float(round(peak / 2)), float(peak)})


def chart_svg(chart: Mapping[str, Any]) -> str:
    """The chart as an ``<svg>`` element with a legend; a note when there is nothing to draw."""
    start, end = _time(chart.get("from")), _time(chart.get("to"))
    if start is None or end is None or end <= start:
        return '<p class="empty">no data for the chart yet</p>'
    span = (end - start).total_seconds()
    initial = {"ingested": float(chart.get("ingested_before") or 0), "consolidated": 0.0}
    lines = {
        key: _steps(_points(chart.get(key) or []), start, end, initial[key]) for key, _ in SERIES
    }
    top = max(value for corners in lines.values() for _, value in corners)
    ticks = _ticks(top)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: datetime) -> float:
        return LEFT + plot_w * max(0.0, min(1.0, (moment - start).total_seconds() / span))

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / ticks[-1])

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="chart-title">'
        '<title id="chart-title">memories ingested and consolidated over time</title>'
    ]
    for tick in ticks:
        parts.append(
            f'<line class="gridline" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}"'
            f' y2="{y(tick):.1f}"/><text class="axis" x="{LEFT - 4}" y="{y(tick) + 4:.1f}"'
            f' text-anchor="end">{tick:.0f}</text>'
        )
    labels = ((start, "start"), (start + (end - start) / 2, "middle"), (end, "end"))
    for moment, anchor in labels:
        parts.append(
            f'<text class="axis" x="{x(moment):.1f}" y="{HEIGHT - 8}"'
            f' text-anchor="{anchor}">{moment:%H:%M}</text>'
        )
    for key, _ in SERIES:
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in lines[key])
        parts.append(f'<polyline class="line-{key}" fill="none" points="{coords}"/>')
    parts.append("</svg>")
    legend = "".join(
        f'<li><i class="key-{key}"></i>{html.escape(label)}: <strong>{lines[key][-1][1]:.0f}'
        "</strong></li>"
        for key, label in SERIES
    )
    window = f"{start:%Y-%m-%d %H:%M} – {end:%H:%M} UTC"
    return (
        "".join(parts)
        + f'<ul class="legend">{legend}</ul><p class="meta">{html.escape(window)}</p>'
    )
