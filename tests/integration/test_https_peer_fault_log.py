"""What the HTTPS front logs about a request aiohttp cannot parse: one INFO line with the
status and the kind of fault, quoting no more than a few dozen characters of the peer's
bytes (aiohttp's own reason echoes about 100 of them). Real TLS on loopback."""

from __future__ import annotations

import logging

import pytest

from estcoap.https.server import PEER_QUOTE_LIMIT, REASON_LIMIT
from estcoap.logsafe import FloodGuard
from tests.integration.https_fixtures import client_ssl, running
from tests.integration.raw_https import exchange, server_logs

pytestmark = pytest.mark.timeout(120)

GET = b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"GET /" + b"G" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "LineTooLong"),
        (GET + b"X-Long: " + b"V" * 9000 + b"\r\n\r\n", "LineTooLong"),
    ],
)
async def test_a_line_too_long_is_logged_short(ca_dir, raw: bytes, kind: str) -> None:  # type: ignore[no-untyped-def]
    guard = FloodGuard(window=60.0, burst=10)
    with server_logs(guard, logging.INFO) as logs:
        async with running(ca_dir) as env:
            answer = await exchange(env.server.port, client_ssl(env.paths), raw)
    assert answer.status == 400 or answer.closed, answer.head
    faults = [line for line in logs.lines if "Error handling request" in line]
    assert len(faults) == 1, logs.lines
    line = faults[0]
    assert line.startswith("INFO ") and f": 400 {kind}: " in line, line
    assert "Got more than 8190 bytes" in line  # the kind of fault stays readable
    reason = line.split(f": 400 {kind}: ", 1)[1]
    assert len(reason) <= REASON_LIMIT + len("..."), reason
    peer = reason[reason.index("'") :]
    assert len(peer) <= PEER_QUOTE_LIMIT + len("..."), peer
    assert max(line.count("G"), line.count("V")) < PEER_QUOTE_LIMIT, line
