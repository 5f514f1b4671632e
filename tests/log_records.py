"""The log records one of our loggers emits during a test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def recorded(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    recorder = _Recorder()
    logger = logging.getLogger(logger_name)
    logger.addHandler(recorder)
    try:
        yield recorder.records
    finally:
        logger.removeHandler(recorder)
