"""Attacks on the HTTPS front over real TLS sockets (issue 11, items 10 and 11): odd header
bytes, slow heads and bodies, too many connections, and the log volume they produce."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl

import pytest

from estcoap.client import EstClient, generate_key
from estcoap.logsafe import FloodGuard
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    client_ssl,
    running,
)
from tests.integration.raw_https import exchange, server_logs

pytestmark = pytest.mark.timeout(120)

ENROLL = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\n"
AUTH = b"Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()) + b"\r\n"
PKCS10 = b"Content-Type: application/pkcs10\r\n"


async def test_non_utf8_expect_gets_417_not_500(ca_dir) -> None:
    async with running(ca_dir) as env:
        ctx = client_ssl(env.paths)
        raw = ENROLL + b"Expect: \xff\xfe100-continue\r\nContent-Length: 4\r\n\r\nabcd"
        answer = await exchange(env.server.port, ctx, raw)
        assert answer.status == 417
        assert b"only 100-continue" in answer.body
        # 100-continue itself still works: interim answer, then the request is handled.
        raw = ENROLL + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd"
        answer = await exchange(env.server.port, ctx, raw)
        assert answer.status == 401


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /nowhere HTTP/1.1", 417),
        (b"CONNECT /.well-known/est/cacerts HTTP/1.1", 417),
        (b"GET * HTTP/1.1", 400),  # aiohttp's parser refuses it first
    ],
)
async def test_non_utf8_expect_where_no_route_takes_the_request(
    ca_dir, request_line: bytes, status: int
) -> None:
    async with running(ca_dir) as env:
        raw = request_line + b"\r\nHost: 127.0.0.1\r\nExpect: \xff\r\n\r\n"
        answer = await exchange(env.server.port, client_ssl(env.paths), raw)
        assert answer.status == status, answer.head + answer.body


ODD_HEADERS = {
    "non-UTF-8 Content-Type": (AUTH + b"Content-Type: \xff\xfe\r\n", 415),
    "non-UTF-8 Authorization": (PKCS10 + b"Authorization: Basic \xff\xfe\r\n", 401),
    "non-UTF-8 Digest": (PKCS10 + b'Authorization: Digest username="\xff", uri="\xfe"\r\n', 401),
    "Content-Length garbage": (AUTH + PKCS10 + b"Content-Length: 4x\r\n", 400),
    "Content-Length negative": (AUTH + PKCS10 + b"Content-Length: -4\r\n", 400),
    "Content-Length overflow": (AUTH + PKCS10 + b"Content-Length: 99999999999999999999\r\n", 400),
    "Transfer-Encoding with Content-Length": (
        AUTH + PKCS10 + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        400,
    ),
    "Transfer-Encoding unknown": (AUTH + PKCS10 + b"Transfer-Encoding: gzip\r\n", 400),
    "Transfer-Encoding twice": (
        AUTH + PKCS10 + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        400,
    ),
    "a huge header": (b"X-Big: " + b"a" * 70000 + b"\r\n", 400),
    "many headers": (b"".join(b"X-H%d: 1\r\n" % i for i in range(500)), 400),
}


@pytest.mark.parametrize("name", ODD_HEADERS)
async def test_odd_header_bytes_get_a_4xx(ca_dir, name: str) -> None:
    headers, status = ODD_HEADERS[name]
    async with running(ca_dir) as env:
        answer = await exchange(env.server.port, client_ssl(env.paths), ENROLL + headers + b"\r\n")
        assert answer.status == status, answer.head + answer.body


async def test_slow_request_head_is_closed(ca_dir) -> None:
    async with running(ca_dir, keepalive_timeout=1.0) as env:
        # Half a head, then nothing: the server must not hold the connection for ever.
        answer = await exchange(env.server.port, client_ssl(env.paths), ENROLL + b"X-A: 1\r\n")
        assert answer.closed and answer.status is None


async def test_slow_body_gets_408(ca_dir) -> None:
    async with running(ca_dir, body_timeout=1.0) as env:
        raw = ENROLL + AUTH + PKCS10 + b"Content-Length: 1000\r\n\r\nMIIB"
        answer = await exchange(env.server.port, client_ssl(env.paths), raw)
        assert answer.status == 408 and b"Connection: close" in answer.head
        assert b"not received within 1 s" in answer.body


async def _open_idle(port: int, ctx: ssl.SSLContext):  # type: ignore[no-untyped-def]
    """A kept-alive connection that has been served once (so the server holds it)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
    )
    writer.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return writer


async def test_connections_over_the_cap_get_503_and_the_cap_frees(ca_dir) -> None:
    async with running(ca_dir, max_connections=3) as env:
        ctx = client_ssl(env.paths)
        held = [await _open_idle(env.server.port, ctx) for _ in range(3)]
        get = b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        answer = await exchange(env.server.port, ctx, get)
        assert answer.status == 503 and b"Retry-After: 5" in answer.head
        for writer in held:
            writer.transport.abort()
        # The server notices the closes on its next loop turns; a new client then gets in.
        for _ in range(200):
            answer = await exchange(env.server.port, ctx, get, wait=2.0)
            if answer.status == 200:
                break
            await asyncio.sleep(0.05)
        assert answer.status == 200


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_of_malformed_requests_and_dropped_clients_logs_few_lines(ca_dir) -> None:
    clock = Clock()
    guard = FloodGuard(window=60.0, burst=3, clock=clock)
    with server_logs(guard, logging.INFO) as logs:
        async with running(ca_dir, body_timeout=1.0) as env:
            ctx = client_ssl(env.paths)
            port = env.server.port
            malformed = [
                ENROLL + b"Content-Length: x\r\n\r\n",
                b"G\xffT / HTTP/1.1\r\n\r\n",
                ENROLL + b"Expect: \xff\r\n\r\n",
                ENROLL + AUTH + PKCS10 + b"Content-Length: 9\r\n\r\n!!!!!!!!!",
            ]
            for i in range(60):
                await exchange(port, ctx, malformed[i % len(malformed)])
            for _ in range(30):
                # Dropped mid-handshake, and mid-body.
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                writer.transport.abort()
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
                )
                writer.write(ENROLL + AUTH + PKCS10 + b"Content-Length: 900\r\n\r\nMIIB")
                await writer.drain()
                writer.transport.abort()
            await asyncio.sleep(0.5)  # let the server see the last aborts
            burst_lines = list(logs.lines)
            # After the window, one more of a kind reports how many were collapsed.
            clock.now += 60.0
            await exchange(port, ctx, malformed[0])
            await asyncio.sleep(0.1)
            # A normal enrollment still works.
            async with EstClient(
                env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD
            ) as est:
                assert await est.enroll(key=generate_key(), subject="CN=after-the-burst")
    assert burst_lines, "the malformed requests were not logged at all"
    assert len(burst_lines) <= 30, "\n".join(burst_lines)
    assert not any("Traceback" in line or line.startswith("  ") for line in logs.lines)
    assert any("similar suppressed]" in line for line in logs.lines[len(burst_lines) :])
