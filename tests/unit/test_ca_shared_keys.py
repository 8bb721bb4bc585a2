"""Keys shared in advance (RFC 7030 s4.4.1.1): the file, and LocalCA enveloping a
server-generated key with the one a CSR names in DecryptKeyIdentifier."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_ca_support import enroll_request, new_ca, user_peer

from estcoap.ca.shared_keys import SharedKeysError, load_shared_keys
from estcoap.codec import keypackage
from estcoap.codec.pkcs10 import add_attributes, build_csr, parse_csr
from estcoap.service import BadRequest, KeyFormat, NotSupported

pytestmark = pytest.mark.timeout(30)
KEY_ID, KEY = bytes.fromhex("0a0b0c"), bytes(range(32))


def test_the_file_reads_ids_and_keys(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# shared keys\n\n0a0b0c {KEY.hex()}  # device 7\nff {'22' * 16}\n")
    assert load_shared_keys(path) == {KEY_ID: KEY, b"\xff": b"\x22" * 16}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0a0b\n", ":1: expected"),
        ("zz 00\n", ":1: not hexadecimal"),
        (f"0a {'00' * 10}\n", ":1: the key must be 16, 24 or 32 bytes"),
        (f"0a {'00' * 16}\n0a {'11' * 16}\n", ":2: key id 0a appears twice"),
    ],
)
def test_a_bad_line_is_named(tmp_path, text: str, reason: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(SharedKeysError, match=reason):
        load_shared_keys(path)


def _csr(key_id: bytes) -> object:
    key = ec.generate_private_key(ec.SECP256R1())
    der = build_csr(key, x509.Name.from_rfc4514_string("CN=shared"))
    return parse_csr(add_attributes(der, key, [keypackage.decrypt_key_id_attribute(key_id)]))


async def test_the_key_is_enveloped_with_the_shared_key(tmp_path) -> None:
    ca = new_ca(tmp_path, shared_keys={KEY_ID: KEY})
    try:
        result = await ca.serverkeygen(enroll_request(_csr(KEY_ID), user_peer()))
        assert result.key_format is KeyFormat.CMS_ENVELOPED
        opened = keypackage.open_key(
            result.private_key, shared_key=keypackage.SharedKey(KEY_ID, KEY)
        )
        assert opened.signer == ca.ca_certificate
        key = serialization.load_der_private_key(opened.pkcs8, None)
        assert key.public_key() == result.certificates.certificates[0].public_key()
    finally:
        ca.close()


async def test_unknown_ids_and_a_ca_without_shared_keys_refuse_before_issuing(tmp_path) -> None:
    ca = new_ca(tmp_path, shared_keys={KEY_ID: KEY})
    try:
        with pytest.raises(BadRequest, match="no shared key known"):
            await ca.serverkeygen(enroll_request(_csr(b"\x01"), user_peer()))
        assert [r.operation for r in ca.store.issued_list()] == ["init"]
    finally:
        ca.close()
    plain = new_ca(tmp_path)
    try:
        with pytest.raises(NotSupported, match="shared in advance"):
            await plain.serverkeygen(enroll_request(_csr(KEY_ID), user_peer()))
    finally:
        plain.close()
