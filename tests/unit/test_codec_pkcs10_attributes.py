"""CSR attributes as sent (Csr.attributes) and attributes cryptography cannot write
(add_attributes re-signs the request): checked by our parser and by `openssl req`."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from estcoap.codec import der
from estcoap.codec.errors import CsrError
from estcoap.codec.pkcs10 import add_attributes, build_csr, parse_csr

pytestmark = pytest.mark.timeout(30)
NAME = x509.Name.from_rfc4514_string("CN=device-7")
SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
AES128_CBC = "2.16.840.1.101.3.4.1.2"


def _capabilities() -> bytes:
    capability = der.sequence([der.oid(AES128_CBC)])
    return der.sequence([der.oid(SMIME_CAPABILITIES), der.set_of([der.sequence([capability])])])


@pytest.fixture(params=["p256", "p384", "rsa", "ed25519"], scope="module", name="key")
def key_fixture(request):
    return {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[request.param]()


def test_added_attributes_sit_beside_the_old_ones_and_the_signature_verifies(key, tmp_path):
    original = build_csr(key, NAME, challenge_password=b"secret", sans=[x509.DNSName("d.example")])
    extended = add_attributes(original, key, [_capabilities()])
    csr = parse_csr(extended)  # checks the signature
    assert csr.challenge_password == b"secret"
    assert csr.subject_alt_name is not None
    assert set(csr.attributes) == {
        SMIME_CAPABILITIES,
        "1.2.840.113549.1.9.7",
        "1.2.840.113549.1.9.14",
    }
    values = der.read_one(csr.attributes[SMIME_CAPABILITIES])
    assert values.raw == der.set_of([der.sequence([der.sequence([der.oid(AES128_CBC)])])])
    # An independent verifier agrees.
    path = tmp_path / "req.der"
    path.write_bytes(extended)
    done = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-in", str(path), "-verify", "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "verify OK" in (done.stdout + done.stderr)


def test_the_original_signature_hash_is_kept():
    key = ec.generate_private_key(ec.SECP256R1())
    original = build_csr(key, NAME, signature_hash=hashes.SHA384())
    extended = parse_csr(add_attributes(original, key, [_capabilities()]))
    assert isinstance(extended.signature_hash, hashes.SHA384)


def test_a_csr_without_attributes_reads_as_none():
    csr = parse_csr(build_csr(ec.generate_private_key(ec.SECP256R1()), NAME))
    assert csr.attributes == {}


def test_garbage_is_a_csr_error():
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CsrError):
        add_attributes(b"\x30\x03\x02\x01\x00", key, [_capabilities()])
