"""EST-coaps interop: libcoap's coap-client-openssl is the device, `openssl req` makes its CSRs,
our coap front with the LocalCA is the server (in-process, real DTLS on 127.0.0.1).

Nothing of ours runs on the device side: the bytes libcoap saves are checked with
cryptography's and openssl's own parsers against what RFC 9148 asks for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from estcoap.ca import Store
from estcoap.codec.csrattrs import decode_csrattrs, requested_key, requested_signature_hash
from tests.conftest import require
from tests.integration.coaps_fixtures import (
    Deployment,
    RunningCoaps,
    make_deployment,
    running_coaps,
)
from tests.interop.libcoap_util import (
    OPENSSL,
    Exchange,
    coap_client,
    openssl_csr,
    run_tool,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(60),
]
require("coap-client-openssl", "EST-coaps with libcoap's client (Debian: libcoap3-bin)")
require("openssl", "openssl reads what the server sent")


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


class Device:
    """A libcoap device: a certificate + key on disk, our CA as its trust anchor."""

    def __init__(self, run: RunningCoaps, cert: Path, key: Path) -> None:
        self.run, self.cert, self.key = run, cert, key
        self.base = f"{run.origin}/.well-known/est"

    async def get(self, path: str, *args: str | Path) -> Exchange:
        return await coap_client(
            f"{self.base}/{path}", self.cert, self.key, self.run.deployment.paths.ca_cert, *args
        )

    async def post(self, path: str, body: Path, *args: str | Path, cf: str = "286") -> Exchange:
        return await self.get(path, "-m", "post", "-t", cf, "-f", body, *args)


def idevid_device(run: RunningCoaps, name: str) -> Device:
    identity = run.deployment.device(name)
    return Device(run, identity.cert_path, identity.key_path)


def spki(obj: object) -> bytes:
    return obj.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issued_for(certs: list[x509.Certificate], csr_der: bytes) -> x509.Certificate:
    """The certificate in a certs-only reply that carries the CSR's key."""
    wanted = spki(x509.load_der_x509_csr(csr_der))
    (match,) = [cert for cert in certs if spki(cert) == wanted]
    return match


def expect(exchange: Exchange, code: str) -> None:
    assert exchange.code == code, exchange.describe()
    if code[0] in "45":
        # libcoap prints "<code> <diagnostic>" on stderr for errors: the diagnostic is there.
        line = exchange.stderr.strip().splitlines()[-1]
        assert line.startswith(code + " ") and len(line) > len(code) + 3, exchange.stderr


async def test_crts_with_64_byte_blocks_and_both_formats(
    deployment: Deployment, tmp_path: Path
) -> None:
    ca_der = deployment.paths.ca_cert.read_bytes()
    ca_der = x509.load_pem_x509_certificate(ca_der).public_bytes(serialization.Encoding.DER)
    async with running_coaps(deployment) as run:
        device = idevid_device(run, "crts-dev")
        blocks = await device.get("crts", "-b", "64", "-o", tmp_path / "b64.p7")
        default = await device.get("crts", "-A", "281", "-o", tmp_path / "281.p7")
        single = await device.get("crts", "-A", "287", "-o", tmp_path / "287.der")

    # Block2 in 64-byte pieces: several 2.05 blocks, each with CF 281 and SZX 64.
    size = (tmp_path / "b64.p7").stat().st_size
    count = -(-size // 64)
    assert count > 1 and len(blocks.responses) == count, blocks.stdout
    for number, pdu in enumerate(blocks.responses):
        assert (pdu.code, pdu.option("Content-Format")) == ("2.05", "281"), blocks.stdout
        assert pdu.option("Block2") == f"{number}/{'M' if number < count - 1 else '_'}/64"
    for exchange, path in ((blocks, "b64.p7"), (default, "281.p7")):
        expect(exchange, "2.05")
        assert exchange.final.option("Content-Format") == "281"
        certs = pkcs7.load_der_pkcs7_certificates((tmp_path / path).read_bytes())
        assert [c.public_bytes(serialization.Encoding.DER) for c in certs] == [ca_der]
    rc, out, err = await run_tool(
        OPENSSL, "pkcs7", "-inform", "DER", "-in", tmp_path / "b64.p7", "-print_certs", "-noout"
    )
    assert rc == 0 and "subject=CN = estcoap CA" in out, err

    expect(single, "2.05")
    assert single.final.option("Content-Format") == "287"
    assert (tmp_path / "287.der").read_bytes() == ca_der


async def test_att_decodes_as_csrattrs(deployment: Deployment, tmp_path: Path) -> None:
    async with running_coaps(deployment) as run:
        exchange = await idevid_device(run, "att-dev").get(
            "att", "-A", "285", "-o", tmp_path / "att"
        )
    expect(exchange, "2.05")
    assert exchange.final.option("Content-Format") == "285"
    items = decode_csrattrs((tmp_path / "att").read_bytes())
    key = requested_key(items)  # the CA asks for a key like its own: EC P-256, ECDSA-SHA256
    assert key is not None and key.curve == ec.EllipticCurveOID.SECP256R1, items
    assert isinstance(requested_signature_hash(items), hashes.SHA256), items


async def test_sen_block1_then_sren_with_the_issued_identity(
    deployment: Deployment, tmp_path: Path
) -> None:
    async with running_coaps(deployment) as run:
        device = idevid_device(run, "sen-dev")
        subject = "/serialNumber=sen-dev/CN=libcoap-dev/O=Interop"  # its IDevID's identity
        csr, key = await openssl_csr(tmp_path, "op", subject)
        sen = await device.post("sen", csr, "-b", "16", "-o", tmp_path / "sen.p7")

        # Block1 in 16-byte blocks: 2.31 Continue for every block but the last, then 2.04.
        expect(sen, "2.04")
        sent = {p.option("Block1") for p in sen.requests if p.option("Size1")}  # on the wire
        count = -(-csr.stat().st_size // 16)
        assert sent == {f"{n}/{'M' if n < count - 1 else '_'}/16" for n in range(count)}, sent
        assert [p.code for p in sen.responses] == ["2.31"] * (count - 1) + ["2.04"]

        # openssl reads the certs-only PKCS#7, and the issued certificate holds the CSR's key.
        rc, out, err = await run_tool(
            OPENSSL, "pkcs7", "-inform", "DER", "-in", tmp_path / "sen.p7", "-print_certs"
        )
        printed = "subject=serialNumber = sen-dev, CN = libcoap-dev, O = Interop"
        assert rc == 0 and printed in out, err
        issued = issued_for(
            pkcs7.load_der_pkcs7_certificates((tmp_path / "sen.p7").read_bytes()), csr.read_bytes()
        )
        issued.verify_directly_issued_by(run.ca.ca_certificate)

        # The issued certificate is the DTLS identity for sren (same key: a renewal).
        op_cert = tmp_path / "op.pem"
        op_cert.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
        operational = Device(run, op_cert, key)
        renew_csr, _ = await openssl_csr(tmp_path, "renew", subject, key=key)
        sren = await operational.post("sren", renew_csr, "-A", "287", "-o", tmp_path / "sren.der")
        expect(sren, "2.04")
        renewed = x509.load_der_x509_certificate((tmp_path / "sren.der").read_bytes())
        assert renewed.subject == issued.subject
        assert renewed.serial_number != issued.serial_number
        assert spki(renewed) == spki(issued)

        # 4.03: sren under an IDevID (not issued by this CA), and sren for another subject.
        with_idevid = await device.post("sren", renew_csr)
        other_csr, _ = await openssl_csr(tmp_path, "other", "/CN=someone-else", key=key)
        other_subject = await operational.post("sren", other_csr)
    expect(with_idevid, "4.03")
    expect(other_subject, "4.03")


def _check_multipart(body: bytes, cert_format: int) -> None:
    parts = cbor2.loads(body)
    assert isinstance(parts, list) and len(parts) == 4, parts
    assert parts[0] == 284 and parts[2] == cert_format
    key = serialization.load_der_private_key(parts[1], password=None)
    if cert_format == 281:
        certs = pkcs7.load_der_pkcs7_certificates(parts[3])
    else:
        certs = [x509.load_der_x509_certificate(parts[3])]
    assert any(spki(cert) == spki(key) for cert in certs)


async def test_skg_and_skc_multipart_core(deployment: Deployment, tmp_path: Path) -> None:
    async with running_coaps(deployment) as run:
        device = idevid_device(run, "skg-dev")
        csr, _ = await openssl_csr(tmp_path, "skg", "/serialNumber=skg-dev/CN=keyless-dev")
        skg = await device.post("skg", csr, "-o", tmp_path / "skg.cbor")
        skc = await device.post("skc", csr, "-b", "64", "-o", tmp_path / "skc.cbor")
    for exchange, path, cert_format in ((skg, "skg.cbor", 281), (skc, "skc.cbor", 287)):
        expect(exchange, "2.04")
        assert exchange.final.option("Content-Format") == "62"
        _check_multipart((tmp_path / path).read_bytes(), cert_format)


async def test_error_codes_then_still_serving(deployment: Deployment, tmp_path: Path) -> None:
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03abc")
    big = tmp_path / "big.der"
    big.write_bytes(b"\x30" * 600)
    async with running_coaps(deployment, max_body=512) as run:
        device = idevid_device(run, "err-dev")
        good, _ = await openssl_csr(tmp_path, "good", "/serialNumber=err-dev")
        # challengePassword that is not this session's tls-unique
        pop, _ = await openssl_csr(
            tmp_path, "pop", "/serialNumber=err-dev", challenge_password="AAAAAAAAAAAAAAAA"
        )
        cases = {
            "4.00": await device.post("sen", junk),
            "4.01": await device.post("sen", pop),
            "4.04": await device.get("nolabel/crts"),
            "4.05": await device.get("sen", "-m", "put", "-t", "286", "-f", good),
            "4.06": await device.get("crts", "-A", "62"),
            "4.15": await device.post("sen", good, cf="0"),
            "4.13": await device.post("sen", big, "-b", "16"),
        }
        after = await device.post("sen", good, "-b", "16", "-o", tmp_path / "after.p7")
    for code, exchange in cases.items():
        expect(exchange, code)
    too_large = cases["4.13"].final
    assert too_large.option("Size1") == "512", cases["4.13"].stdout
    assert "tls-unique" in cases["4.01"].stderr
    expect(after, "2.04")
    issued_for(
        pkcs7.load_der_pkcs7_certificates((tmp_path / "after.p7").read_bytes()), good.read_bytes()
    )


async def test_pending_503_max_age_then_approval(deployment: Deployment, tmp_path: Path) -> None:
    async with running_coaps(deployment, approval="manual", retry_after=7) as run:
        device = idevid_device(run, "wait-dev")
        csr, _ = await openssl_csr(tmp_path, "wait", "/serialNumber=wait-dev/CN=waiting-dev")
        first = await device.post("sen", csr, "-o", tmp_path / "first")
        expect(first, "5.03")
        assert first.final.option("Max-Age") == "7", first.stdout
        with Store.open(deployment.paths.store, create=False) as store:
            (pending,) = store.pending_list()
            store.approve(pending.id)
        await asyncio.sleep(0)
        second = await device.post("sen", csr, "-o", tmp_path / "second.p7")
    expect(second, "2.04")
    issued = issued_for(
        pkcs7.load_der_pkcs7_certificates((tmp_path / "second.p7").read_bytes()), csr.read_bytes()
    )
    assert issued.subject.rfc4514_string() == "CN=waiting-dev,2.5.4.5=wait-dev"
