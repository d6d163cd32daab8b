"""What the app and uvicorn logged during a test, and whether any of it was an error."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager


def logged(caplog) -> list:
    """Every record of the test so far, setup and call included: in a fixture's teardown, ``caplog.records``
    holds the teardown's alone."""
    return [r for phase in ("setup", "call") for r in caplog.get_records(phase)] + caplog.records


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextmanager
def recording_logs() -> Iterator[list[logging.LogRecord]]:
    """Everything the app and uvicorn log while the block runs (uvicorn's loggers do not propagate to the root)."""
    handler = _Kept()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def loud(records: list[logging.LogRecord]) -> list[str]:
    """The records logged at ERROR or with a traceback, as ``logger: message``."""
    return [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR or r.exc_info]
