"""Compact DTLS sessions hand the record layer over from OpenSSL on the first application
record: the replay window starts from what authenticates in that datagram, so a forged
record beside it cannot move the window, and the genuine one cannot be replayed.

Both ends are sans-IO associations wired together in memory (no sockets needed to
show the record-layer rule; the transports are tested over UDP elsewhere)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from estcoap.dtls.association import (
    ApplicationData,
    DtlsAssociation,
    State,
    check_server_name,
)
from estcoap.dtls.config import DtlsClientConfig, DtlsServerConfig
from estcoap.dtls.contexts import client_context, server_context
from estcoap.dtls.cookie import CookieJar
from estcoap.dtls.records import hello_verify_request, parse_client_hello
from tests.dtls_util import make_pki

pytestmark = pytest.mark.timeout(30)
PEER = ("127.0.0.1", 1)


@pytest.fixture(name="pair")
def pair_fixture(tmp_path: Path) -> tuple[DtlsAssociation, DtlsAssociation]:
    pki = make_pki(tmp_path)
    server_config = DtlsServerConfig.from_files(
        pki.server.cert_path, pki.server.key_path, pki.ca.cert_path
    )
    client_config = DtlsClientConfig.from_files(
        pki.ca.cert_path, pki.client.cert_path, pki.client.key_path, server_name="localhost"
    )
    jar = CookieJar()
    server_ctx = server_context(server_config, lambda conn, cookie: conn.get_app_data() == cookie)
    client = DtlsAssociation.connect(
        client_context(client_config, check_server_name),
        "localhost",
        datagram_limit=1200,
        compact=True,
    )
    server = None
    for _ in range(20):  # the handshake, datagram by datagram
        moved = False
        for datagram in client.datagrams_to_send():
            moved = True
            if server is None:
                hello = parse_client_hello(datagram)
                if not jar.verify(PEER, hello.random, hello.cookie):
                    cookie = jar.make(PEER, hello.random)
                    client.receive_datagram(hello_verify_request(hello, cookie))
                    continue
                server, _ = DtlsAssociation.accept(
                    server_ctx, datagram, hello.cookie, datagram_limit=1200, compact=True
                )
            else:
                server.receive_datagram(datagram)
        for datagram in server.datagrams_to_send() if server else []:
            moved = True
            client.receive_datagram(datagram)
        if not moved:
            break
    assert server is not None
    assert client.state is State.ESTABLISHED and server.state is State.ESTABLISHED
    return client, server


def _exchange(sender: DtlsAssociation, data: bytes) -> bytes:
    sender.send(data)
    (datagram,) = sender.datagrams_to_send()
    return datagram


def _data(events) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [e.data for e in events if isinstance(e, ApplicationData)]


def test_a_forged_record_beside_the_first_answer_does_not_break_the_session(pair) -> None:
    client, server = pair
    assert _data(server.receive_datagram(_exchange(client, b"request-1"))) == [b"request-1"]
    answer = _exchange(server, b"response-1")
    # An on-path attacker appends an epoch-1 record with a huge sequence number.
    forged = struct.pack("!BHHHIH", 23, 0xFEFD, 1, 0xFFFF, 0xFFFFFFF0, 24) + bytes(24)
    assert _data(client.receive_datagram(answer + forged)) == [b"response-1"]
    assert client.openssl_released
    assert _data(client.receive_datagram(_exchange(server, b"response-2"))) == [b"response-2"]
    # ... and the genuine first answer, replayed, is dropped.
    assert _data(client.receive_datagram(answer)) == []


def test_both_ends_keep_talking_after_the_hand_over(pair) -> None:
    client, server = pair
    for n in range(5):
        request = f"request-{n}".encode()
        assert _data(server.receive_datagram(_exchange(client, request))) == [request]
        response = f"response-{n}".encode()
        assert _data(client.receive_datagram(_exchange(server, response))) == [response]
    assert client.openssl_released and server.openssl_released
