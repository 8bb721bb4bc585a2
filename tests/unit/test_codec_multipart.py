"""Server-keygen bodies: CoAP multipart-core (RFC 8710) and HTTP multipart/mixed (RFC 7030)."""

from __future__ import annotations

import base64
import email
import email.policy
from pathlib import Path

import cbor2
import pytest

from estcoap.codec import multipart, pkcs7
from estcoap.codec.errors import MultipartError
from estcoap.codec.multipart import KeygenParts
from estcoap.codec.operations import ContentFormat

pytestmark = pytest.mark.timeout(30)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
A4_BODY = (VECTORS / "rfc7030/A4-serverkeygen-response.multipart.txt").read_bytes()
A4_TYPE = "multipart/mixed ; boundary=estServerExampleBoundary"
A4_KEY = (VECTORS / "rfc7030/A4-serverkeygen-response-key.p8.der").read_bytes()
A4_CERT = (VECTORS / "rfc7030/A4-serverkeygen-response-cert.p7.der").read_bytes()
A1_CERTS = (VECTORS / "rfc7030/A1-cacerts-response.p7.der").read_bytes()
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"


# -- multipart-core --------------------------------------------------------------


def test_core_round_trip_keeps_order_and_bytes():
    parts = [(287, b"\x30\x03\x02\x01\x01"), (284, b"key")]
    encoded = multipart.encode_multipart_core(parts)
    assert cbor2.loads(encoded) == [287, b"\x30\x03\x02\x01\x01", 284, b"key"]
    assert multipart.decode_multipart_core(encoded) == parts


BAD_CORE = {
    "empty": (b"", "empty"),
    "not CBOR": (b"\xff", "not CBOR"),
    "truncated": (cbor2.dumps([284, b"abc"])[:-1], "not CBOR"),
    "a map": (cbor2.dumps({284: b"k"}), "CBOR array"),
    "odd length": (cbor2.dumps([284, b"k", 281]), "even number"),
    "text format": (cbor2.dumps(["284", b"k"]), "content-format"),
    "negative format": (cbor2.dumps([-1, b"k"]), "content-format"),
    "format too large": (cbor2.dumps([70000, b"k"]), "content-format"),
    "boolean format": (cbor2.dumps([True, b"k"]), "content-format"),
    "text payload": (cbor2.dumps([284, "k"]), "byte string"),
    "null payload": (cbor2.dumps([284, None]), "null"),
    "trailing bytes": (cbor2.dumps([284, b"k"]) + b"\x00", "trailing"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORE))
def test_bad_multipart_core_is_a_specific_error(case):
    payload, message = BAD_CORE[case]
    with pytest.raises(MultipartError, match=message):
        multipart.decode_multipart_core(payload)


# -- multipart/mixed: what we send --------------------------------------------------


def test_mixed_encoding_is_read_by_the_stdlib_mime_parser():
    body, content_type = multipart.encode_multipart_mixed(
        [("application/pkcs8", A4_KEY), (CERTS_ONLY, A4_CERT)]
    )
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body,
        policy=email.policy.HTTP,
    )
    assert message.is_multipart()
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/pkcs8", "application/pkcs7-mime"]
    assert parts[1].get_param("smime-type") == "certs-only"
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["base64", "base64"]
    assert [p.get_payload(decode=True) for p in parts] == [A4_KEY, A4_CERT]


def test_mixed_encoding_wraps_base64_at_64_columns_with_crlf():
    body, content_type = multipart.encode_multipart_mixed(
        [("application/pkcs8", A4_KEY)], boundary="b"
    )
    assert content_type == "multipart/mixed; boundary=b"
    assert body.startswith(b"--b\r\nContent-Type: application/pkcs8\r\n")
    assert body.endswith(b"--b--\r\n")
    lines = body.split(b"\r\n")
    b64_lines = lines[4 : lines.index(b"--b--")]
    assert all(len(line) == 64 for line in b64_lines[:-1]) and 0 < len(b64_lines[-1]) <= 64
    assert base64.b64decode(b"".join(b64_lines)) == A4_KEY
    assert b"\n" not in body.replace(b"\r\n", b"")


def test_mixed_encoding_refuses_bad_input():
    with pytest.raises(MultipartError, match="at least one part"):
        multipart.encode_multipart_mixed([])
    with pytest.raises(MultipartError, match="boundary"):
        multipart.encode_multipart_mixed([("application/pkcs8", b"k")], boundary="bad\r\nb")
    with pytest.raises(MultipartError, match="single line"):
        multipart.encode_multipart_mixed([("application/pkcs8\r\nX-Evil: 1", b"k")])


# -- multipart/mixed: what we accept -------------------------------------------------


def mixed(
    *parts: bytes, preamble: bytes = b"", epilogue: bytes = b"", nl: bytes = b"\r\n"
) -> bytes:
    out = preamble
    for part in parts:
        out += b"--B" + nl + part
    return out + b"--B--" + nl + epilogue


KEY_B64 = base64.b64encode(b"KEY")
CERT_B64 = base64.b64encode(b"CERT")


def test_mixed_decoding_tolerates_what_rfc_8951_asks():
    lf_body = mixed(
        b"content-type: application/pkcs8\n\n" + KEY_B64 + b"\n",  # lower-case header, no CTE
        b'Content-Type: application/pkcs7-mime;\n smime-type="certs-only"; name=x.p7\n'
        b"Content-Transfer-Encoding: BASE64\n\n"
        + CERT_B64[:3]
        + b" \t\n"
        + CERT_B64[3:].rstrip(b"=")  # folded header, quoted parameter, odd spacing, no padding
        + b"\n",
        preamble=b"ignore me\n--Boundary-lookalike\n",
        epilogue=b"trailing words\n",
        nl=b"\n",
    )
    assert multipart.decode_multipart_mixed(lf_body, 'multipart/mixed; boundary="B"') == [
        ("application/pkcs8", b"KEY"),
        (CERTS_ONLY, b"CERT"),
    ]


def test_mixed_decoding_of_the_a4_vector_in_either_order_via_keygen_parts():
    keygen = KeygenParts.from_mixed(A4_BODY, A4_TYPE)
    assert (keygen.key, keygen.certificate) == (A4_KEY, A4_CERT)
    swapped = mixed(
        b"Content-Type: " + CERTS_ONLY.encode() + b"\r\n\r\n" + base64.b64encode(A4_CERT) + b"\r\n",
        b"Content-Type: application/pkcs8\r\n\r\n" + base64.b64encode(A4_KEY) + b"\r\n",
    )
    assert KeygenParts.from_mixed(swapped, "multipart/mixed; boundary=B") == keygen


BAD_MIXED = {
    "wrong media type": (mixed(), "text/plain; boundary=B", "expected multipart/mixed"),
    "no boundary": (mixed(), "multipart/mixed", "no boundary"),
    "boundary not found": (b"just text\r\n", "multipart/mixed; boundary=B", "no part"),
    "no closing boundary": (
        b"--B\r\nContent-Type: application/pkcs8\r\n\r\nS0VZ\r\n",
        "multipart/mixed; boundary=B",
        "closing boundary",
    ),
    "no content type": (mixed(b"\r\nS0VZ\r\n"), "multipart/mixed; boundary=B", "no Content-Type"),
    "headers never end": (
        mixed(b"Content-Type: application/pkcs8\r\n"),
        "multipart/mixed; boundary=B",
        "no blank line",
    ),
    "malformed header": (
        mixed(b"Content-Type application/pkcs8\r\n\r\nS0VZ\r\n"),
        "multipart/mixed; boundary=B",
        "malformed header",
    ),
    "not base64": (
        mixed(b"Content-Type: application/pkcs8\r\n\r\n!!!!\r\n"),
        "multipart/mixed; boundary=B",
        "not base64",
    ),
    "empty part": (
        mixed(b"Content-Type: application/pkcs8\r\n\r\n"),
        "multipart/mixed; boundary=B",
        "empty",
    ),
    "quoted-printable": (
        mixed(
            b"Content-Type: application/pkcs8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n"
        ),
        "multipart/mixed; boundary=B",
        "Content-Transfer-Encoding",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MIXED))
def test_bad_multipart_mixed_is_a_specific_error(case):
    body, content_type, message = BAD_MIXED[case]
    with pytest.raises(MultipartError, match=message):
        multipart.decode_multipart_mixed(body, content_type)


# -- mapping one answer between HTTP and CoAP (the gateway's job) --------------------


def test_a4_answer_maps_to_skg_and_skc_cbor():
    keygen = KeygenParts.from_mixed(A4_BODY, A4_TYPE)
    skg = cbor2.loads(keygen.to_core())
    assert skg == [284, A4_KEY, 281, A4_CERT]
    skc = keygen.with_single_certificate()
    (cert,) = pkcs7.decode_certs_only(A4_CERT)
    assert skc.cert_format is ContentFormat.PKIX_CERT
    assert skc.certificate == cert.public_bytes(pkcs7.Encoding.DER)
    assert KeygenParts.from_core(skc.to_core()) == skc
    # ... and back: the CoAP skg form gives the same HTTP parts.
    body, content_type = KeygenParts.from_core(keygen.to_core()).to_mixed()
    assert multipart.decode_multipart_mixed(body, content_type) == [
        ("application/pkcs8", A4_KEY),
        (CERTS_ONLY, A4_CERT),
    ]


def test_encrypted_key_passes_through_untouched():
    blob = b"\x30\x80opaque-cms-enveloped-data"
    keygen = KeygenParts.from_pairs(
        [("application/pkcs7-mime; smime-type=server-generated-key", blob), (CERTS_ONLY, A4_CERT)]
    )
    assert keygen.key_format is ContentFormat.PKCS7_SERVER_KEYGEN
    assert cbor2.loads(keygen.to_core())[:2] == [280, blob]


def test_keygen_parts_errors():
    with pytest.raises(MultipartError, match="needs a key part"):
        KeygenParts.from_pairs([(281, A4_CERT)])
    with pytest.raises(MultipartError, match="two key parts"):
        KeygenParts.from_pairs([(284, b"a"), (284, b"b"), (281, A4_CERT)])
    with pytest.raises(MultipartError, match="unexpected part"):
        KeygenParts.from_pairs([(284, b"a"), (281, A4_CERT), (60, b"x")])
    with pytest.raises(MultipartError, match="pkix-cert needs one"):
        KeygenParts.from_pairs([(284, b"a"), (281, A1_CERTS)]).with_single_certificate()
    with pytest.raises(MultipartError, match="certificate part"):
        KeygenParts.from_pairs([(284, b"a"), (281, b"junk")]).with_single_certificate()
    with pytest.raises(MultipartError, match="certs-only"):
        KeygenParts.from_pairs([(284, b"a"), (287, b"cert")]).to_mixed()


def test_content_format_for_media_types():
    assert multipart.content_format_for("Application/PKCS8") is ContentFormat.PKCS8
    assert (
        multipart.content_format_for('application/pkcs7-mime; name="a.p7c"; smime-type=CERTS-ONLY')
        is ContentFormat.PKCS7_CERTS_ONLY
    )
    assert multipart.content_format_for("application/pkcs7-mime") is None
    assert multipart.content_format_for("text/plain") is None
