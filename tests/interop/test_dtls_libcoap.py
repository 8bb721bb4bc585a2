"""Interop of our DTLS transports with peers we did not write: libcoap and openssl s_client."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
from pathlib import Path

import aiocoap
import pytest

from estcoap.dtls import DtlsClientConfig
from tests.conftest import require
from tests.integration.dtls_fixtures import (
    BIG,
    client,
    remote_for,
    running_server,
    server_config,
)
from tests.polling import wait_for

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

COAP_CLIENT = shutil.which("coap-client-openssl")
COAP_SERVER = shutil.which("coap-server-openssl")
OPENSSL = shutil.which("openssl")


async def run(*argv: str | Path, stdin: bytes = b"", timeout: float = 20) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out


def libcoap_pki(pki, identity=None) -> list[str | Path]:
    identity = identity or pki.client
    return ["-c", identity.cert_path, "-j", identity.key_path, "-R", pki.ca.cert_path]


async def test_libcoap_client_against_our_server(pki, tmp_path: Path) -> None:
    require("coap-client-openssl", "libcoap's DTLS client (Debian: libcoap3-bin)")
    async with running_server(server_config(pki)) as (server, port):
        base = f"coaps://127.0.0.1:{port}"
        rc, out = await run(COAP_CLIENT, *libcoap_pki(pki), base + "/.well-known/core")
        assert rc == 0 and b"</peer>" in out, out

        # Block1 with 64-byte blocks: a 5000-byte POST arrives whole
        body = bytes(range(251)) * 20
        (tmp_path / "body.bin").write_bytes(body)
        rc, out = await run(
            COAP_CLIENT,
            *libcoap_pki(pki),
            "-m",
            "post",
            "-b",
            "64",
            "-f",
            tmp_path / "body.bin",
            base + "/echo",
        )
        assert rc == 0
        assert f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode() in out

        # Block2 with 16-byte blocks
        rc, out = await run(
            COAP_CLIENT, *libcoap_pki(pki), "-b", "16", "-o", tmp_path / "big.out", base + "/big"
        )
        assert rc == 0 and (tmp_path / "big.out").read_bytes() == BIG

        # the peer chain libcoap presented reached the resource
        rc, out = await run(COAP_CLIENT, *libcoap_pki(pki), base + "/peer")
        assert out.startswith(b"CN=device-1|"), out

        # a certificate from another CA is refused: no response, no session
        rc, out = await run(
            COAP_CLIENT, *libcoap_pki(pki, pki.untrusted_client), base + "/peer", timeout=30
        )
        assert b"CN=" not in out
        assert b"unknown ca" in out.lower() or b"alert" in out.lower(), out
        await wait_for(lambda: not server.sessions, timeout=3)
        assert server.refused_handshakes >= 1


async def test_openssl_s_client_negotiates_ccm8(pki) -> None:
    require("openssl", "openssl s_client over DTLS")
    async with running_server(server_config(pki)) as (server, port):
        rc, out = await run(
            OPENSSL,
            "s_client",
            "-dtls1_2",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            pki.ca.cert_path,
            "-cert",
            pki.client.cert_path,
            "-key",
            pki.client.key_path,
            "-cipher",
            "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0",
        )
        text = out.decode(errors="replace")
        assert "Cipher is ECDHE-ECDSA-AES128-CCM8" in text, text
        assert "Verify return code: 0 (ok)" in text
        # s_client sent close_notify at end of input: the session is gone
        await wait_for(lambda: not server.sessions, timeout=3)


def _free_port_pair() -> int:
    """A UDP port p with p+1 free too (coap-server puts DTLS on p+1)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                    b.bind(("127.0.0.1", port + 1))
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


async def test_our_client_against_libcoap_server(pki) -> None:
    require("coap-server-openssl", "libcoap's DTLS server (Debian: libcoap3-bin)")
    port = _free_port_pair()
    proc = await asyncio.create_subprocess_exec(
        COAP_SERVER,
        "-A",
        "127.0.0.1",
        "-p",
        str(port),
        "-e",
        "-c",
        str(pki.server.cert_path),
        "-j",
        str(pki.server.key_path),
        "-C",
        str(pki.ca.cert_path),
        "-R",
        str(pki.ca.cert_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        config = DtlsClientConfig.from_files(
            pki.ca.cert_path, pki.client.cert_path, pki.client.key_path, handshake_timeout=2.0
        )
        base = f"coaps://127.0.0.1:{port + 1}"
        async with client(config) as ctx:
            for attempt in range(10):  # wait until the server listens
                try:
                    response = await ctx.request(
                        aiocoap.Message(code=aiocoap.GET, uri=base + "/.well-known/core")
                    ).response
                    break
                except Exception:
                    if attempt == 9:
                        raise
                    await asyncio.sleep(0.2)
            assert response.code == aiocoap.CONTENT and b"</example_data>" in response.payload

            body = bytes(range(256)) * 17  # 4352 bytes: Block1 up, Block2 back (-e echoes)
            put = aiocoap.Message(code=aiocoap.PUT, uri=base + "/example_data", payload=body)
            response = await ctx.request(put).response
            assert response.code.is_successful() and response.payload == body
            get = aiocoap.Message(code=aiocoap.GET, uri=base + "/example_data")
            response = await ctx.request(get).response
            assert response.code == aiocoap.CONTENT and response.payload == body
            # Those last exchanges ran on our own record layer, not OpenSSL's.
            remote = await remote_for(ctx, base + "/example_data")
            assert remote.association.openssl_released
    finally:
        proc.kill()
        await proc.wait()
