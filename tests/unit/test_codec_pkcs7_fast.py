"""PKCS#7 certs-only: the strict-DER fast path gives what cryptography's loader gives,
and steps aside for everything else (BER, CRLs, odd certificate choices)."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.hazmat.primitives.serialization import pkcs7 as crypto_pkcs7

from estcoap.codec import der, pkcs7

pytestmark = pytest.mark.timeout(30)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
A1 = (VECTORS / "rfc7030/A1-cacerts-response.p7.der").read_bytes()


def _by_cryptography(data: bytes) -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        certs = crypto_pkcs7.load_der_pkcs7_certificates(data)
    return [c.public_bytes(Encoding.DER) for c in certs]


def _ders(certs) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in certs]


def test_der_input_takes_the_fast_path_and_keeps_order():
    # The RFC 7030 A.1 answer: four certificates and an empty [1] crls field.
    fast = pkcs7._certificate_ders_fast(A1)
    assert fast is not None and len(fast) == 4
    assert fast == _by_cryptography(A1)
    ours = pkcs7.encode_certs_only(pkcs7.decode_certs_only(A1))
    assert pkcs7._certificate_ders_fast(ours) == _by_cryptography(ours)


def test_with_der_gives_each_certificate_as_sent():
    pairs = pkcs7.decode_certs_only_with_der(A1)
    assert [d for _, d in pairs] == _by_cryptography(A1)
    assert [c.public_bytes(Encoding.DER) for c, _ in pairs] == _by_cryptography(A1)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: d[:-1], "cut short"),
        (lambda d: b"", "empty"),
        (lambda d: b"MII" + d, "base64 or PEM"),
    ],
)
def test_framing_errors_are_named(mangle, message):
    data = mangle(A1)
    assert pkcs7._certificate_ders_fast(data) is None
    with pytest.raises(pkcs7.Pkcs7Error, match=message):
        pkcs7.decode_certs_only(data)
    with pytest.raises(pkcs7.Pkcs7Error, match=message):
        pkcs7.decode_certs_only_with_der(data)


def test_ber_input_falls_back_to_cryptography():
    content_type, explicit = der.read_one(A1).children()
    ber = b"\x30\x80" + content_type.raw + b"\xa0\x80" + explicit.content + b"\x00\x00\x00\x00"
    assert pkcs7._certificate_ders_fast(ber) is None
    assert _ders(pkcs7.decode_certs_only(ber)) == _by_cryptography(A1)


def test_openssl_output_with_a_crl_is_read_the_same(tmp_path):
    certs = pkcs7.decode_certs_only(A1)
    pem = tmp_path / "certs.pem"
    pem.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs[:2]))
    made = subprocess.run(
        ["openssl", "crl2pkcs7", "-nocrl", "-certfile", str(pem), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert _ders(pkcs7.decode_certs_only(made)) == _by_cryptography(made)
    # The same SignedData with a [1] crls field (empty) between certificates and signerInfos.
    outer = der.read_one(made).children()
    fields = der.read_one(outer[1].content).children()
    with_crls = [*fields[:4], der.read_one(b"\xa1\x00"), *fields[4:]]
    signed = der.sequence(f.raw for f in with_crls)
    data = der.sequence([outer[0].raw, der.tlv(0xA0, signed)])
    assert _ders(pkcs7.decode_certs_only(data)) == _by_cryptography(made)


def test_a_broken_certificate_is_still_a_pkcs7_error():
    good = pkcs7.encode_certs_only(pkcs7.decode_certs_only(A1)[:1])
    version = good.index(b"\xa0\x03\x02\x01\x02")  # the certificate's version field: v3
    broken = good[: version + 4] + b"\x66" + good[version + 5 :]
    # Well framed, so the walk slices it out; loading it fails, and so does the fallback.
    assert pkcs7._certificate_ders_fast(broken) is not None
    with pytest.raises(pkcs7.Pkcs7Error):
        pkcs7.decode_certs_only(broken)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_encoding_from_der_gives_cryptographys_bytes(count):
    certs = pkcs7.decode_certs_only(A1)[:count]
    ders = [c.public_bytes(Encoding.DER) for c in certs]
    ours = pkcs7.encode_certs_only_der(ders)
    assert ours == pkcs7.encode_certs_only(certs)
    assert sorted(pkcs7._certificate_ders_fast(ours) or []) == sorted(ders)


def test_encoding_nothing_is_refused():
    with pytest.raises(pkcs7.Pkcs7Error, match="at least one"):
        pkcs7.encode_certs_only_der([])


def _signed_data(version=b"\x02\x01\x01", digests=b"\x31\x00", encap=None, signers=b"\x31\x00"):  # type: ignore[no-untyped-def]
    cert = pkcs7.decode_certs_only(A1)[0].public_bytes(Encoding.DER)
    encap = encap if encap is not None else der.sequence([der.oid("1.2.840.113549.1.7.1")])
    signed = der.sequence([version, digests, encap, der.tlv(0xA0, cert), signers])
    return der.sequence([der.oid("1.2.840.113549.1.7.2"), der.tlv(0xA0, signed)])


def test_the_fast_path_reads_what_it_builds_like_cryptography():
    assert pkcs7._certificate_ders_fast(_signed_data()) == _by_cryptography(_signed_data())


@pytest.mark.parametrize(
    "fields",
    [
        {"version": b"\x02\x00"},  # an empty INTEGER
        {"digests": b"\x31\x02\x05\x00"},  # a NULL where an AlgorithmIdentifier goes
        {"encap": b"\x30\x00"},  # no content type
        {"signers": b"\x31\x02\x04\x00"},  # an OCTET STRING for a SignerInfo
    ],
)
def test_what_cryptography_refuses_the_fast_path_leaves_to_it(fields):
    data = _signed_data(**fields)
    assert pkcs7._certificate_ders_fast(data) is None
    with pytest.raises(pkcs7.Pkcs7Error):
        pkcs7.decode_certs_only(data)
