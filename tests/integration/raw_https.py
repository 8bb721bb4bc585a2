"""Raw HTTP/1.1 over TLS on loopback: for requests no HTTP client library would send."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from estcoap.logsafe import FloodGuard


@dataclass
class Answer:
    status: int | None  # None: no status line came back
    head: bytes
    body: bytes
    closed: bool  # the server closed the connection (EOF) before we gave up


async def exchange(
    port: int, ctx: ssl.SSLContext, raw: bytes, *, wait: float = 20.0, source: str | None = None
) -> Answer:
    """Send raw bytes over a fresh TLS connection and read one response (to its
    Content-Length, or until the server closes), giving up after `wait` seconds. Interim
    1xx answers are skipped. `closed`: the server closed the connection before a
    complete response (or, with no Content-Length, to end it). source: a loopback address
    to send from (the server throttles failed authentication per source)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=ctx,
        server_hostname="127.0.0.1",
        local_addr=(source, 0) if source else None,
    )
    data = bytearray()
    closed = False
    try:
        writer.write(raw)
        async with asyncio.timeout(wait):
            while not _complete(data):
                if not (chunk := await reader.read(65536)):
                    closed = True
                    break
                data += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.transport.abort()
    return parse(bytes(data), closed)


def _complete(data: bytearray) -> bool:
    """A final response whose body (by its Content-Length) is all there."""
    while data.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in data:
        data = data.partition(b"\r\n\r\n")[2]  # type: ignore[assignment]
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False  # no length: the body ends when the server closes


def parse(data: bytes, closed: bool) -> Answer:
    while data.startswith(b"HTTP/1.1 1"):  # 100 Continue
        _, _, data = data.partition(b"\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return Answer(status, head, body, closed)


class LogLines:
    """Records from every logger, formatted as the CLI formats them, through a FloodGuard."""

    def __init__(self, guard: FloodGuard) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(guard)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@contextlib.contextmanager
def server_logs(guard: FloodGuard, level: int = logging.INFO) -> Iterator[LogLines]:
    """Install a guarded handler on the root logger at level for the duration."""
    logs = LogLines(guard)
    logs.handler.setLevel(level)
    root = logging.getLogger()
    old = root.level
    root.addHandler(logs.handler)
    root.setLevel(min(level, old) if old else level)
    try:
        yield logs
    finally:
        root.removeHandler(logs.handler)
        root.setLevel(old)
