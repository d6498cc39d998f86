"""Dead-letter replay's parts: the handler registry, the replay events and report, helpers.

Import the public names from :mod:`biomem.resilience.deadletter`.
"""

from __future__ import annotations

import asyncio
import json
import random
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar, overload

from biomem.resilience._dlq_sql import DeadLetter, DeadLetterStatus
from biomem.resilience.errors import InputError
from biomem.resilience.redact import redact_text, redact_value

MESSAGE_MAX_CHARS: Final = 500
STACK_MAX_BYTES: Final = 8 * 1024
_TRUNCATED: Final = "…[truncated]\n"
_REPLAYABLE: Final = (DeadLetterStatus.PENDING, DeadLetterStatus.DEAD)

Handler = Callable[[dict[str, Any]], None] | Callable[[dict[str, Any]], Awaitable[None]]
H = TypeVar("H", bound=Handler)


class UnknownOperationError(InputError):
    """A dead letter names an operation no handler is registered for.

    Attributes:
        operation: the unknown name.
    """

    def __init__(self, operation: str, known: Iterable[str]) -> None:
        self.operation = operation
        names = ", ".join(known) or "none"
        super().__init__(
            f"no replay handler is registered for operation {operation!r} (registered: {names})"
        )


class ReplayRegistry:
    """Operation names mapped to the handlers that run them again."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @overload
    def register(self, operation: str, *, replace: bool = False) -> Callable[[H], H]: ...

    @overload
    def register(self, operation: str, handler: H, *, replace: bool = False) -> H: ...

    def register(
        self, operation: str, handler: H | None = None, *, replace: bool = False
    ) -> H | Callable[[H], H]:
        """Register ``handler`` (sync or async) for ``operation``; without it, a decorator.

        Raises:
            ValueError: ``operation`` is empty, or already registered and not ``replace``.
        """
        if not operation:
            raise ValueError("operation must be a non-empty name")

        def add(fn: H) -> H:
            if operation in self._handlers and not replace:
                raise ValueError(f"operation {operation!r} already has a replay handler")
            self._handlers[operation] = fn
            return fn

        return add if handler is None else add(handler)

    def get(self, operation: str) -> Handler:
        """The handler for ``operation``.

        Raises:
            UnknownOperationError: none is registered.
        """
        try:
            return self._handlers[operation]
        except KeyError:
            raise UnknownOperationError(operation, self.names()) from None

    def names(self) -> tuple[str, ...]:
        """Registered operation names, sorted."""
        return tuple(sorted(self._handlers))

    def __contains__(self, operation: object) -> bool:
        return operation in self._handlers


@dataclass(frozen=True, slots=True)
class DeadLetterRecovered:
    """A replay ran successfully; ``letter`` is now RECOVERED."""

    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class DeadLetterFailed:
    """A replay failed; ``letter`` is PENDING again until ``letter.next_attempt_at``."""

    letter: DeadLetter


@dataclass(frozen=True, slots=True)
class DeadLetterDead:
    """A replay failed for the last time; ``letter`` is DEAD and needs a person."""

    letter: DeadLetter


DeadLetterEvent = DeadLetterRecovered | DeadLetterFailed | DeadLetterDead


class DeadLetterListener(Protocol):
    """Receives replay events; its exceptions are logged and swallowed."""

    def __call__(self, event: DeadLetterEvent, /) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    """What a replay did, as letter ids.

    Attributes:
        selected: the letters chosen to run (in a dry run: the ones that would run).
        recovered: ran successfully.
        failed: failed and will be retried.
        dead: failed for the last time.
        skipped: not run: component unhealthy, or (manual replay) not replayable.
        dry_run: nothing was run or changed.
    """

    selected: tuple[str, ...] = ()
    recovered: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass
class _Tally:
    selected: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def report(self, *, dry_run: bool = False) -> ReplayReport:
        return ReplayReport(
            selected=tuple(self.selected),
            recovered=tuple(self.recovered),
            failed=tuple(self.failed),
            dead=tuple(self.dead),
            skipped=tuple(self.skipped),
            dry_run=dry_run,
        )


def backoff_delay_s(
    attempts: int, *, base_delay_s: float, max_delay_s: float, rng: random.Random
) -> float:
    """Seconds to wait after the ``attempts``-th failure: full jitter over a capped doubling.

    Uniform in ``[0, min(max_delay_s, base_delay_s * 2 ** (attempts - 1))]``.
    """
    exponent = min(max(attempts - 1, 0), 64)  # beyond 2**64 the cap wins anyway
    return rng.random() * min(max_delay_s, base_delay_s * 2.0**exponent)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _error_class(error: BaseException) -> str:
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _one_line(error: BaseException) -> str:
    # Redact before cutting, so a cut can never leave half a secret unmatched.
    text = " ".join(redact_text(str(error)).split())
    return text if len(text) <= MESSAGE_MAX_CHARS else text[: MESSAGE_MAX_CHARS - 1] + "…"


def _stack(error: BaseException) -> str:
    text = redact_text("".join(traceback.format_exception(error)))
    raw = text.encode("utf-8")
    if len(raw) <= STACK_MAX_BYTES:
        return text
    # Keep the end: the innermost frames and the error itself.
    keep = STACK_MAX_BYTES - len(_TRUNCATED.encode("utf-8"))
    return _TRUNCATED + raw[-keep:].decode("utf-8", "ignore")


def _clean_payload(payload: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    cleaned = {
        str(key): value if key in keep else redact_value(str(key), value)
        for key, value in payload.items()
    }
    # Round-trip now, so that what is stored is exactly what a replay will get.
    result: dict[str, Any] = json.loads(json.dumps(cleaned, allow_nan=False))
    return result


def _interval(rate_per_s: float | None) -> float:
    if rate_per_s is None:
        return 0.0
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    return 1.0 / rate_per_s


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable
