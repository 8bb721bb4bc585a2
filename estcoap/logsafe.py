"""Logging a peer cannot flood: one line per event unless debugging, repeats collapsed.

A server logs what peers make it do (a malformed request, a dropped TLS connection, a
failed handshake). Left alone, each such event writes a traceback, and a fuzzer or a
flood of garbage turns that into tens of megabytes of log. FloodGuard, a logging.Filter
put on the handler, bounds that:

* An exception record becomes one line ("message: ErrorType: text") unless tracebacks
  are asked for (DEBUG); so does a multi-line message (asyncio's "Fatal error on SSL
  transport" followed by protocol and transport reprs).
* Records of the same kind (logger, level, message template, exception type; not the
  peer's address, which an attacker varies) pass `burst` times per `window` seconds;
  the rest are counted, and the next line of that kind to pass says how many were
  suppressed.
* It remembers at most `max_keys` kinds (the least recently seen is forgotten), so its
  memory is bounded whatever the peers send.

install() puts it on a stderr handler for a long-running command (serve, gateway,
proxy); another handler can use it with handler.addFilter(FloodGuard(...)).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

# The longest one-line rendering of an exception; a peer's bytes can end up in its text.
_MAX_EXC_TEXT = 200
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The audit trail of issued certificates is not noise: never collapsed; nor is the request
# log (estcoap.observe.requestlog), one line per request by design at INFO.
AUDIT_LOGGERS = ("estcoap.ca", "estcoap.requests")
LOG_FORMATS = ("text", "json")


@dataclass
class _Kind:
    window_start: float
    passed: int = 0
    suppressed: int = 0


class FloodGuard(logging.Filter):
    """Shortens exception records to one line and rate-limits repeats (see module doc)."""

    def __init__(
        self,
        *,
        window: float = 10.0,
        burst: int = 5,
        max_keys: int = 1024,
        tracebacks: bool = False,
        exempt: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if window <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("FloodGuard needs window > 0, burst >= 1 and max_keys >= 1")
        self.window = window
        self.burst = burst
        self.max_keys = max_keys
        self.tracebacks = tracebacks
        self.exempt = tuple(exempt)
        self._clock = clock
        self._kinds: OrderedDict[tuple[str, int, str, str], _Kind] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        key = _kind_of(record)
        if not self._exempt(record.name):
            now = self._clock()
            kind = self._kinds.get(key)
            if kind is None or now - kind.window_start >= self.window:
                suppressed = kind.suppressed if kind else 0
                kind = _Kind(window_start=now)
                self._kinds[key] = kind
                self._forget_oldest()
                if suppressed:
                    _append(record, f" [{suppressed} similar suppressed]")
            self._kinds.move_to_end(key)
            if kind.passed >= self.burst:
                kind.suppressed += 1
                return False
            kind.passed += 1
        if not self.tracebacks:
            _one_line(record)
        return True

    def _exempt(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.exempt)

    def _forget_oldest(self) -> None:
        while len(self._kinds) > self.max_keys:
            self._kinds.popitem(last=False)


def _kind_of(record: logging.LogRecord) -> tuple[str, int, str, str]:
    template = str(record.msg).split("\n", 1)[0]
    exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return (record.name, record.levelno, template, exc_type)


def _append(record: logging.LogRecord, text: str) -> None:
    record.msg = record.getMessage() + text
    record.args = None


def _one_line(record: logging.LogRecord) -> None:
    message = record.getMessage()
    line = message.split("\n", 1)[0]
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        detail = str(exc).replace("\n", " ")
        summary = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        line = f"{line}: {summary[:_MAX_EXC_TEXT]}"
    if line != message or record.exc_info or record.stack_info:
        record.msg, record.args = line, None
        record.exc_info = record.exc_text = record.stack_info = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the structured fields a
    record carries (extra={"fields": {...}}, as the request log does)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:  # only at DEBUG: FloodGuard shortens it to one line otherwise
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def install(
    level: int | str = logging.WARNING, *, stream: TextIO | None = None, fmt: str = "text"
) -> logging.Handler:
    """Log to stderr (or stream) at level through a FloodGuard; tracebacks only at DEBUG.
    fmt: text (LOG_FORMAT) or json (one object per line, JsonFormatter).

    For a long-running server command; returns the handler (remove it to undo).
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(LOG_FORMAT))
    handler.setLevel(numeric)
    handler.addFilter(FloodGuard(tracebacks=numeric <= logging.DEBUG, exempt=AUDIT_LOGGERS))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
