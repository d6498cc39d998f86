"""The option values `biomem dlq` parses: rates, ages and dead-letter filters."""

from __future__ import annotations

from datetime import timedelta

import pytest

from biomem.cli_values import (
    LetterFilter,
    OptionValueError,
    parse_age,
    parse_filters,
    parse_rate,
)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        pytest.param("5", 5.0, id="plain-number-per-second"),
        pytest.param("0.5", 0.5, id="fraction"),
        pytest.param("5/s", 5.0, id="per-second"),
        pytest.param("5/sec", 5.0, id="per-sec"),
        pytest.param("30/min", 0.5, id="per-minute"),
        pytest.param("30/m", 0.5, id="per-m"),
        pytest.param("360/h", 0.1, id="per-hour"),
        pytest.param("10/5m", 10 / 300, id="per-five-minutes"),
        pytest.param(" 2 / S ", 2.0, id="spaces-and-case"),
    ],
)
def test_rates_are_read_as_replays_per_second(text: str, per_second: float) -> None:
    """A rate is N per unit (s, min, h, d or a duration) or a plain number per second."""
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("fast", id="word"),
        pytest.param("", id="empty"),
        pytest.param("0", id="zero"),
        pytest.param("-1/s", id="negative"),
        pytest.param("0/s", id="zero-per-second"),
        pytest.param("5/", id="no-unit"),
        pytest.param("5/fortnight", id="unknown-unit"),
        pytest.param("5/0s", id="zero-period"),
        pytest.param("nan", id="nan"),
        pytest.param("inf/s", id="infinite"),
        pytest.param("5/s/s", id="two-slashes"),
    ],
)
def test_bad_rates_name_the_option_and_what_it_accepts(text: str) -> None:
    """A rate that is not positive and finite, or not a rate at all, is refused in one line."""
    with pytest.raises(OptionValueError) as caught:
        parse_rate(text)
    message = str(caught.value)
    assert message.startswith(f"--rate {text!r}: accepts ")
    assert "5/s" in message and "30/min" in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "age"),
    [
        pytest.param("7d", timedelta(days=7), id="days"),
        pytest.param("12h", timedelta(hours=12), id="hours"),
        pytest.param("30m", timedelta(minutes=30), id="minutes"),
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("7", timedelta(days=7), id="plain-number-is-days"),
        pytest.param("0.5", timedelta(hours=12), id="fraction-of-a-day"),
        pytest.param("0", timedelta(0), id="zero"),
        pytest.param(" 2D ", timedelta(days=2), id="spaces-and-case"),
    ],
)
def test_ages_take_a_unit_or_a_plain_number_of_days(text: str, age: timedelta) -> None:
    """--older-than reads 7d/12h/30m/90s like every biomem duration, and a bare number as days."""
    assert parse_age(text) == age


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("7w", id="unknown-unit"),
        pytest.param("-1d", id="negative"),
        pytest.param("-3", id="negative-days"),
        pytest.param("", id="empty"),
        pytest.param("d", id="unit-only"),
        pytest.param("1e9", id="beyond-a-century"),
        pytest.param("inf", id="infinite"),
        pytest.param("nan", id="nan"),
    ],
)
def test_bad_ages_name_the_option_and_what_it_accepts(text: str) -> None:
    """An age that is not a duration within 0 to 100 years is refused in one line."""
    with pytest.raises(OptionValueError) as caught:
        parse_age(text)
    assert str(caught.value).startswith(f"--older-than {text!r}: accepts an age such as 7d")


def test_filters_are_anded_into_one_filter() -> None:
    """Each KEY=VALUE sets one field; error and error_class are the same key; none: all."""
    assert parse_filters([]) == LetterFilter()
    assert parse_filters(
        ["operation=ingest_postgres", "component=postgresql", "error=TimeoutError"]
    ) == LetterFilter(
        operation="ingest_postgres", component="postgresql", error_class="TimeoutError"
    )
    assert parse_filters(["error_class=psycopg.OperationalError"]) == LetterFilter(
        error_class="psycopg.OperationalError"
    )
    assert parse_filters(["Component = ollama"]) == LetterFilter(component="ollama")
    assert parse_filters(["operation=a=b"]) == LetterFilter(operation="a=b")


def test_the_operation_option_is_the_operation_filter() -> None:
    """--operation X is --filter operation=X; given both, they must agree."""
    assert parse_filters([], operation="writeback") == LetterFilter(operation="writeback")
    both = parse_filters(["operation=writeback"], operation="writeback")
    assert both == LetterFilter(operation="writeback")
    with pytest.raises(OptionValueError, match="each key once"):
        parse_filters(["operation=ingest_postgres"], operation="writeback")


@pytest.mark.parametrize(
    "item",
    [
        pytest.param("colour=red", id="unknown-key"),
        pytest.param("operation", id="no-equals"),
        pytest.param("operation=", id="no-value"),
        pytest.param("=writeback", id="no-key"),
        pytest.param("status=dead", id="status-is-its-own-option"),
    ],
)
def test_bad_filters_name_the_option_and_the_keys_it_accepts(item: str) -> None:
    """An unknown key or a malformed filter is refused, naming --filter and its keys."""
    with pytest.raises(OptionValueError) as caught:
        parse_filters(["component=postgresql", item])
    assert str(caught.value) == (
        f"--filter {item!r}: accepts KEY=VALUE with KEY one of operation, component, error "
        "(repeatable; every filter must match)"
    )


def test_one_key_with_two_values_is_refused() -> None:
    """Two values for one key could never both match, so the second is refused, not ignored."""
    with pytest.raises(OptionValueError) as caught:
        parse_filters(["component=postgresql", "component=ollama"])
    assert str(caught.value).startswith("--filter 'component=ollama': accepts each key once")
    assert parse_filters(["component=ollama", "component=ollama"]) == LetterFilter(
        component="ollama"
    )
