"""The small codecs: base64 (RFC 8951), the DER reader/writer, PKCS#7 certs-only."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from estcoap.codec import b64, der, pkcs7
from estcoap.codec.errors import Base64Error, Pkcs7Error

pytestmark = pytest.mark.timeout(30)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
A1 = (VECTORS / "rfc7030/A1-cacerts-response.p7.der").read_bytes()
ONE_CERT = (VECTORS / "rfc9148/A1-cacerts-response.der").read_bytes()


# -- base64 -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0 + 1, 2, 3, 47, 48, 49, 1000])
def test_b64_encode_wraps_at_64_and_round_trips(size):
    payload = os.urandom(size)
    text = b64.encode(payload)
    lines = text.split(b"\n")
    assert lines[-1] == b""  # every line ends in LF
    assert all(len(line) == 64 for line in lines[:-2]) and 0 < len(lines[-2]) <= 64
    assert b64.decode(text) == payload
    assert b64.encode(payload, newline=b"\r\n").replace(b"\r\n", b"\n") == text


def test_b64_decode_tolerates_rfc_8951_variants():
    payload = bytes(range(200))
    plain = base64.b64encode(payload)
    for variant in (
        plain,  # no line breaks at all
        plain.rstrip(b"="),  # missing padding
        b"\r\n".join(plain[i : i + 76] for i in range(0, len(plain), 76)),  # other widths, CRLF
        b" \t" + b"\n ".join(plain[i : i + 10] for i in range(0, len(plain), 10)) + b"\n\n",
        plain.decode("ascii"),  # str input
    ):
        assert b64.decode(variant) == payload


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "empty"),
        (b" \r\n", "empty"),
        ("Zm9v€", "non-ASCII"),
        (b"Zm9v!!", "not base64"),
        (b"Zm9vY", "not base64"),  # 5 characters cannot be base64
        (b"Zm==Zm9v", "not base64"),  # padding in the middle
    ],
)
def test_b64_decode_errors(text, message):
    with pytest.raises(Base64Error, match=message):
        b64.decode(text)


# -- DER reader / writer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "hex_der"),
    [
        ("1.2.840.113549", "06062a864886f70d"),
        ("2.5.29.17", "0603551d11"),
        ("2.999.3", "0603883703"),  # first arc 2 with a large second arc (RFC 7030 A.2)
        ("1.2.840.113549.1.9.16.2.61", "060b2a864886f70d010910023d"),
    ],
)
def test_oid_encodings(dotted, hex_der):
    assert der.oid(dotted).hex() == hex_der
    assert der.decode_oid(der.read_one(bytes.fromhex(hex_der))) == dotted


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**64, 3072])
def test_integer_round_trip_is_minimal(value):
    encoded = der.integer(value)
    assert der.decode_integer(der.read_one(encoded)) == value
    # Minimal: the fewest octets whose two's complement range holds the value.
    size = len(encoded) - 2
    assert -(2 ** (8 * size - 1)) <= value < 2 ** (8 * size - 1)
    assert size == 1 or not -(2 ** (8 * size - 9)) <= value < 2 ** (8 * size - 9)


def test_long_lengths_and_set_order():
    content = b"\x00" * 300
    encoded = der.octet_string(content)
    assert encoded[:4] == b"\x04\x82\x01\x2c"
    assert der.read_one(encoded).content == content
    assert der.set_of([der.integer(2), der.integer(1)]) == bytes.fromhex("3106020101020102")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x30", "truncated"),
        (b"\x30\x05\x02\x01", "truncated"),
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x30\x81\x05\x02\x01\x00\x05\x00", "minimal"),
        (b"\x30\x82\x00\x03\x02\x01\x00", "minimal"),
        (b"\x30\x85\x00\x00\x00\x00\x01", "too large"),
        (b"\x02\x01\x00\xff", "trailing"),
        (b"\x1f", "truncated"),
    ],
)
def test_der_framing_errors(data, message):
    with pytest.raises(der.DerError, match=message):
        der.read_one(data)


def test_der_value_errors():
    with pytest.raises(der.DerError, match="minimally"):
        der.decode_integer(der.read_one(b"\x02\x02\x00\x01"))
    with pytest.raises(der.DerError, match="minimally"):
        der.decode_oid(der.read_one(b"\x06\x02\x80\x01"))
    with pytest.raises(der.DerError, match="truncated"):
        der.decode_oid(der.read_one(b"\x06\x01\x81"))
    with pytest.raises(der.DerError, match="0x00 or 0xFF"):
        der.decode_boolean(der.read_one(b"\x01\x01\x01"))
    with pytest.raises(der.DerError, match="not a valid OID"):
        der.oid("3.1")


def test_high_tag_numbers_are_read():
    item = der.read_one(b"\x9f\x81\x00\x01\xaa")  # [128] IMPLICIT, primitive
    assert (item.tag_class, item.number, item.content) == (2, 128, b"\xaa")


# -- PKCS#7 certs-only ---------------------------------------------------------------


def test_pkcs7_ber_vector_and_our_der_are_both_read_by_openssl():
    certs = pkcs7.decode_certs_only(A1)
    assert len(certs) == 4
    encoded = pkcs7.encode_certs_only(certs)
    out = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-print_certs", "-noout"],
        input=encoded,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert out.count("subject=") == 4


def test_pkcs7_encoder_refuses_nothing_to_encode():
    with pytest.raises(Pkcs7Error, match="at least one"):
        pkcs7.encode_certs_only([])


def test_pkcs7_with_no_certificate_is_an_error():
    # ContentInfo { signedData, [0] SignedData { 1, {}, { data }, signerInfos {} } }
    signed = der.sequence(
        [
            der.integer(1),
            der.set_of([]),
            der.sequence([der.oid("1.2.840.113549.1.7.1")]),
            der.set_of([]),
        ]
    )
    empty = der.sequence([der.oid("1.2.840.113549.1.7.2"), der.context(0, signed)])
    with pytest.raises(Pkcs7Error):
        pkcs7.decode_certs_only(empty)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b64.encode(ONE_CERT), "base64 or PEM"),
        (ONE_CERT + b"\x00", "trailing"),
        (ONE_CERT[:-3], "cut short"),
        (der.sequence([der.oid("1.2.840.113549.1.7.1"), der.context(0, b"")]), "not signedData"),
        (der.sequence([der.integer(1)]), "no content type"),
        ((VECTORS / "rfc9148/A2-sen-request.csr.der").read_bytes(), "no content type"),
    ],
)
def test_bad_pkcs7_is_a_specific_error(data, message):
    with pytest.raises(Pkcs7Error, match=message):
        pkcs7.decode_certs_only(data)


def test_pkcs7_indefinite_length_ber_is_read():
    """BER with indefinite lengths (what streaming CMS encoders emit) is valid PKCS#7."""
    certs = pkcs7.decode_certs_only(ONE_CERT)
    top = der.read_one(ONE_CERT)
    content_type, explicit = top.children()
    ber = b"\x30\x80" + content_type.raw + b"\xa0\x80" + explicit.content + b"\x00\x00\x00\x00"
    assert pkcs7.decode_certs_only(ber) == certs
    # A missing end-of-contents marker (cut-short BER) is refused.
    with pytest.raises(Pkcs7Error):
        pkcs7.decode_certs_only(ber[:-2])
