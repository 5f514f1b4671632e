"""Structured logging: events with fields, as JSON lines or readable text.

`event(log, "notification.sent", id=..., ms=...)` logs one event. Fields are ids, names,
codes and timings; callers never pass bodies, context values, attachments or secrets.
The request id of the HTTP request being served (X-Request-ID) is added to every event.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_log = logging.getLogger("app")


def event(logger: logging.Logger, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


class _Fields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}))
        if (current := request_id.get()) is not None:
            fields.setdefault("request_id", current)
        record.fields = fields
        return True


class TextFormatter(logging.Formatter):
    """`2026-11-24 11:31:53 INFO notification.sent id=… ms=4.1`"""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items() if v is not None)
        line = f"{self.formatTime(record)} {record.levelname} {record.getMessage()} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **{k: v for k, v in _fields(record).items() if v is not None},
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, "fields", {})
    return fields


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


def configure_logging(*, level: str, fmt: str) -> None:
    """Give the app's loggers one handler (at start-up, not at import)."""
    # Our formatters print none of these; the logging HOWTO's advice for speed is to skip them
    # (finding the caller walks the stack on every event).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Fields())
    for old in list(_log.handlers):
        _log.removeHandler(old)
    _log.addHandler(handler)
    _log.propagate = False
    _log.setLevel(level)
