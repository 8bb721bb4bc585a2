"""Proof-of-possession when the request moves to a new TLS connection.

libEST's example server answers an unauthenticated request with 401 and closes the
connection; the retry with credentials goes on a new connection, so the CSR must be
re-made with that connection's tls-unique (RFC 7030 s3.5). The server here is a small
real HTTP/1.1 server on asyncio + ssl that does exactly that, and checks the proof
against the tls-unique of the connection the CSR arrived on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.client import EstClient
from estcoap.codec import b64, pkcs7
from estcoap.codec.operations import MEDIA_TYPES, ContentFormat
from estcoap.codec.pkcs10 import parse_csr
from estcoap.https.tls import server_ssl_context
from tests.integration.coaps_fixtures import Deployment, make_deployment
from tests.integration.gateway_fixtures import ScriptedUpstream

pytestmark = pytest.mark.timeout(90)
CREDENTIALS = "Basic " + base64.b64encode(b"alice:pw").decode()


@dataclass
class ClosingServer:
    """401 + Connection: close to a request without credentials; with them, an enroll
    whose challengePassword must be this connection's tls-unique."""

    issuer: ScriptedUpstream
    connections: int = 0
    proofs: list[bool] = field(default_factory=list)  # one per enroll with credentials
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        tls_unique = writer.get_extra_info("ssl_object").get_channel_binding("tls-unique")
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                )
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("authorization") != CREDENTIALS:
                    writer.write(
                        b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="est"\r\n'
                        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    return
                await self._enroll(writer, body, tls_unique)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def _enroll(self, writer: asyncio.StreamWriter, body: bytes, tls_unique: bytes) -> None:
        csr_der = b64.decode(body)
        proven = parse_csr(csr_der).challenge_password == base64.b64encode(tls_unique)
        self.proofs.append(proven)
        if not proven:
            text = b"proof-of-possession failed\n"
            writer.write(
                b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="est"\r\n'
                b"Content-Length: %d\r\n\r\n%s" % (len(text), text)
            )
        else:
            cert = self.issuer.issue(csr_der)
            der = pkcs7.encode_certs_only([cert, self.issuer.ca_certificate])
            payload = b64.encode(der)
            kind = MEDIA_TYPES[ContentFormat.PKCS7_CERTS_ONLY].encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (kind, len(payload), payload)
            )
        await writer.drain()


@contextlib.asynccontextmanager
async def closing_server(deployment: Deployment) -> AsyncIterator[ClosingServer]:
    issuer = ScriptedUpstream(deployment)
    server = ClosingServer(issuer)
    paths = deployment.paths
    ctx = server_ssl_context(paths.server_cert, paths.server_key, [], tls12_only=True)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=ctx)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"https://127.0.0.1:{port}/.well-known/est"
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


async def test_pop_csr_is_remade_for_the_connection_after_401_close(
    deployment: Deployment,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    async with closing_server(deployment) as server:
        async with EstClient(
            server.url, trust=deployment.paths.ca_cert, user="alice", password="pw"
        ) as est:
            chain = await est.enroll(key=key, subject="CN=pop-dev", pop=True)
    # the unauthenticated try, then the retry on a second connection, where the proof held
    assert server.connections == 2
    assert server.proofs == [True]
    assert chain[0].public_key() == key.public_key()
    assert chain[0].subject.rfc4514_string() == "CN=pop-dev"


async def test_cli_enroll_with_pop_against_a_server_that_closes_after_401(
    deployment: Deployment, tmp_path: Path
) -> None:
    out, key = tmp_path / "dev.pem", tmp_path / "dev.key"
    async with closing_server(deployment) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "estcoap.cli",
            "enroll",
            server.url,
            "--pop",
            "--user",
            "alice:pw",
            "--trust",
            str(deployment.paths.ca_cert),
            "--key",
            str(key),
            "--subject",
            "CN=cli-pop",
            "--out",
            str(out),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert server.proofs == [True] and server.connections == 2
    cert = x509.load_pem_x509_certificates(out.read_bytes())[0]
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert cert.public_key() == private.public_key()
