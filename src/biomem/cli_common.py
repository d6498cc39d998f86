"""What every command shares: exit codes, one-line errors, start-up, the opened app."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

import typer

from biomem.app import App, open_app
from biomem.config import Settings, load_settings
from biomem.logging import configure_logging
from biomem.resilience.errors import BiomemError, ConfigurationError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "bootstrap",
    "fail",
    "guarded",
    "opened",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int) -> typer.Exit:
    """Write ``biomem: message`` as one line on standard error; return the exit to raise."""
    sys.stderr.write(f"biomem: {message}\n")
    return typer.Exit(code)


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Turn biomem's own errors into one line on standard error and an exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ConfigurationError as exc:
            raise fail(f"configuration error: {exc}", EXIT_CONFIG) from None
        except BiomemError as exc:
            raise fail(str(exc), EXIT_FAILED) from None

    return wrapper


def bootstrap() -> Settings:
    """Load the settings and configure logging; raises ConfigurationError on bad values."""
    # Memories are private: every file biomem creates (store, WAL, dead letters) is 0600.
    os.umask(0o077)
    settings = load_settings()
    logs = settings.logging
    configure_logging(level=logs.level, fmt=logs.format, file=logs.file)
    return settings


@contextmanager
def opened(settings: Settings) -> Iterator[App]:
    """The application's parts (store, PostgreSQL client, DLQ), closed on exit."""
    application = open_app(settings)
    try:
        yield application
    finally:
        application.close()
