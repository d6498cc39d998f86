"""The one logging pipeline: structlog, JSON lines by default.

Processor order: context → level/time → exception formatting → *hooks* →
redaction → line sanitising → renderer. Hooks (:func:`add_processor`) let later
subsystems insert processors before rendering; redaction always runs after them
so nothing a hook adds can leak a secret, and sanitising (which only escapes
control characters and ANSI sequences) then makes every event one line in every
format. Standard-library loggers (uvicorn, apscheduler, psycopg) are routed
through the same pipeline.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from biomem.config import LogFormat, LogLevel
from biomem.logfile import LogFile
from biomem.resilience.redact import RedactSecrets, SanitizeLines

__all__ = ["add_processor", "configure_logging", "get_logger", "log_file"]

_hooks: list[Processor] = []
_log_file: LogFile | None = None


def log_file() -> LogFile | None:
    """The log file configured by :func:`configure_logging` (BIOMEM_LOG_FILE), if any."""
    return _log_file


class _AlsoToFile:
    """The last processor: writes the event as JSON to the log file, then renders it."""

    def __init__(self, renderer: Processor, file: LogFile) -> None:
        self._renderer = renderer
        self._json = structlog.processors.JSONRenderer(sort_keys=False)
        self._file = file

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        # A copy: the console renderer takes keys out of the dict it renders.
        self._file.write(str(self._json(logger, name, dict(event_dict))))
        return self._renderer(logger, name, event_dict)


def add_processor(processor: Processor) -> None:
    """Insert ``processor`` into the pipeline before redaction and rendering.

    Call before :func:`configure_logging`; configuring again picks it up.
    """
    if processor not in _hooks:
        _hooks.append(processor)


def configure_logging(
    *,
    level: LogLevel = LogLevel.INFO,
    fmt: LogFormat = LogFormat.AUTO,
    stream: TextIO | None = None,
    file: Path | None = None,
) -> None:
    """Configure structlog and the standard library to write one pipeline to ``stream``.

    Args:
        level: the minimum level written.
        fmt: json, console, or auto (console on a TTY, else json).
        stream: where lines go; standard error by default so that standard
            output stays for command results.
        file: a file that also receives every line, as JSON (see :mod:`biomem.logfile`).
    """
    global _log_file
    out = stream if stream is not None else sys.stderr
    use_console = fmt is LogFormat.CONSOLE or (fmt is LogFormat.AUTO and out.isatty())
    renderer: Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    if _log_file is not None and (file is None or _log_file.path != file.expanduser().resolve()):
        _log_file.close()
        _log_file = None
    if file is not None:
        _log_file = _log_file or LogFile(file)
        renderer = _AlsoToFile(renderer, _log_file)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Processor] = [
        structlog.processors.format_exc_info,
        *_hooks,
        RedactSecrets(),
        # Sanitise after redaction: truncating first could cut a card number or key
        # short of its pattern and let the rest through.
        SanitizeLines(),
    ]
    numeric = logging.getLevelName(level.value.upper())
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *tail,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Route the standard library (uvicorn, apscheduler, psycopg) through the same
    # processors so that every line has one shape and passes redaction.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """Return a structured logger bound with ``module=name``.

    The logger stays lazy (no ``bind()`` here) so module-level loggers created
    at import time pick up the configuration made later by :func:`configure_logging`.
    """
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(module=name)
    return logger
