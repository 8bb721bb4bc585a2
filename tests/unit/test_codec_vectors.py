"""Every RFC 7030 / RFC 9148 example payload through the codecs, checked against index.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from estcoap.codec import b64, csrattrs, der, multipart, pkcs7, pkcs10
from estcoap.codec.errors import CsrError
from estcoap.codec.operations import ContentFormat

pytestmark = pytest.mark.timeout(30)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
INDEX = json.loads((VECTORS / "index.json").read_text())
FILES: dict[str, dict] = INDEX["files"]


def data(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def by_kind(kind: str) -> list[str]:
    return sorted(name for name, entry in FILES.items() if entry["kind"] == kind)


def spki(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_label(key) -> str:  # type: ignore[no-untyped-def]
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def test_index_covers_every_payload_file():
    """A new vector file cannot slip past these tests unindexed."""
    on_disk = {
        str(p.relative_to(VECTORS))
        for p in VECTORS.rglob("*")
        if p.is_file() and p.suffix not in (".json", ".md")
    }
    assert on_disk == set(FILES)


# -- PKCS#10 ----------------------------------------------------------------------


@pytest.mark.parametrize("name", by_kind("csr"))
def test_csr_vectors_decode_with_the_stated_facts(name):
    facts = FILES[name]["parsed"]
    sha1 = facts["sig_alg"].startswith("sha1")
    csr = pkcs10.parse_csr(data(name), check_signature=not sha1)
    assert csr.der == data(name)
    assert csr.subject.rfc4514_string() == facts["subject"]
    assert key_label(csr.public_key) == facts["public_key"]
    attrs = {a["type"]: a for a in facts["attributes"]}
    if "challengePassword" in attrs:
        assert csr.challenge_password == bytes.fromhex(attrs["challengePassword"]["value_hex"])
    else:
        assert csr.challenge_password is None
    if "extensionRequest" in attrs:
        assert csr.subject_alt_name is not None
        other = csr.subject_alt_name.get_values_for_type(x509.OtherName)
        assert other[0].type_id.dotted_string == "1.3.6.1.5.5.7.8.4"  # id-on-hardwareModuleName
    else:
        assert len(csr.extensions) == 0


@pytest.mark.parametrize("name", [n for n in by_kind("csr") if n.startswith("rfc7030/")])
def test_rfc7030_sha1_csrs_are_refused_with_a_clear_error(name):
    with pytest.raises(CsrError, match="SHA1.*refused"):
        pkcs10.parse_csr(data(name))


@pytest.mark.parametrize("name", by_kind("csr"))
def test_csr_vectors_decode_from_base64_and_pem(name):
    der = data(name)
    text = b64.encode(der)
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + text + b"-----END CERTIFICATE REQUEST-----\n"
    assert pkcs10.parse_csr(text, check_signature=False).der == der
    assert pkcs10.parse_csr(pem, check_signature=False).der == der


# -- PKCS#7 -----------------------------------------------------------------------


@pytest.mark.parametrize("name", by_kind("pkcs7"))
def test_pkcs7_vectors_decode_to_the_stated_certificates(name):
    facts = FILES[name]["parsed"]
    certs = pkcs7.decode_certs_only(data(name))
    assert len(certs) == facts["certificates"]
    for cert, stated in zip(certs, facts["certs"], strict=True):
        assert cert.subject.rfc4514_string() == stated["subject"]
        assert cert.issuer.rfc4514_string() == stated["issuer"]
        assert format(cert.serial_number, "x") == stated["serial_hex"]
        assert key_label(cert.public_key()) == stated["public_key"]


def test_rfc7030_a1_ber_cacerts_gives_four_certificates_in_order():
    certs = pkcs7.decode_certs_only(data("rfc7030/A1-cacerts-response.p7.der"))
    assert [c.subject.rfc4514_string() for c in certs] == [
        "CN=estExampleCA OwO",
        "CN=estExampleCA NwO",
        "CN=estExampleCA OwN",
        "CN=estExampleCA NwN",
    ]


@pytest.mark.parametrize("name", by_kind("pkcs7"))
def test_pkcs7_vectors_reencode_as_der_with_the_same_certificates(name):
    """Re-encoding gives DER (SET OF sorted, so A.1's BER order is fixed) holding the same set."""
    certs = pkcs7.decode_certs_only(data(name))
    encoded = pkcs7.encode_certs_only(certs)
    der.read_one(encoded)  # one well-formed DER value, nothing trailing
    again = pkcs7.decode_certs_only(encoded)
    assert sorted(c.fingerprint(hashes.SHA256()) for c in again) == sorted(
        c.fingerprint(hashes.SHA256()) for c in certs
    )


# -- PKCS#8 and the key/cert cross-checks ----------------------------------------


@pytest.mark.parametrize("name", by_kind("pkcs8"))
def test_pkcs8_vectors_load(name):
    key = serialization.load_der_private_key(data(name), password=None)
    assert key_label(key) == FILES[name]["parsed"]["private_key"]


@pytest.mark.parametrize(
    ("key_file", "cert_file"),
    [
        ("rfc9148/A3-skg-response-pkcs8.der", "rfc9148/A3-skg-response-pkcs7.der"),
        (
            "rfc7030/A4-serverkeygen-response-key.p8.der",
            "rfc7030/A4-serverkeygen-response-cert.p7.der",
        ),
    ],
)
def test_server_generated_key_matches_returned_certificate(key_file, cert_file):
    key = serialization.load_der_private_key(data(key_file), password=None)
    (cert,) = pkcs7.decode_certs_only(data(cert_file))
    assert spki(key.public_key()) == spki(cert.public_key())


def test_issued_certificates_carry_the_csr_keys():
    pairs = [
        ("rfc9148/A2-sen-request.csr.der", "rfc9148/A2-sen-response.der"),
        ("rfc7030/A3-simpleenroll-request.csr.der", "rfc7030/A3-simpleenroll-response.p7.der"),
    ]
    for csr_file, cert_file in pairs:
        csr = pkcs10.parse_csr(data(csr_file), check_signature=False)
        (cert,) = pkcs7.decode_certs_only(data(cert_file))
        assert csr.public_key_der == spki(cert.public_key())
        assert csr.subject == cert.subject


# -- CSR attributes ----------------------------------------------------------------


@pytest.mark.parametrize("name", by_kind("csrattrs"))
def test_csrattrs_vectors_decode_as_stated_and_reencode_identically(name):
    items = csrattrs.decode_csrattrs(data(name))
    stated = FILES[name]["parsed"]
    assert len(items) == len(stated)
    for item, fact in zip(items, stated, strict=True):
        if "oid" in fact:
            assert item == csrattrs.CsrAttrOid(x509.ObjectIdentifier(fact["oid"]))
        else:
            assert isinstance(item, csrattrs.CsrAttribute)
            assert item.oid.dotted_string == fact["attribute"]
            assert len(item.values) == len(fact["values"])
    assert csrattrs.encode_csrattrs(items) == data(name)


def test_rfc7030_a2_csrattrs_meaning():
    items = csrattrs.decode_csrattrs(data("rfc7030/A2-csrattrs-response.der"))
    assert csrattrs.wants_challenge_password(items)
    key = csrattrs.requested_key(items)
    assert key is not None and key.kind == "ec"
    assert key.curve == x509.ObjectIdentifier("1.3.36.3.3.2.8.1.1.11")  # brainpoolP384r1
    assert isinstance(key.ec_curve(), ec.BrainpoolP384R1)
    assert csrattrs.requested_signature_hash(items).name == "sha384"
    assert csrattrs.requested_extensions(items) is None
    assert csrattrs.csrattrs_warnings(items) == ()
    # The A.2 / RFC 9148 A.4 bytes are one and the same example.
    assert data("rfc7030/A2-csrattrs-response.der") == data("rfc9148/A4-att-response.der")


def test_rfc7030_s452_example_is_flagged_not_read_as_extensions():
    items = csrattrs.decode_csrattrs(data("rfc7030/S4.5.2-csrattrs-example.der"))
    assert csrattrs.wants_challenge_password(items)
    key = csrattrs.requested_key(items)
    assert (key.kind, key.curve) == ("ec", x509.ObjectIdentifier("1.3.132.0.34"))
    assert csrattrs.requested_signature_hash(items).name == "sha384"
    assert csrattrs.requested_extensions(items) is None
    assert csrattrs.legacy_extension_oids(items) == (x509.ObjectIdentifier("1.3.6.1.1.1.1.22"),)
    (warning,) = csrattrs.csrattrs_warnings(items)
    assert "RFC 9908" in warning


# -- CBOR multipart-core and HTTP multipart/mixed ----------------------------------


def test_rfc9148_a3_multipart_core_decodes_and_reencodes_identically():
    payload = data("rfc9148/A3-skg-response.cbor")
    parts = multipart.decode_multipart_core(payload)
    assert [(cf, len(body)) for cf, body in parts] == [(284, 138), (281, 467)]
    assert parts[0][1] == data("rfc9148/A3-skg-response-pkcs8.der")
    assert parts[1][1] == data("rfc9148/A3-skg-response-pkcs7.der")
    assert multipart.encode_multipart_core(parts) == payload
    keygen = multipart.KeygenParts.from_core(payload)
    assert (keygen.key_format, keygen.cert_format) == (
        ContentFormat.PKCS8,
        ContentFormat.PKCS7_CERTS_ONLY,
    )
    assert keygen.to_core() == payload


def test_rfc9148_a3_key_is_the_skg_request_key():
    csr = pkcs10.parse_csr(data("rfc9148/A3-skg-request.csr.der"))
    key = serialization.load_der_private_key(data("rfc9148/A3-skg-response-pkcs8.der"), None)
    assert csr.public_key_der == spki(key.public_key())


def test_rfc7030_a4_multipart_mixed_decodes_to_the_der_files():
    http = json.loads((VECTORS / "rfc7030/A4-serverkeygen.http.json").read_text())
    content_type = dict(http["response"]["headers"])["Content-Type"]
    body = data("rfc7030/A4-serverkeygen-response.multipart.txt")
    parts = multipart.decode_multipart_mixed(body, content_type)
    assert parts == [
        ("application/pkcs8", data("rfc7030/A4-serverkeygen-response-key.p8.der")),
        (
            "application/pkcs7-mime; smime-type=certs-only",
            data("rfc7030/A4-serverkeygen-response-cert.p7.der"),
        ),
    ]
    # LF-only line ends (how the RFC counts) decode the same.
    assert multipart.decode_multipart_mixed(body.replace(b"\r\n", b"\n"), content_type) == parts


# -- base64 transfer encoding: the RFC 7030 Content-Length figures ------------------


def _http_bodies():
    for path in sorted(VECTORS.glob("rfc7030/*.http.json")):
        for message in json.loads(path.read_text()).values():
            shown = message.get("body_encoding_as_shown", "") if isinstance(message, dict) else ""
            if str(shown).startswith("base64"):
                yield path.name, message


@pytest.mark.parametrize(("source", "message"), list(_http_bodies()))
def test_base64_bodies_match_the_rfc_content_length(source, message):
    """RFC 7030 counts its bodies as 64-column base64 with LF after each line."""
    der = data("rfc7030/" + message["body_file"])
    text = b64.encode(der)
    assert len(text) == int(dict(message["headers"])["Content-Length"])
    assert b64.decode(text) == der


# -- RFC 9148 B.1 blocks are slices of the 639-byte draft body --------------------


def test_b1_blocks_are_slices_of_the_draft_body():
    body = data("rfc9148/B1-cacerts-639-body-from-draft12.der")
    assert data("rfc9148/B1-block0-payload.bin") == body[0:64]
    assert data("rfc9148/B1-block1-payload.bin") == body[64:128]
    assert data("rfc9148/B1-block9-payload.bin") == body[576:639]
