"""HTML of the status page's sections, from the document :func:`gather_status` returns.

Every value that comes from data (component outputs, error messages, alert
summaries, stage errors, recovery reasons) goes through :func:`esc` — one
escaping function, used for text and attribute values alike — and the data
was redacted before it got here. No inline ``style`` attributes and no event
handlers: the page's Content-Security-Policy allows neither.

Tables carry ``data-label`` on each cell so that on a phone-width screen the
stylesheet can lay every row out as a small card instead of a wide table.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from biomem.health.status_chart import chart_svg

__all__ = ["SECTIONS", "esc", "render_sections"]

# Section ids, in page order; the script swaps each one's contents on refresh.
SECTIONS = (
    "summary",
    "components",
    "stages",
    "chart",
    "breakers",
    "alerts",
    "dead-letters",
    "recovery",
)


def esc(value: Any) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ago(seconds: float) -> str:
    future = seconds < 0
    s = abs(seconds)
    if s < 90:
        text = f"{s:.0f} s"
    elif s < 90 * 60:
        text = f"{s / 60:.0f} min"
    elif s < 36 * 3600:
        text = f"{s / 3600:.1f} h"
    else:
        text = f"{s / 86400:.1f} d"
    return f"in {text}" if future else f"{text} ago"


def when(value: Any, now: datetime) -> str:
    """A time people read: UTC clock time and how long ago (or until), with the ISO in a title."""
    moment = _parse(value)
    if moment is None:
        return "—"
    clock = f"{moment:%H:%M:%S}" if moment.date() == now.date() else f"{moment:%Y-%m-%d %H:%M}"
    label = f"{clock} UTC · {_ago((now - moment).total_seconds())}"
    return f'<time datetime="{esc(value)}" title="{esc(value)}">{esc(label)}</time>'


def _cls(value: Any) -> str:
    """``value`` as one CSS class word (statuses and states): nothing else gets through."""
    return re.sub(r"[^a-z0-9_-]", "", str(value).lower())[:40] or "unknown"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else "—"


def _badge(status: Any, text: Any = None) -> str:
    shown = text if text is not None else status
    return f'<span class="badge s-{_cls(status)}">{esc(shown)}</span>'


def _percent(rate: Any) -> str:
    if not isinstance(rate, int | float) or rate < 0:
        return "—"  # below the breaker's minimum number of calls: no rate yet
    return f"{100 * rate:.0f} %"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "—"
    return f"{value:.2f} s" if value < 60 else f"{value / 60:.1f} min"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str, row_attrs: str = ""
) -> str:
    """A table whose cells are already HTML; each cell is labelled for the narrow layout."""
    body = [
        f"<tr{row_attrs}>"
        + "".join(
            f'<td data-label="{esc(h)}"><div>{cell}</div></td>'
            for h, cell in zip(headers, row, strict=True)
        )
        + "</tr>"
        for row in rows
    ]
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    # The wrapper scrolls a table wider than the screen (a long error) instead of the page.
    return (
        f'<div class="table"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _error(section: Mapping[str, Any]) -> str:
    error = section.get("error")
    return f'<p class="error">unreadable: {esc(error)}</p>' if error else ""


# --------------------------------------------------------------------------- sections


def _summary(data: Mapping[str, Any], now: datetime) -> str:
    troubled = [c for c in data["components"] if c["status"] != "healthy"]
    words = ", ".join(f"{c['name']} {c['status']}" for c in troubled) or "all components healthy"
    return (
        f'<p class="overall">{_badge(data["status"], data["internal_status"])}'
        f' <span class="words">{esc(words)}</span></p>'
        f'<p class="meta">as of {when(data["generated_at"], now)} · checks every'
        f" {esc(_number(data['interval_s']))} s</p>"
    )


def _strip(timeline: Sequence[Mapping[str, Any]]) -> str:
    """The last hour as the monitor's one-minute slots, oldest on the left.

    A slot shows the worst status checked in it; a slot without a check shows
    the last result while it is still in effect (lighter: ``data-carried``);
    one without either is a gap, shown as unknown.
    """
    cells = []
    checks = gaps = 0
    for slot in timeline:
        start = _parse(slot.get("start"))
        status = str(slot.get("status") or "unknown")
        n = int(slot.get("checks") or 0)
        checks += n
        moment = f"{start:%H:%M} UTC" if start is not None else "?"
        if slot.get("gap"):
            gaps += 1
            label, attrs = f"{moment}: no check (unknown)", ""
        elif slot.get("carried"):
            label, attrs = f"{moment}: {status} (no check, last result in effect)", " data-carried"
        else:
            label, attrs = f"{moment}: {status} ({n} check{'s' if n != 1 else ''})", ""
        cells.append(f'<i class="s-{_cls(status)}"{attrs} title="{esc(label)}"></i>')
    summary = f"last hour: {checks} checks, {gaps} minutes without a result"
    return f'<div class="strip" role="img" aria-label="{esc(summary)}">{"".join(cells)}</div>'


def _measurement(m: Mapping[str, Any]) -> str:
    value, unit = m.get("value"), m.get("unit")
    if isinstance(value, int | float) and unit == "ratio":
        value, unit = round(100 * value, 1), "%"
    shown = "—" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    unit = f" {unit}" if unit else ""
    return f'<li class="s-{_cls(m["status"])}">{esc(m["name"])}: {esc(shown + unit)}</li>'


def _components(data: Mapping[str, Any], now: datetime) -> str:
    cards = []
    for c in data["components"]:
        output = f'<p class="output">{esc(c["output"])}</p>' if c.get("output") else ""
        measurements = "".join(_measurement(m) for m in c.get("measurements", []))
        cards.append(
            f'<article class="component" data-component="{esc(c["name"])}"'
            f' data-status="{esc(c["status"])}" data-wire="{esc(c["wire"])}">'
            f"<h3>{esc(c['name'])} {_badge(c['status'])}"
            f"<small>{'required' if c['required'] else 'optional'}</small></h3>"
            f'{output}<ul class="measurements">{measurements}</ul>'
            f"{_strip(c.get('timeline', []))}"
            f'<p class="meta">checked {when(c["checked_at"], now)}</p></article>'
        )
    return "".join(cards) or '<p class="empty">no component is monitored</p>'


def _share(llm: Any, fallback: Any) -> str:
    llm_n = int(llm) if isinstance(llm, int | float) else 0
    fallback_n = int(fallback) if isinstance(fallback, int | float) else 0
    total = llm_n + fallback_n
    if not total:
        return "—"
    return f"{100 * llm_n / total:.0f} % LLM · {100 * fallback_n / total:.0f} % fallback"


_NOT_TIMED = {
    "on_demand": "on demand (biomem ingest)",
    "paused": _badge("paused"),
    "not_scheduled": "not scheduled",
    "unknown": "—",
}


def _upcoming(stage: Mapping[str, Any], now: datetime) -> str:
    """The next run: the scheduler's time, "paused", or why there is none."""
    state = str(stage.get("next_state") or "")
    if state in _NOT_TIMED:
        return _NOT_TIMED[state]
    nxt = stage.get("next_run")
    moment = _parse(nxt)
    if moment is None:
        return "after the first run"  # an estimate for an interval stage that never ran
    if moment <= now:
        return "due now"  # waits for the job in flight
    shown = when(nxt, now)
    return shown + " <small>(estimated)</small>" if state == "estimated" else shown


def _stages(data: Mapping[str, Any], now: datetime) -> str:
    section = data["stages"]
    rows = []
    for s in section["rows"]:
        if s["status"] is None:
            last = "never"
        else:
            last = f"{_badge(s['status'])} {when(s['started_at'], now)}"
        if s.get("error"):
            last += f'<br><span class="error">{esc(s["error"])}</span>'
        upcoming = _upcoming(s, now)
        schedule = f"<br><small>{esc(s['schedule'])}</small>" if s.get("schedule") else ""
        rows.append(
            [
                f"<strong>{esc(s['stage'])}</strong>",
                last,
                upcoming + schedule,
                _seconds(s.get("duration_s")),
                esc(s["items"]) if s.get("items") is not None else "—",
                esc(_share(s.get("llm"), s.get("fallback"))),
                esc(_share(s.get("llm_24h"), s.get("fallback_24h"))),
            ]
        )
    headers = ("stage", "last run", "next run", "duration", "items", "LLM share", "LLM share 24 h")
    return _error(section) + _table(headers, rows, empty="no stage")


def _breakers(data: Mapping[str, Any], now: datetime) -> str:
    rows = [
        [
            f"<strong>{esc(b['name'])}</strong>",
            _badge(b["state"]),
            esc(_percent(b["failure_rate"])),
            esc(_percent(b["slow_call_rate"])),
            esc(b["calls"]),
            esc(b["not_permitted_calls"]),
            esc(f"{b['retry_after_s']:.0f} s") if b.get("retry_after_s") else "—",
        ]
        for b in data["breakers"]
    ]
    headers = ("breaker", "state", "failure rate", "slow-call rate", "calls", "refused", "retry in")
    return _table(headers, rows, empty="no breaker")


def _alerts(data: Mapping[str, Any], now: datetime) -> str:
    section = data["alerts"]
    if not section["running"]:
        return '<p class="empty">alerting: not running</p>'
    rows = [
        [
            f"<strong>{esc(a['name'])}</strong>",
            esc(a["component"]) or "—",
            _badge(a["severity"] or "unknown", a["severity"] or "—"),
            esc(a["state"]),
            when(a["since"], now),
            esc(a["summary"]) or "—",
        ]
        for a in section["active"]
    ]
    headers = ("alert", "component", "severity", "state", "since", "summary")
    undelivered = int(section["undelivered"])
    note = (
        f'<p class="{"warn" if undelivered else "meta"}">'
        f"undelivered notifications: <strong>{undelivered}</strong></p>"
    )
    return _error(section) + note + _table(headers, rows, empty="no active alert")


def _dead_letters(data: Mapping[str, Any], now: datetime) -> str:
    section = data["dead_letters"]
    counts = "".join(
        f'<li class="dlq-{_cls(status)}"><strong>{esc(n)}</strong> {esc(status)}</li>'
        for status, n in section["counts"].items()
    )
    rows = [
        [
            esc(d["operation"]),
            esc(d["component"]),
            _badge(d["status"]),
            esc(d["attempts"]),
            when(d["first_failed_at"], now),
            when(d["next_attempt_at"], now) if d["status"] == "pending" else "—",
            f'<span class="error">{esc(d["error"])}</span>',
        ]
        for d in section["oldest"]
    ]
    headers = ("operation", "component", "status", "attempts", "first failed", "next try", "error")
    return (
        _error(section)
        + f'<ul class="counts">{counts}</ul>'
        + _table(headers, rows, empty="no open dead letter")
    )


def _recovery(data: Mapping[str, Any], now: datetime) -> str:
    section = data["recovery"]
    if not section["running"]:
        return '<p class="empty">recovery: not running</p>'
    rows = [
        [
            when(a["at"], now),
            esc(a["rule"]),
            esc(a["action"]),
            esc(a["target"]),
            _badge("skipped" if "skip" in str(a["result"] or "").lower() else a["result"]),
            esc(a["reason"]) or "—",
        ]
        for a in section["actions"]
    ]
    note = f'<p class="meta">recent skips: {esc(section["skips"])}</p>'
    headers = ("at", "rule", "action", "target", "result", "reason")
    return _error(section) + note + _table(headers, rows, empty="no recovery action yet")


def _chart(data: Mapping[str, Any], now: datetime) -> str:
    return _error(data["chart"]) + chart_svg(data["chart"])


_RENDERERS = {
    "summary": _summary,
    "components": _components,
    "stages": _stages,
    "chart": _chart,
    "breakers": _breakers,
    "alerts": _alerts,
    "dead-letters": _dead_letters,
    "recovery": _recovery,
}


def render_sections(data: Mapping[str, Any]) -> dict[str, str]:
    """Each section's inner HTML, keyed by its element id."""
    now = _parse(data["generated_at"])
    assert now is not None, "gather_status always sets generated_at"
    return {name: _RENDERERS[name](data, now) for name in SECTIONS}
