"""RFC 9148 Appendix A vectors through the coap front's own encoders and decoders."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estcoap import service as svc
from estcoap.coap.resources import _certificates, _key_and_certificate
from estcoap.codec import pkcs7
from estcoap.codec.operations import ContentFormat, by_short_name
from estcoap.codec.pkcs10 import parse_csr

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "rfc9148"


def _read(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_a1_crts_response_is_the_rfc_datagram() -> None:
    body = _read("A1-cacerts-response.der")
    certs = svc.Certificates(tuple(pkcs7.decode_certs_only(body)), raw_pkcs7=body)
    message = _certificates(certs, ContentFormat.PKCS7_CERTS_ONLY, Code.CONTENT, whole_set=True)
    assert message.opt.content_format == 281 and message.payload == body
    # Header fields as RFC 9148 A.1 lists them: ACK, 2.05, token 0x9a, Content-Format 281.
    message.mtype, message.mid, message.token = Type.ACK, 0x1234, bytes.fromhex("9a")
    derived = json.loads(_read("A1-cacerts-response.coap.json"))["derived"]
    wire = message.encode()
    assert wire[0] == int(derived["first_byte"], 16) and wire[1] == int(derived["code_byte"], 16)
    head = wire[4:].split(b"\xff", 1)[0]
    assert head == bytes.fromhex(derived["token_hex"] + derived["options_hex"])
    assert wire.endswith(b"\xff" + body)
    # ... and 287 when asked: the one CA certificate as DER.
    single = _certificates(certs, ContentFormat.PKIX_CERT, Code.CONTENT, whole_set=True)
    assert x509.load_der_x509_certificate(single.payload) == certs.certificates[0]


def test_a2_sen_request_decodes_and_response_round_trips() -> None:
    csr = parse_csr(_read("A2-sen-request.csr.der"))
    assert csr.subject.rfc4514_string().startswith("2.5.4.5=Wt1234")
    assert csr.challenge_password is not None  # the front hands it to PoP checking
    response = _read("A2-sen-response.der")
    certs = svc.Certificates(tuple(pkcs7.decode_certs_only(response)), raw_pkcs7=response)
    message = _certificates(certs, ContentFormat.PKCS7_CERTS_ONLY, Code.CHANGED, whole_set=False)
    assert (message.code, message.opt.content_format, message.payload) == (
        Code.CHANGED,
        281,
        response,
    )


def test_a3_skg_response_is_byte_identical() -> None:
    key = _read("A3-skg-response-pkcs8.der")
    certs_body = _read("A3-skg-response-pkcs7.der")
    certs = svc.Certificates(tuple(pkcs7.decode_certs_only(certs_body)), raw_pkcs7=certs_body)
    result = svc.KeyAndCertificate(key, svc.KeyFormat.PKCS8, certs)
    message = _key_and_certificate(result, single=False)
    assert message.opt.content_format == 62
    assert message.payload == _read("A3-skg-response.cbor")
    # skc: the same key with the certificate as 287.
    skc = _key_and_certificate(result, single=True)
    cert_der = certs.certificates[0].public_bytes(Encoding.DER)
    assert cbor2.loads(skc.payload) == [284, key, 287, cert_der]
    assert parse_csr(_read("A3-skg-request.csr.der")).subject.rfc4514_string() == "O=skg example"


def test_a4_att_and_discovery_values() -> None:
    body = _read("A4-att-response.der")
    message = Message(code=Code.CONTENT, payload=body, content_format=int(ContentFormat.CSRATTRS))
    assert message.opt.content_format == 285
    spec = by_short_name("att")
    assert spec is not None and spec.rt == "ace.est.att" and spec.link_ct == "285"
    assert by_short_name("crts").link_ct == "281 287"  # type: ignore[union-attr]
    assert by_short_name("skg").link_ct == by_short_name("skc").link_ct == "62"  # type: ignore[union-attr]
