"""Structured JSON logs on stderr. Callers pass ids, types and field names only: never values."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TextIO, cast

import structlog


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written.

    Loggers are cached on first use; bound to the stream object of that moment, they would keep
    writing to it after stderr is redirected (a host like Lambda's or a test capture).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO", *, human: bool = False) -> None:
    """JSON lines; `human`: readable lines for a person at a terminal (operator commands)."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    rendering: list[structlog.typing.Processor] = (
        [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False, pad_event=30),
        ]
        if human
        else [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(sort_keys=True),
        ]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=cast("TextIO", _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    # botocore logs request bodies at DEBUG: keep it quiet whatever the level.
    for noisy in ("botocore", "aiobotocore", "urllib3", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]


def frames(exc: BaseException, limit: int = 12) -> list[str]:
    """Where an unexpected error came from, without its message (which may quote a value)."""
    tb = traceback.extract_tb(exc.__traceback__)[-limit:]
    return [f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}" for frame in tb]
