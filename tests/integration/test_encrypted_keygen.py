"""Server-generated keys enveloped for the client (RFC 7030 s4.4.1.2, s4.4.2), end to end
over real HTTPS and DTLS: EstClient asks, LocalCA signs and envelopes, the client opens.
`openssl cms` opens what the server sent, as an independent check of the wire format."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.client import EstClient, EstClientError, generate_key
from estcoap.codec import keypackage, pkcs7
from estcoap.codec.multipart import KeygenParts
from estcoap.codec.names import parse_name
from estcoap.codec.operations import ContentFormat, Operation, spec_for
from estcoap.codec.pkcs10 import add_attributes, build_csr
from tests.cms_openssl import openssl_open_key
from tests.integration.coaps_fixtures import Deployment, make_deployment, running_coaps
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    running,
)

pytestmark = pytest.mark.timeout(60)


def _spki(obj) -> bytes:  # type: ignore[no-untyped-def]
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _asking_csr(key, subject: str, key_id: bytes | None = None, ciphers=None) -> bytes:  # type: ignore[no-untyped-def]
    """A serverkeygen CSR asking for the key enveloped for `key` (its SKI by default)."""
    recipient = keypackage.Recipient.of_public_key(key.public_key())
    attributes = [keypackage.asymmetric_decrypt_key_id_attribute(key_id or recipient.key_id)]
    if ciphers is not None:
        attributes.append(keypackage.smime_capabilities_attribute(ciphers))
    csr = build_csr(key, parse_name(subject))
    return add_attributes(csr, key, attributes)


async def test_https_client_gets_its_key_enveloped_and_opens_it(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            new_key, chain = await est.serverkeygen(subject="CN=sealed-1", encrypted=True)
            assert _spki(chain[0]) == _spki(new_key)
            assert chain[0].subject.rfc4514_string() == "CN=sealed-1"
            # On the wire: the key part is CMS (smime-type=server-generated-key), not PKCS#8.
            key = generate_key()
            transport = await est.transport()
            reply = await transport.call(
                spec_for(Operation.SERVERKEYGEN), None, _asking_csr(key, "CN=sealed-2")
            )
            key_format, sealed, cert_format, _ = cbor2.loads(reply.body)
            assert key_format == ContentFormat.PKCS7_SERVER_KEYGEN
            assert cert_format == ContentFormat.PKCS7_CERTS_ONLY
            opened = keypackage.open_key(sealed, recipient_key=key)
            assert opened.signer == env.ca.ca_certificate  # the CA made the key and signed it


async def test_what_the_server_sends_opens_with_openssl(ca_dir, tmp_path: Path) -> None:
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            key = ec.generate_private_key(ec.SECP256R1())
            transport = await est.transport()
            reply = await transport.call(
                spec_for(Operation.SERVERKEYGEN),
                None,
                _asking_csr(key, "CN=sealed-3", ciphers=(keypackage.AES256_CBC,)),
            )
    _, sealed, _, certificate_part = cbor2.loads(reply.body)
    pkcs8 = openssl_open_key(tmp_path, sealed, key, env.paths.ca_cert)
    new_key = serialization.load_der_private_key(pkcs8, None)
    (issued,) = pkcs7.decode_certs_only(certificate_part)
    assert _spki(issued) == _spki(new_key)


async def test_unknown_key_id_and_unsupported_ciphers_are_refused_before_issuing(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            transport = await est.transport()
            spec = spec_for(Operation.SERVERKEYGEN)
            key = generate_key()
            before = len(env.ca.store.issued_list())
            unknown = await transport.call(
                spec, None, _asking_csr(key, "CN=x", key_id=b"\x01" * 20)
            )
            assert unknown.status == "400" and "no key known" in unknown.diagnostic
            des = "1.2.840.113549.3.7"  # des-ede3-cbc: not offered here
            weak = await transport.call(spec, None, _asking_csr(key, "CN=y", ciphers=(des,)))
            assert weak.status == "400" and "SMIMECapabilities" in weak.diagnostic
            assert len(env.ca.store.issued_list()) == before


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


async def test_coaps_skg_answers_280_and_the_client_opens_it(deployment: Deployment) -> None:
    device = deployment.device("sealed-dev")
    async with running_coaps(deployment) as run:
        async with run.client(device) as est:
            new_key, chain = await est.serverkeygen(subject=device.subject(), encrypted=True)
            assert _spki(chain[0]) == _spki(new_key)
            # The device's own certificate can be the recipient too (its SKI named).
            key = generate_key()
            leaf = x509.load_pem_x509_certificate(device.cert_path.read_bytes())
            key_id = keypackage.subject_key_identifier(leaf)
            csr = _asking_csr(key, "serialNumber=sealed-dev", key_id=key_id)
            transport = await est.transport()
            reply = await transport.call(spec_for(Operation.SERVERKEYGEN), None, csr)
        key_format, sealed, _, _ = cbor2.loads(reply.body)
        assert key_format == 280
        device_key = serialization.load_pem_private_key(device.key_path.read_bytes(), None)
        assert keypackage.open_key(sealed, recipient_key=device_key).signer == run.ca.ca_certificate
        with pytest.raises(keypackage.KeyPackageError):
            keypackage.open_key(sealed, recipient_key=key)  # not for the CSR's key this time


async def test_only_the_ca_or_an_ra_may_sign_a_key_package(ca_dir) -> None:
    """An end entity of the same PKI (here a device certificate) signing the package is
    refused by the client, though its certificate chains to the trusted CA."""
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            device_key = generate_key()
            (device,) = (await est.enroll(key=device_key, subject="CN=not-a-ca"))[:1]
            transport_key = generate_key()
            recipient = keypackage.Recipient.of_public_key(transport_key.public_key())
            pkcs8 = generate_key().private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            for signer, signer_key, accepted in (
                (env.ca.ca_certificate, env.ca._ca_key, True),
                (device, device_key, False),
            ):
                sealed = keypackage.seal_key(
                    pkcs8, signer_certificate=signer, signer_key=signer_key, recipient=recipient
                )
                parts = KeygenParts(
                    ContentFormat.PKCS7_SERVER_KEYGEN, sealed, ContentFormat.PKIX_CERT, b""
                )
                if accepted:
                    assert est._received_key(parts, transport_key) == pkcs8
                else:
                    with pytest.raises(EstClientError, match="not trusted to generate keys"):
                        est._received_key(parts, transport_key)
