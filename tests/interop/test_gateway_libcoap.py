"""libcoap's coap-client-openssl (a device nobody here wrote) -> `estcoap gateway`
-> `estcoap serve --https` with its own CA: every process separate, real sockets."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.codec import keypackage, pkcs7
from estcoap.codec.names import parse_name
from estcoap.codec.pkcs10 import add_attributes, build_csr
from tests.cms_openssl import openssl_open_key
from tests.conftest import require
from tests.interop.gateway_procs import (
    GATEWAY_READY,
    Pki,
    cli,
    gateway_args,
    make_pki,
    relay_chain,
    serving,
)

COAP_CLIENT = shutil.which("coap-client-openssl")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(90),
]
require("coap-client-openssl", "the gateway with libcoap's client (Debian: libcoap3-bin)")


def coap(
    pki: Pki, url: str, *args: object, cert: Path | None = None, key: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """One coap-client-openssl request; -v 7 shows the response code and options."""
    argv = [
        COAP_CLIENT,
        "-B",
        "10",
        "-v",
        "7",
        "-c",
        cert or pki.device_cert,
        "-j",
        key or pki.device_key,
        "-R",
        pki.ca_pem,
        *args,
        url,
    ]
    return subprocess.run([str(a) for a in argv], capture_output=True, timeout=30)


def post(
    pki: Pki,
    url: str,
    csr: Path,
    *args: object,
    out: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """A CSR POSTed (286, application/pkcs10) with coap-client-openssl, the answer to out."""
    saved = ("-o", out) if out is not None else ()
    return coap(pki, url, "-m", "post", "-t", "286", "-f", csr, *saved, *args, cert=cert, key=key)


def cbor_parts(path: Path) -> dict[int, bytes]:
    """The parts of a server-side key generation answer (RFC 9148 s4.8): {format: bytes}."""
    items = cbor2.loads(path.read_bytes())
    return dict(zip(items[::2], items[1::2], strict=True))


def response_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The response PDU as libcoap logs it, e.g. "v:1 t:ACK c:5.03 ... [ Max-Age:3 ]"."""
    text = (done.stdout + done.stderr).decode(errors="replace")
    lines = [line for line in text.splitlines() if " c:" in line and "t:ACK" in line]
    lines += [line for line in text.splitlines() if " c:2." in line or " c:4." in line]
    lines += [line for line in text.splitlines() if " c:5." in line]
    assert lines, text
    return lines[-1]


# The identity of the IDevID of make_pki's device: the upstream CA holds it to it.
DEVICE_IDENTITY = "serialNumber=device-1"


def new_csr(path: Path, subject: str, key: ec.EllipticCurvePrivateKey | None = None) -> object:
    """A CSR for the device's identity and `subject` (e.g. "CN=x") beside it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(build_csr(key, parse_name(f"{DEVICE_IDENTITY},{subject}")))
    return key


def cn_of(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("gw-pki"))


@pytest.fixture(scope="module")
def gateway_url(pki: Pki) -> Iterator[str]:
    with relay_chain("gateway", pki) as (_, gateway):
        yield gateway.url


def test_discovery_crts_and_att(pki: Pki, gateway_url: str, tmp_path: Path) -> None:
    origin = gateway_url.removesuffix("/.well-known/est")
    links = coap(pki, f"{origin}/.well-known/core?rt=ace.est*", "-m", "get")
    assert b'</.well-known/est/sren>;rt="ace.est.sren";ct="281 287"' in links.stdout
    assert b'</.well-known/est/skg>;rt="ace.est.skg";ct="62"' in links.stdout

    crts = coap(pki, f"{gateway_url}/crts", "-m", "get", "-o", tmp_path / "crts.der")
    assert " c:2.05 " in response_line(crts)
    (ca,) = pkcs7.decode_certs_only((tmp_path / "crts.der").read_bytes())
    assert ca == x509.load_pem_x509_certificate(pki.ca_pem.read_bytes())
    one = coap(pki, f"{gateway_url}/crts", "-m", "get", "-A", "287", "-o", tmp_path / "ca.der")
    assert " c:2.05 " in response_line(one)
    assert x509.load_der_x509_certificate((tmp_path / "ca.der").read_bytes()) == ca

    att = coap(pki, f"{gateway_url}/att", "-m", "get", "-o", tmp_path / "att.der")
    assert " c:2.05 " in response_line(att)
    assert (tmp_path / "att.der").read_bytes()[:1] == b"\x30"


def test_sen_with_block1_then_sren_with_the_new_certificate(
    pki: Pki, gateway_url: str, tmp_path: Path
) -> None:
    key = new_csr(tmp_path / "csr.der", "CN=libcoap-device")
    # 64-byte blocks: the gateway reassembles Block1 before forwarding one POST upstream.
    sen = post(
        pki, f"{gateway_url}/sen", tmp_path / "csr.der", "-b", "64", out=tmp_path / "sen.der"
    )
    assert " c:2.04 " in response_line(sen)
    certs = pkcs7.decode_certs_only((tmp_path / "sen.der").read_bytes())
    mine = [c for c in certs if cn_of(c) == "libcoap-device"]
    assert len(mine) == 1 and mine[0].public_key() == key.public_key()  # type: ignore[attr-defined]

    # The new certificate (from the upstream CA) authenticates the re-enrollment.
    ldev_cert, ldev_key = tmp_path / "ldev.pem", tmp_path / "ldev.key"
    ldev_cert.write_bytes(mine[0].public_bytes(serialization.Encoding.PEM))
    ldev_key.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    new_csr(tmp_path / "rekey.der", "CN=libcoap-device")
    sren = post(
        pki,
        f"{gateway_url}/sren",
        tmp_path / "rekey.der",
        "-A",
        "287",
        out=tmp_path / "sren.der",
        cert=ldev_cert,
        key=ldev_key,
    )
    assert " c:2.04 " in response_line(sren)
    renewed = x509.load_der_x509_certificate((tmp_path / "sren.der").read_bytes())
    assert renewed.subject == mine[0].subject and renewed.serial_number != mine[0].serial_number

    # The upstream CA recorded both, requested by the RA, the second as a rekey.
    listing = cli("ca", "issued", "--ca", pki.ca_dir).stdout
    row = next(line for line in listing.splitlines() if format(renewed.serial_number, "x") in line)
    assert "reenroll" in row and "rekey" in row and "CN=test RA" in row

    # An IDevID cannot re-enroll: it was not issued by the upstream CA.
    refused = post(pki, f"{gateway_url}/sren", tmp_path / "rekey.der")
    assert " c:4.03 " in response_line(refused)


def test_skg_and_skc(pki: Pki, gateway_url: str, tmp_path: Path) -> None:
    new_csr(tmp_path / "csr.der", "CN=keygen-device")
    for op, cert_format in (("skg", 281), ("skc", 287)):
        done = post(pki, f"{gateway_url}/{op}", tmp_path / "csr.der", out=tmp_path / f"{op}.cbor")
        assert " c:2.04 " in response_line(done), op
        parts = cbor_parts(tmp_path / f"{op}.cbor")
        assert set(parts) == {284, cert_format}, op
        private = serialization.load_der_private_key(parts[284], password=None)
        if cert_format == 287:
            cert = x509.load_der_x509_certificate(parts[287])
        else:
            (cert,) = [
                c for c in pkcs7.decode_certs_only(parts[281]) if cn_of(c) == "keygen-device"
            ]
        assert cert.public_key() == private.public_key()


def test_pending_then_approval(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "manual")
    manual = ("--approval", "manual", "--retry-after", "3")
    with relay_chain("gateway", pki, upstream=manual) as (_, gateway):
        new_csr(tmp_path / "csr.der", "CN=waits")

        def send() -> str:
            sent = post(pki, f"{gateway.url}/sen", tmp_path / "csr.der", out=tmp_path / "out.der")
            return response_line(sent)

        first = send()
        assert " c:5.03 " in first and "Max-Age:3" in first
        listing = cli("pending", "list", "--ca", pki.ca_dir).stdout
        (request_id,) = [line.split()[0] for line in listing.splitlines() if "CN=waits" in line]
        again = send()
        assert " c:5.03 " in again  # still waiting: same request, same answer
        cli("pending", "approve", request_id, "--ca", pki.ca_dir)
        done = send()
    assert " c:2.04 " in done
    subjects = [cn_of(c) for c in pkcs7.decode_certs_only((tmp_path / "out.der").read_bytes())]
    assert "waits" in subjects


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upstream_down_gives_502_within_a_second(pki: Pki, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{_closed_port()}/.well-known/est"
    with serving(gateway_args(pki, url), GATEWAY_READY) as gateway:
        new_csr(tmp_path / "csr.der", "CN=nobody-home")
        started = time.monotonic()
        done = post(pki, f"{gateway.url}/sen", tmp_path / "csr.der")
        elapsed = time.monotonic() - started
    line = response_line(done)
    assert " c:5.02 " in line and "upstream unavailable" in line
    assert elapsed < 1.0


def test_skg_with_the_key_enveloped_for_the_csr_key(
    pki: Pki, gateway_url: str, tmp_path: Path
) -> None:
    """RFC 7030 s4.4.1.2 through the registrar: the upstream CA never sees the device's
    channel, so the CSR names its own key as the recipient; openssl opens the 280 part."""
    key = ec.generate_private_key(ec.SECP256R1())
    recipient = keypackage.Recipient.of_public_key(key.public_key())
    csr = build_csr(key, parse_name(f"{DEVICE_IDENTITY},CN=sealed-device"))
    attributes = [
        keypackage.asymmetric_decrypt_key_id_attribute(recipient.key_id),
        keypackage.smime_capabilities_attribute((keypackage.AES128_CBC,)),
    ]
    (tmp_path / "csr.der").write_bytes(add_attributes(csr, key, attributes))
    done = post(pki, f"{gateway_url}/skg", tmp_path / "csr.der", out=tmp_path / "skg.cbor")
    assert " c:2.04 " in response_line(done)
    parts = cbor_parts(tmp_path / "skg.cbor")
    assert set(parts) == {280, 281}
    pkcs8 = openssl_open_key(tmp_path, parts[280], key, pki.ca_pem)
    private = serialization.load_der_private_key(pkcs8, password=None)
    (cert,) = [c for c in pkcs7.decode_certs_only(parts[281]) if cn_of(c) == "sealed-device"]
    assert cert.public_key() == private.public_key()
    # skc: the same sealed key part, and the certificate alone (287)
    done = post(pki, f"{gateway_url}/skc", tmp_path / "csr.der", out=tmp_path / "skc.cbor")
    assert " c:2.04 " in response_line(done)
    parts = cbor_parts(tmp_path / "skc.cbor")
    assert set(parts) == {280, 287}
    opened = keypackage.open_key(parts[280], recipient_key=key)
    private = serialization.load_der_private_key(opened.pkcs8, password=None)
    assert x509.load_der_x509_certificate(parts[287]).public_key() == private.public_key()
