"""Log lines as JSON objects, each carrying the job and request it is about.

Every visionq command calls `configure` once at start-up; after that any `logging` call
anywhere (ours, Celery's, gunicorn's, kombu's) becomes one line of JSON on stderr with
`time`, `level`, `logger` and `message`, plus, when known, `job_id`, `tenant`, `stage`,
`attempt` and `request_id`. Those come from a context variable that a pipeline step or an
API request sets for its duration (`context`, `bind`), so a line logged deep in a helper
names its job without being told. A context variable rather than a thread-local, because
it is per thread *and* per task, and Celery's threads pool reuses its threads.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from visionq.settings import Settings

#: What a line may say about the work it belongs to, in the order the text format shows it.
CONTEXT_FIELDS = ("request_id", "job_id", "tenant", "stage", "attempt")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("visionq_log_context", default=_EMPTY)


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields (None ones are left out) to the current context, until `reset(token)` or
    the end of the enclosing `context` block, whichever comes first."""
    known = {name: value for name, value in fields.items() if value is not None}
    return _context.set(MappingProxyType({**_context.get(), **known}))


def reset(token: Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """The fields for the lines logged inside the block, and whatever is bound inside it."""
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


class ContextFilter(logging.Filter):
    """Puts the current context on each record, without overriding a record's own `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class _TextFormatter(logging.Formatter):
    """For a person at a terminal: the usual line, then the context as name=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        known = [
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        ]
        return f"{line} [{' '.join(known)}]" if known else line


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return _TextFormatter()
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def configure(settings: Settings, *, level: int | str | None = None) -> None:
    """Send every logger's lines to stderr in the configured format, at `level` (default:
    the configured one). Safe to call again, as Celery does in each pool child."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(settings.log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    # billiard (Celery's prefork pool) logs a pool child's death on a logger of this name
    # that does not propagate: without a handler of its own the line would be bare text.
    logging.getLogger("multiprocessing").handlers = [handler]
    level = settings.log_level if level is None else level
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Python's warnings as log lines too, rather than bare text on stderr.
    logging.captureWarnings(True)
