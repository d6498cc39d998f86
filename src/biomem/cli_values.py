"""Option values the commands parse themselves: rates, ages, dead-letter filters.

Each parser raises :class:`OptionValueError` with what the option accepts,
in words; the command turns it into one line on standard error and exit 2
before it opens anything. Durations use the project's one unit table
(:data:`biomem.config.environment.UNIT_SECONDS`), as settings do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from biomem.config.environment import UNIT_SECONDS, duration_seconds

__all__ = [
    "AGE_ACCEPTS",
    "FILTER_ACCEPTS",
    "RATE_ACCEPTS",
    "LetterFilter",
    "OptionValueError",
    "UsageError",
    "parse_age",
    "parse_filters",
    "parse_rate",
]

RATE_ACCEPTS: Final = "a rate above 0 such as 5/s, 30/min or 100/h, or a number per second"
AGE_ACCEPTS: Final = "an age such as 7d, 12h, 30m or 90s, or a number of days (0 to 36500 days)"
# The keys a user sees in `biomem dlq list --json`, and the short one for the error.
_FILTER_KEYS: Final = {
    "operation": "operation",
    "component": "component",
    "error": "error_class",
    "error_class": "error_class",
}
FILTER_ACCEPTS: Final = (
    "KEY=VALUE with KEY one of operation, component, error (repeatable; every filter must match)"
)
# Spelled-out units people write in a rate; the table has the one-letter ones.
_RATE_UNIT_ALIASES: Final = {"sec": "s", "min": "m", "hour": "h", "day": "d"}
_MAX_AGE: Final = timedelta(days=36500)


class UsageError(ValueError):
    """A command's arguments cannot be used as given; ``str()`` is the one line to show."""


class OptionValueError(UsageError):
    """A command-line option's value is not one it accepts.

    Attributes:
        option: the option, e.g. ``--rate``.
        value: the value given.
        accepts: what the option accepts, in words.
    """

    def __init__(self, option: str, value: str, accepts: str) -> None:
        self.option = option
        self.value = value
        self.accepts = accepts
        super().__init__(f"{option} {value!r}: accepts {accepts}")


def _number(text: str) -> float:
    """A finite float, or ValueError (``float()`` takes "nan" and "inf")."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text}")
    return value


def parse_rate(text: str) -> float:
    """Replays per second in ``"5"``, ``"5/s"``, ``"30/min"``, ``"100/h"`` or ``"10/5m"``.

    Raises:
        OptionValueError: anything else, or a rate that is not above 0.
    """
    count, slash, per = text.strip().lower().partition("/")
    try:
        number = _number(count)
        if slash:
            unit = per.strip()
            unit = _RATE_UNIT_ALIASES.get(unit, unit)
            # "/s" means "per 1 s"; "/5m" per five minutes.
            seconds = duration_seconds(f"1{unit}" if unit in UNIT_SECONDS else unit)
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError("the period must be above 0")
        else:
            seconds = 1.0
    except ValueError:
        raise OptionValueError("--rate", text, RATE_ACCEPTS) from None
    rate = number / seconds
    if not (math.isfinite(rate) and rate > 0):
        raise OptionValueError("--rate", text, RATE_ACCEPTS)
    return rate


def parse_age(text: str) -> timedelta:
    """The age in ``"7d"``, ``"12h"``, ``"30m"``, ``"90s"``, or a plain number of days.

    A plain number counts days, as ``--older-than`` always did; with a unit
    it is read like every other duration of biomem.

    Raises:
        OptionValueError: anything else, a negative age, or one beyond 100 years.
    """
    stripped = text.strip().lower()
    try:
        if stripped and stripped[-1] in UNIT_SECONDS:
            seconds = duration_seconds(stripped)
        else:
            seconds = _number(stripped) * UNIT_SECONDS["d"]
        if not (math.isfinite(seconds) and 0 <= seconds <= _MAX_AGE.total_seconds()):
            raise ValueError("out of range")
    except ValueError:
        raise OptionValueError("--older-than", text, AGE_ACCEPTS) from None
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class LetterFilter:
    """Which dead letters a command applies to; None matches anything."""

    operation: str | None = None
    component: str | None = None
    error_class: str | None = None


def parse_filters(values: Iterable[str], *, operation: str | None = None) -> LetterFilter:
    """The ``--filter KEY=VALUE`` options as one filter, all of them to match.

    ``operation`` is the older ``--operation`` option, the same as
    ``--filter operation=...``. A key given twice with different values
    could never match (the filters are ANDed) and is refused rather than
    silently selecting nothing.

    Raises:
        OptionValueError: an unknown key, a missing ``=`` or value, or a conflict.
    """
    chosen: dict[str, str] = {}
    given = [f"operation={operation}"] if operation is not None else []
    for item in [*given, *values]:
        key, equals, value = item.partition("=")
        field = _FILTER_KEYS.get(key.strip().lower())
        value = value.strip()
        if field is None or not equals or not value:
            raise OptionValueError("--filter", item, FILTER_ACCEPTS)
        if chosen.setdefault(field, value) != value:
            raise OptionValueError(
                "--filter",
                item,
                f"each key once ({key.strip()} is already {chosen[field]!r}; "
                "filters are ANDed, so two values never match)",
            )
    return LetterFilter(
        operation=chosen.get("operation"),
        component=chosen.get("component"),
        error_class=chosen.get("error_class"),
    )
