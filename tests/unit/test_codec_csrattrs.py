"""CSR attributes: the RFC 9908 forms, building, and the bad-input matrix."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from estcoap.codec import csrattrs, pkcs10
from estcoap.codec.csrattrs import CsrAttribute, CsrAttrOid, KeyRequest
from estcoap.codec.errors import CsrAttrsError
from tests.conftest import require

pytestmark = pytest.mark.timeout(30)

OID = x509.ObjectIdentifier
EXT_REQ = "1.2.840.113549.1.9.14"
TEMPLATE = "1.2.840.113549.1.9.16.2.61"
EXT_REQ_TEMPLATE = "1.2.840.113549.1.9.16.2.62"
SECP384R1 = "1.3.132.0.34"


# An encoder independent of estcoap.codec.der, so the tests do not check the
# codec against itself.
def tlv(tag: int, *content: bytes) -> bytes:
    body = b"".join(content)
    if len(body) < 128:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def seq(*items: bytes) -> bytes:
    return tlv(0x30, *items)


def set_(*items: bytes) -> bytes:
    return tlv(0x31, *sorted(items))


def attribute(type_oid: str, *values: bytes) -> bytes:
    return seq(oid(type_oid), set_(*values))


SAN_EXTENSION = seq(oid("2.5.29.17"), tlv(0x04, seq(tlv(0x82, b"device.example"))))
EXTENSIONS = seq(SAN_EXTENSION)


def san_extensions() -> x509.Extensions:
    san = x509.SubjectAlternativeName([x509.DNSName("device.example")])
    return x509.Extensions([x509.Extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False, san)])


# -- the RFC 9908 forms, decoded from hand-made DER -------------------------------


def test_empty_csrattrs_is_valid_and_asks_for_nothing():
    items = csrattrs.decode_csrattrs(b"\x30\x00")
    assert items == ()
    assert not csrattrs.wants_challenge_password(items)
    assert csrattrs.requested_key(items) is None
    assert csrattrs.requested_extensions(items) is None
    assert csrattrs.build_csrattrs(challenge_password=False) == b"\x30\x00"


def test_extension_request_with_extensions_value():
    body = seq(oid("1.2.840.113549.1.9.7"), attribute(EXT_REQ, EXTENSIONS))
    items = csrattrs.decode_csrattrs(body)
    assert csrattrs.wants_challenge_password(items)
    assert list(csrattrs.requested_extensions(items)) == list(san_extensions())
    assert csrattrs.csrattrs_warnings(items) == ()


def test_key_type_attributes_carry_parameters():
    ec_body = seq(attribute("1.2.840.10045.2.1", oid(SECP384R1)))
    key = csrattrs.requested_key(csrattrs.decode_csrattrs(ec_body))
    assert key == KeyRequest.ec(OID(SECP384R1))
    assert isinstance(key.ec_curve(), ec.SECP384R1)
    rsa_body = seq(attribute("1.2.840.113549.1.1.1", tlv(0x02, (3072).to_bytes(2, "big"))))
    key = csrattrs.requested_key(csrattrs.decode_csrattrs(rsa_body))
    assert (key.kind, key.bits) == ("rsa", 3072)


def test_bare_key_algorithm_oids():
    assert (
        csrattrs.requested_key(csrattrs.decode_csrattrs(seq(oid("1.3.101.112")))).kind == "ed25519"
    )
    rsa = csrattrs.requested_key(csrattrs.decode_csrattrs(seq(oid("1.2.840.113549.1.1.1"))))
    assert (rsa.kind, rsa.bits) == ("rsa", None)
    # A bare curve OID (as in RFC 7030 A.2) means an EC key on that curve.
    curve = csrattrs.requested_key(csrattrs.decode_csrattrs(seq(oid(SECP384R1))))
    assert (curve.kind, curve.curve) == ("ec", OID(SECP384R1))


def hand_template() -> bytes:
    """RFC 9908 s3.4 shape: O filled in, CN blank, P-256 key, SAN extension template."""
    subject = seq(
        set_(seq(oid("2.5.4.10"), tlv(0x0C, b"Example Inc"))),
        set_(seq(oid("2.5.4.3"))),
    )
    spki = tlv(0xA0, seq(oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7")))
    ext_templates = seq(
        seq(oid("2.5.29.17")),
        seq(oid("2.5.29.15"), tlv(0x01, b"\xff"), tlv(0x04, b"\x03\x02\x07\x80")),
    )
    attrs = tlv(0xA1, attribute(EXT_REQ_TEMPLATE, ext_templates))
    return seq(tlv(0x02, b"\x00"), subject, spki, attrs)


def test_certification_request_info_template_decodes():
    body = seq(attribute(TEMPLATE, hand_template()))
    items = csrattrs.decode_csrattrs(body)
    template = csrattrs.requested_template(items)
    assert template is not None
    assert template.blank_subject_oids() == (NameOID.COMMON_NAME,)
    assert template.fill_subject({NameOID.COMMON_NAME: "dev-7"}) == x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, "dev-7"),
        ]
    )
    assert csrattrs.requested_key(items) == KeyRequest.ec(OID("1.2.840.10045.3.1.7"))
    san, key_usage = template.extension_templates
    assert (san.oid, san.critical, san.value) == (
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        False,
        None,
    )
    assert (key_usage.oid, key_usage.critical, key_usage.value) == (
        ExtensionOID.KEY_USAGE,
        True,
        b"\x03\x02\x07\x80",
    )
    # Re-encoding the decoded template gives the same bytes.
    assert csrattrs.encode_template(template) == hand_template()
    assert csrattrs.encode_csrattrs(items) == body


def test_template_blank_left_unfilled_is_an_error():
    template = csrattrs.decode_template(hand_template())
    with pytest.raises(CsrAttrsError, match="blank"):
        template.fill_subject({})


def test_template_rsa_size_from_placeholder_key():
    for bits in (2048, 3072):
        built = csrattrs.CsrTemplate.build(key=KeyRequest.rsa(bits))
        assert csrattrs.decode_template(csrattrs.encode_template(built)).key == KeyRequest.rsa(bits)
    # An all-zero dummy modulus states the size by its length.
    zero_key = tlv(
        0x03, b"\x00", seq(tlv(0x02, b"\x00" + b"\x00" * 256), tlv(0x02, b"\x01\x00\x01"))
    )
    rsa_alg = seq(oid("1.2.840.113549.1.1.1"), b"\x05\x00")
    body = seq(tlv(0x02, b"\x00"), tlv(0xA0, rsa_alg, zero_key), tlv(0xA1))
    assert csrattrs.decode_template(body).key == KeyRequest.rsa(2048)


def test_template_extension_request_feeds_requested_extensions():
    template = csrattrs.CsrTemplate.build(
        subject=x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
        blank=[NameOID.COMMON_NAME],
        extensions=san_extensions(),
    )
    items = csrattrs.decode_csrattrs(
        csrattrs.build_csrattrs(challenge_password=False, template=template)
    )
    assert csrattrs.requested_template(items) == template
    assert list(csrattrs.requested_extensions(items)) == list(san_extensions())


# -- building ----------------------------------------------------------------------


def test_build_round_trip_and_an_independent_parser_accepts_it():
    body = csrattrs.build_csrattrs(
        challenge_password=True,
        key=KeyRequest.ec(ec.SECP384R1()),
        signature_hash=hashes.SHA384(),
        extensions=san_extensions(),
    )
    items = csrattrs.decode_csrattrs(body)
    assert items[0] == CsrAttrOid(OID("1.2.840.113549.1.9.7"))
    assert items[1] == CsrAttribute(OID("1.2.840.10045.2.1"), (oid(SECP384R1),))
    assert items[3] == CsrAttrOid(OID("1.2.840.10045.4.3.3"))  # ecdsa-with-SHA384
    assert csrattrs.requested_key(items) == KeyRequest.ec(OID(SECP384R1))
    assert csrattrs.requested_signature_hash(items).name == "sha384"
    assert list(csrattrs.requested_extensions(items)) == list(san_extensions())
    require("openssl", "openssl parses the attributes independently")
    out = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER"], input=body, capture_output=True, check=True
    ).stdout.decode()
    assert "challengePassword" in out and "Extension Request" in out and "secp384r1" in out


def test_rsa_build_uses_the_rsa_signature_oid_and_a_size_attribute():
    items = csrattrs.decode_csrattrs(
        csrattrs.build_csrattrs(
            challenge_password=False, key=KeyRequest.rsa(3072), signature_hash=hashes.SHA256()
        )
    )
    assert items == (
        CsrAttribute(OID("1.2.840.113549.1.1.1"), (tlv(0x02, b"\x0c\x00"),)),
        CsrAttrOid(OID("1.2.840.113549.1.1.11")),
    )


def test_requested_extensions_go_into_a_client_csr():
    items = csrattrs.decode_csrattrs(seq(attribute(EXT_REQ, EXTENSIONS)))
    key = ec.generate_private_key(ec.SECP256R1())
    der = pkcs10.build_csr(key, x509.Name([]), extensions=csrattrs.requested_extensions(items))
    assert list(pkcs10.parse_csr(der).extensions) == list(san_extensions())


def test_unknown_attributes_are_kept():
    body = seq(attribute("2.999.7", tlv(0x13, b"x")), oid("2.999.8"))
    items = csrattrs.decode_csrattrs(body)
    assert items == (CsrAttribute(OID("2.999.7"), (tlv(0x13, b"x"),)), CsrAttrOid(OID("2.999.8")))
    assert csrattrs.encode_csrattrs(items) == body


# -- bad input ---------------------------------------------------------------------

BAD = {
    "empty": (b"", "not DER"),
    "not a SEQUENCE": (set_(oid("2.999.1")), "must be a SEQUENCE"),
    "trailing bytes": (seq(oid("2.999.1")) + b"\x00", "trailing"),
    "truncated": (seq(oid("2.999.1"))[:-1], "truncated"),
    "indefinite length": (b"\x30\x80\x00\x00", "indefinite"),
    "non-minimal length": (b"\x30\x81\x00", "minimal"),
    "INTEGER element": (seq(tlv(0x02, b"\x01")), "element 0"),
    "attribute without SET": (seq(seq(oid("2.999.1"), tlv(0x13, b"x"))), "Attribute"),
    "attribute with three fields": (seq(seq(oid("2.999.1"), set_(), set_())), "Attribute"),
    "bad OID": (seq(tlv(0x06, b"\x80\x01")), "OBJECT IDENTIFIER"),
    "two extensionRequests": (
        seq(attribute(EXT_REQ, EXTENSIONS), attribute(EXT_REQ, EXTENSIONS)),
        "more than one extensionRequest",
    ),
    "two Extensions values": (
        seq(
            attribute(
                EXT_REQ, EXTENSIONS, seq(seq(oid("2.5.29.15"), tlv(0x04, b"\x03\x02\x07\x80")))
            )
        ),
        "exactly one Extensions",
    ),
    "Extensions of junk": (seq(attribute(EXT_REQ, seq(tlv(0x02, b"\x01")))), "not Extensions"),
    "duplicate extension": (seq(attribute(EXT_REQ, seq(SAN_EXTENSION, SAN_EXTENSION))), "twice"),
    "two templates": (
        seq(attribute(TEMPLATE, hand_template()), attribute(TEMPLATE, hand_template())),
        "more than one CSR template",
    ),
    "template version 1": (
        seq(attribute(TEMPLATE, seq(tlv(0x02, b"\x01"), tlv(0xA1)))),
        "version",
    ),
    "template with both extension forms": (
        seq(
            attribute(
                TEMPLATE,
                seq(
                    tlv(0x02, b"\x00"),
                    tlv(
                        0xA1,
                        attribute(EXT_REQ, EXTENSIONS),
                        attribute(EXT_REQ_TEMPLATE, seq(seq(oid("2.5.29.17")))),
                    ),
                ),
            )
        ),
        "not both",
    ),
    "template with stray element": (
        seq(attribute(TEMPLATE, seq(tlv(0x02, b"\x00"), tlv(0xA1), tlv(0x05, b"")))),
        "unexpected element",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_csrattrs_is_a_specific_error(case):
    body, message = BAD[case]
    with pytest.raises(CsrAttrsError, match=message):
        csrattrs.decode_csrattrs(body)


def test_key_attribute_of_the_wrong_type_is_an_error():
    items = csrattrs.decode_csrattrs(seq(attribute("1.2.840.10045.2.1", tlv(0x02, b"\x01"))))
    with pytest.raises(CsrAttrsError, match="wrong type"):
        csrattrs.requested_key(items)
    items = csrattrs.decode_csrattrs(seq(attribute("1.2.840.113549.1.1.1", tlv(0x02, b"\x08"))))
    with pytest.raises(CsrAttrsError, match="out of range"):
        csrattrs.requested_key(items)


def test_builder_refuses_what_the_decoder_would_refuse():
    with pytest.raises(CsrAttrsError, match="more than one extensionRequest"):
        csrattrs.build_csrattrs(
            challenge_password=False,
            extensions=san_extensions(),
            extra=[CsrAttribute(OID(EXT_REQ), (EXTENSIONS,))],
        )
