"""FloodGuard: exception records become one line, repeats are collapsed, memory is bounded."""

from __future__ import annotations

import io
import logging

import pytest

from estcoap.logsafe import FloodGuard, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged():
    """A logger writing formatted lines to a buffer through a FloodGuard (the guard is set
    on the handler by each test)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.logsafe")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, handler, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_exception_becomes_one_line_without_traceback(logged):
    logger, handler, stream = logged
    handler.addFilter(FloodGuard())
    try:
        raise ValueError("bad byte 0xff\nsecond line")
    except ValueError:
        logger.exception("request from %s failed", "192.0.2.1")
    assert _lines(stream) == [
        "ERROR test.logsafe: request from 192.0.2.1 failed: ValueError: bad byte 0xff second line"
    ]


def test_tracebacks_kept_when_debugging(logged):
    logger, handler, stream = logged
    handler.addFilter(FloodGuard(tracebacks=True))
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    assert "Traceback (most recent call last)" in stream.getvalue()


def test_multiline_message_keeps_its_first_line(logged):
    logger, handler, stream = logged
    handler.addFilter(FloodGuard())
    logger.error("Fatal error on SSL transport\nprotocol: <object at 0x1>\ntransport: <0x2>")
    assert _lines(stream) == ["ERROR test.logsafe: Fatal error on SSL transport"]


def test_repeats_collapse_and_the_count_is_reported_after_the_window(logged):
    logger, handler, stream = logged
    clock = Clock()
    handler.addFilter(FloodGuard(window=10.0, burst=2, clock=clock))
    for port in range(100):  # one kind: the address varies, the template does not
        logger.info("dropped client %s", f"192.0.2.1:{port}")
    assert len(_lines(stream)) == 2
    clock.now += 10.0
    logger.info("dropped client %s", "192.0.2.9:1")
    lines = _lines(stream)
    assert len(lines) == 3
    assert lines[-1] == "INFO test.logsafe: dropped client 192.0.2.9:1 [98 similar suppressed]"


def test_different_kinds_are_limited_separately(logged):
    logger, handler, stream = logged
    handler.addFilter(FloodGuard(burst=1, clock=Clock()))
    for _ in range(10):
        logger.info("kind a")
        logger.warning("kind a")
        logger.info("kind b")
    assert _lines(stream) == [
        "INFO test.logsafe: kind a",
        "WARNING test.logsafe: kind a",
        "INFO test.logsafe: kind b",
    ]


def test_memory_is_bounded(logged):
    logger, handler, _ = logged
    guard = FloodGuard(max_keys=8, clock=Clock())
    handler.addFilter(guard)
    for i in range(1000):
        logger.info(f"distinct message {i}")  # a template per call: the worst case
    assert len(guard._kinds) == 8


def test_exempt_loggers_are_never_collapsed(logged):
    logger, handler, stream = logged
    handler.addFilter(FloodGuard(burst=1, exempt=("test.logsafe",), clock=Clock()))
    for serial in range(20):
        logger.info("issued serial %d", serial)
    assert len(_lines(stream)) == 20


def test_install_logs_to_the_stream_through_a_guard():
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = install("info", stream=stream)
    try:
        for _ in range(50):
            try:
                raise ConnectionResetError("peer went away")
            except ConnectionResetError:
                logging.getLogger("aiohttp.server").exception("Error handling request")
        logging.getLogger("test.install").debug("not shown at INFO")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = _lines(stream)
    assert 1 <= len(lines) <= 5
    assert all("Traceback" not in line for line in lines)
    assert "Error handling request: ConnectionResetError: peer went away" in lines[0]


def test_install_refuses_an_unknown_level():
    with pytest.raises(ValueError):
        install("loud")
