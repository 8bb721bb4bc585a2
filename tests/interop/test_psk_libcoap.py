"""PSK DTLS with libcoap as the independent peer (issue 15), both ways, over UDP loopback:
coap-client-openssl -k KEY -u IDENTITY enrolls against `estcoap serve --coaps-psk` (POST a
CSR to /sen, Content-Format 286, Accept 281), and estcoap's PSK client talks to
coap-server-openssl -k KEY (TLS_PSK_WITH_AES_128_CCM_8 on both: tinydtls has no other)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from estcoap.ca import CaPaths, Store
from estcoap.client import EstClient
from estcoap.client.api import EstClientError
from tests.conftest import require
from tests.interop.libcoap_util import coap_client_psk, openssl_csr

require("DTLSSocket", "PSK DTLS runs on DTLSSocket (the psk extra)")
require("coap-client-openssl", "EST-coaps with libcoap's client (Debian: libcoap3-bin)")
COAP_SERVER = require("coap-server-openssl", "libcoap's DTLS server (Debian: libcoap3-bin)")
require("openssl", "openssl makes the device's CSR")

# libcoap 4.3.1 takes -k as text: the key's bytes are these ASCII characters.
KEY_TEXT = "bootstrap-key-01"
KEY = KEY_TEXT.encode()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_serve(ca_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    """`estcoap serve --coaps-psk` in its own process; returns it and its PSK URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "estcoap.cli",
        "serve",
        "--ca",
        str(ca_dir),
        "--coaps-psk",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    text = line.decode()
    assert "PSK DTLS" in text, text
    return proc, text.split()[-1]


async def test_libcoap_client_enrolls_against_serve_coaps_psk(ca_dir: Path, tmp_path: Path) -> None:
    with Store.open(CaPaths.of(ca_dir).store, create=False) as store:
        store.psk_add("libcoap-1", KEY, subject="CN=libcoap-1")
    proc, url = await start_serve(ca_dir)
    try:
        csr, _ = await openssl_csr(tmp_path, "dev", "/CN=libcoap-1")
        out = tmp_path / "issued.p7"
        exchange = await coap_client_psk(
            f"{url}/sen",
            "libcoap-1",
            KEY_TEXT,
            "-m",
            "post",
            "-t",
            "286",
            "-A",
            "281",
            "-f",
            csr,
            "-o",
            out,
        )
        assert exchange.code == "2.04", exchange.describe()
        assert exchange.final.option("Content-Format") == "281"
        (issued,) = pkcs7.load_der_pkcs7_certificates(out.read_bytes())
        assert issued.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libcoap-1")])

        # The one-time key is spent: the next handshake with it gets nothing.
        again = await coap_client_psk(f"{url}/crts", "libcoap-1", KEY_TEXT, timeout=30)
        assert not again.responses, again.describe()
    finally:
        proc.terminate()
        await proc.wait()
    with Store.open(CaPaths.of(ca_dir).store, create=False) as store:
        record = store.find_issued(issued.serial_number)
        assert record is not None and record.requester == "psk:libcoap-1"


async def test_libcoap_client_with_another_subject_gets_403(ca_dir: Path, tmp_path: Path) -> None:
    with Store.open(CaPaths.of(ca_dir).store, create=False) as store:
        store.psk_add("libcoap-2", KEY, subject="CN=libcoap-2")
    proc, url = await start_serve(ca_dir)
    try:
        csr, _ = await openssl_csr(tmp_path, "dev", "/CN=somebody-else")
        exchange = await coap_client_psk(
            f"{url}/sen", "libcoap-2", KEY_TEXT, "-m", "post", "-t", "286", "-f", csr
        )
        assert exchange.code == "4.03", exchange.describe()
        assert "subject must be CN=libcoap-2" in exchange.stderr
    finally:
        proc.terminate()
        await proc.wait()


async def test_our_psk_client_against_libcoap_server() -> None:
    port = free_udp_port() - 1  # coap-server puts DTLS on -p PORT + 1
    proc = await asyncio.create_subprocess_exec(
        str(COAP_SERVER),
        "-A",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        KEY_TEXT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"coaps://127.0.0.1:{port + 1}/.well-known/est"
    try:
        # libcoap serves no EST: its 4.04 for /crts is an answer that came over PSK DTLS.
        answered = None
        for _ in range(20):  # until the server listens
            async with EstClient(url, psk=("estcoap-client", KEY), timeout=3) as est:
                try:
                    await est.cacerts()
                except EstClientError as exc:
                    if exc.status:
                        answered = exc
                        break
            await asyncio.sleep(0.2)
        assert answered is not None and answered.status == "4.04", answered

        # A wrong key does not get through the handshake.
        async with EstClient(url, psk=("estcoap-client", b"a-wrong-key-0123"), timeout=4) as est:
            try:
                await est.cacerts()
            except EstClientError as exc:
                assert not exc.status and "PSK DTLS handshake" in str(exc), exc
            else:
                raise AssertionError("a wrong key got an answer")
    finally:
        proc.kill()
        await proc.wait()
