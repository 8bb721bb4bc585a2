"""Encrypted server-generated keys (RFC 7030 s4.4.2) against the openssl CLI as the peer.

seal_key's output must decrypt and verify with `openssl cms`, and open_key must read
what `openssl cms -sign` + `openssl cms -encrypt` produce.

openssl encrypts whatever bytes it is given with encryptedContentInfo.contentType
id-data, and `openssl cms -sign -outform DER` writes a ContentInfo. So an envelope
openssl makes holds ContentInfo(SignedData) under id-data, where RFC 7030 s4.4.2 (and
seal_key) put the bare SignedData under id-signedData; open_key accepts both.
Conversely `openssl cms -verify` reads only a ContentInfo, so the tests wrap the bare
SignedData that `openssl cms -decrypt` returns before verifying it.
"""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from estcoap.codec import der, keypackage
from estcoap.codec.keypackage import (
    AES128_CBC,
    AES256_CBC,
    ID_AA_ASYMM_DECRYPT_KEY_ID,
    ID_AA_DECRYPT_KEY_ID,
    ID_SMIME_CAPABILITIES,
    KeyPackageError,
    OpenedKey,
    Recipient,
    SharedKey,
    asymmetric_decrypt_key_id_attribute,
    choose_content_cipher,
    decrypt_key_id_attribute,
    open_key,
    seal_key,
    smime_capabilities,
    smime_capabilities_attribute,
    subject_key_identifier,
)
from estcoap.codec.keypackage.sealing import enveloped_data

pytestmark = pytest.mark.timeout(60)

A_KEY_PACKAGE = "2.16.840.1.101.2.1.2.78.5"
SIGNED_DATA = "1.2.840.113549.1.7.2"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Party:
    key: Key
    cert: x509.Certificate
    cert_pem: Path
    key_pem: Path


def _certificate(
    name: str, key: Key, issuer: Party | None, *, ca: bool = False, ski: bool = True
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=not ca and isinstance(key, ec.EllipticCurvePrivateKey),
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    signer = issuer.key if issuer else key
    return builder.sign(signer, hashes.SHA256())


def _party(
    folder: Path, name: str, key: Key, issuer: Party | None, *, ca: bool = False, ski: bool = True
) -> Party:
    cert = _certificate(name, key, issuer, ca=ca, ski=ski)
    cert_pem = folder / f"{name}.pem"
    key_pem = folder / f"{name}.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Party(key, cert, cert_pem, key_pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    folder = tmp_path_factory.mktemp("pki")
    signer = _party(folder, "signer", ec.generate_private_key(ec.SECP256R1()), None, ca=True)
    rsa_signer = _party(folder, "rsa-signer", rsa.generate_private_key(65537, 2048), None, ca=True)
    parties = {"signer": signer, "rsa-signer": rsa_signer}
    keys: list[tuple[str, Key]] = [
        ("rsa", rsa.generate_private_key(65537, 2048)),
        ("p256", ec.generate_private_key(ec.SECP256R1())),
        ("p384", ec.generate_private_key(ec.SECP384R1())),
        ("other-p256", ec.generate_private_key(ec.SECP256R1())),
        ("other-rsa", rsa.generate_private_key(65537, 2048)),
    ]
    for name, key in keys:
        parties[name] = _party(folder, name, key, signer)
    parties["noski"] = _party(
        folder, "noski", ec.generate_private_key(ec.SECP256R1()), signer, ski=False
    )
    return parties


@pytest.fixture(scope="module")
def pkcs8() -> bytes:
    """The server-generated key being delivered."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def openssl(*args: str | Path) -> str:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"openssl {' '.join(map(str, args))}: {done.stderr}"
    return done.stdout


def content_info(content_type: str, content: bytes) -> bytes:
    return der.sequence([der.oid(content_type), der.context(0, content)])


def openssl_decrypt(tmp_path: Path, sealed: bytes, recipient: Party) -> bytes:
    """`openssl cms -decrypt` of an envelope: the bare SignedData inside it.

    OpenSSL 3.0 matches -recip by the certificate's SubjectKeyIdentifier extension only;
    without one (RFC 5280 method 1 is what seal_key uses then) openssl is given just the
    key, and tries it on every RecipientInfo.
    """
    (tmp_path / "env.der").write_bytes(sealed)
    has_ski = any(
        isinstance(ext.value, x509.SubjectKeyIdentifier) for ext in recipient.cert.extensions
    )
    recip: list[str | Path] = ["-recip", recipient.cert_pem] if has_ski else []
    openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        tmp_path / "env.der",
        *recip,
        "-inkey",
        recipient.key_pem,
        "-binary",
        "-out",
        tmp_path / "signed.der",
    )
    return (tmp_path / "signed.der").read_bytes()


def openssl_verify(tmp_path: Path, signed_data: bytes, signer: Party) -> bytes:
    """`openssl cms -verify` against the signer as trust anchor: the encapsulated content."""
    (tmp_path / "signed-ci.der").write_bytes(content_info(SIGNED_DATA, signed_data))
    openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        tmp_path / "signed-ci.der",
        "-CAfile",
        signer.cert_pem,
        "-purpose",
        "any",
        "-binary",
        "-out",
        tmp_path / "package.der",
    )
    return (tmp_path / "package.der").read_bytes()


def openssl_sign(
    tmp_path: Path, content: bytes, signer: Party, *, key_package: bool = True
) -> Path:
    """A ContentInfo(SignedData) written by `openssl cms -sign`."""
    (tmp_path / "package.der").write_bytes(content)
    econtent = ["-econtent_type", A_KEY_PACKAGE] if key_package else []
    openssl(
        "cms",
        "-sign",
        "-binary",
        "-nodetach",
        "-outform",
        "DER",
        *econtent,
        "-signer",
        signer.cert_pem,
        "-inkey",
        signer.key_pem,
        "-md",
        "sha256",
        "-in",
        tmp_path / "package.der",
        "-out",
        tmp_path / "signed-ci.der",
    )
    return tmp_path / "signed-ci.der"


def openssl_encrypt(tmp_path: Path, content: Path, recipient: Party, *options: str) -> bytes:
    """`openssl cms -encrypt` of a file to one recipient, as DER (AES-128-CBC unless an
    option names another cipher)."""
    cipher = [] if any(option.startswith("-aes") for option in options) else ["-aes128"]
    openssl(
        "cms",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        *cipher,
        "-in",
        content,
        "-out",
        tmp_path / "env.der",
        "-recip",
        recipient.cert_pem,
        *options,
    )
    return (tmp_path / "env.der").read_bytes()


def print_cms(tmp_path: Path, data: bytes) -> str:
    (tmp_path / "print.der").write_bytes(data)
    return openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "print.der")


# -- 1. seal_key's output opens with openssl ----------------------------------


@pytest.mark.parametrize(
    ("recipient", "cipher", "signer"),
    [
        ("rsa", AES128_CBC, "signer"),
        ("p256", AES128_CBC, "signer"),
        ("p384", AES128_CBC, "signer"),
        ("p384", AES256_CBC, "signer"),
        ("noski", AES128_CBC, "signer"),
        ("p256", AES128_CBC, "rsa-signer"),
    ],
)
def test_openssl_decrypts_and_verifies_sealed_key(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes, recipient: str, cipher: str, signer: str
) -> None:
    sealed = seal_key(
        pkcs8,
        signer_certificate=pki[signer].cert,
        signer_key=pki[signer].key,
        recipient=pki[recipient].cert,
        content_cipher=cipher,
    )
    signed = openssl_decrypt(tmp_path, sealed, pki[recipient])
    package = openssl_verify(tmp_path, signed, pki[signer])
    # The AsymmetricKeyPackage holds exactly the key that was sealed.
    assert package == der.sequence([pkcs8])


def test_sealed_structure_is_what_rfc_7030_names(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes
) -> None:
    """openssl's own reading of the envelopes: OAEP-SHA256 for RSA, SHA-256 KDF for EC."""
    signer = pki["signer"]
    as_rsa = print_cms(
        tmp_path,
        seal_key(
            pkcs8, signer_certificate=signer.cert, signer_key=signer.key, recipient=pki["rsa"].cert
        ),
    )
    assert "contentType: pkcs7-envelopedData" in as_rsa
    assert "rsaesOaep" in as_rsa and "sha256" in as_rsa
    assert "contentType: pkcs7-signedData" in as_rsa  # encryptedContentInfo
    as_ec = print_cms(
        tmp_path,
        seal_key(
            pkcs8,
            signer_certificate=signer.cert,
            signer_key=signer.key,
            recipient=pki["p384"].cert,
            content_cipher=AES256_CBC,
        ),
    )
    assert "dhSinglePass-stdDH-sha256kdf-scheme" in as_ec
    assert "id-aes256-wrap" in as_ec and "aes-256-cbc" in as_ec
    assert "d.originatorKey" in as_ec and "d.rKeyId" in as_ec


# -- 2. openssl's envelopes open with open_key --------------------------------


@pytest.mark.parametrize(
    ("recipient", "options"),
    [
        ("p256", ()),  # default: dhSinglePass-stdDH-sha1kdf-scheme
        ("p256", ("-keyopt", "ecdh_kdf_md:sha256")),
        ("p384", ("-keyopt", "ecdh_kdf_md:sha256")),
        ("p384", ("-aes192", "-keyopt", "ecdh_kdf_md:sha384")),  # aes192-wrap
        ("p256", ("-aes256", "-keyopt", "ecdh_kdf_md:sha512")),  # aes256-wrap
        ("rsa", ("-aes256",)),
        ("rsa", ()),  # default: rsaEncryption (PKCS#1 v1.5)
        ("rsa", ("-keyopt", "rsa_padding_mode:oaep")),  # OAEP with SHA-1 defaults
        ("rsa", ("-keyid",)),  # rid subjectKeyIdentifier
    ],
)
def test_open_key_reads_openssl_envelopes(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes, recipient: str, options: tuple[str, ...]
) -> None:
    signed = openssl_sign(tmp_path, der.sequence([pkcs8]), pki["signer"])
    enveloped = openssl_encrypt(tmp_path, signed, pki[recipient], *options)
    party = pki[recipient]
    for named in (party.cert, None):
        opened = open_key(enveloped, recipient_key=party.key, recipient=named)
        assert opened.pkcs8 == pkcs8
        assert opened.signer == pki["signer"].cert
        assert pki["signer"].cert in opened.certificates


# -- 3. round trips and the subject key identifier -----------------------------


@pytest.mark.parametrize("recipient", ["rsa", "p256", "p384", "noski"])
@pytest.mark.parametrize("cipher", [AES128_CBC, AES256_CBC])
def test_open_key_round_trips_seal_key(
    pki: dict[str, Party], pkcs8: bytes, recipient: str, cipher: str
) -> None:
    party = pki[recipient]
    sealed = seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=party.cert,
        content_cipher=cipher,
    )
    opened = open_key(sealed, recipient_key=party.key, recipient=party.cert)
    assert opened == OpenedKey(pkcs8, pki["signer"].cert, (pki["signer"].cert,))
    assert open_key(sealed, recipient_key=party.key).pkcs8 == pkcs8


def test_rsa_signed_package_round_trips(pki: dict[str, Party], pkcs8: bytes) -> None:
    signer = pki["rsa-signer"]
    sealed = seal_key(
        pkcs8, signer_certificate=signer.cert, signer_key=signer.key, recipient=pki["rsa"].cert
    )
    assert open_key(sealed, recipient_key=pki["rsa"].key).signer == signer.cert


def test_subject_key_identifier(pki: dict[str, Party]) -> None:
    noski = pki["noski"].cert
    expected = x509.SubjectKeyIdentifier.from_public_key(noski.public_key()).digest
    assert subject_key_identifier(noski) == expected
    p256 = pki["p256"].cert
    extension = p256.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert subject_key_identifier(p256) == extension.value.digest


def test_seal_key_refuses_unusable_input(pki: dict[str, Party], pkcs8: bytes) -> None:
    signer = pki["signer"]
    with pytest.raises(KeyPackageError, match="content cipher"):
        seal_key(
            pkcs8,
            signer_certificate=signer.cert,
            signer_key=signer.key,
            recipient=pki["p256"].cert,
            content_cipher="1.2.840.113549.3.7",
        )
    with pytest.raises(KeyPackageError, match="does not match"):
        seal_key(
            pkcs8,
            signer_certificate=signer.cert,
            signer_key=pki["p256"].key,
            recipient=pki["p256"].cert,
        )
    with pytest.raises(KeyPackageError, match="PKCS#8"):
        seal_key(
            b"\x04\x00",
            signer_certificate=signer.cert,
            signer_key=signer.key,
            recipient=pki["p256"].cert,
        )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    ed_cert = (
        x509.CertificateBuilder()
        .subject_name(pki["p256"].cert.subject)
        .issuer_name(signer.cert.subject)
        .public_key(ed_key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer.key, hashes.SHA256())
    )
    with pytest.raises(KeyPackageError, match="RSA or EC"):
        seal_key(pkcs8, signer_certificate=signer.cert, signer_key=signer.key, recipient=ed_cert)
    with pytest.raises(KeyPackageError, match="RSA or EC"):
        Recipient.of_public_key(ed_key.public_key())
    with pytest.raises(KeyPackageError, match="curve"):
        Recipient.of_public_key(ec.generate_private_key(ec.SECP256K1()).public_key())
    with pytest.raises(KeyPackageError, match="signer key"):
        seal_key(pkcs8, signer_certificate=ed_cert, signer_key=ed_key, recipient=pki["p256"].cert)


@pytest.mark.parametrize("recipient", ["rsa", "p256"])
def test_seal_for_a_csr_key_without_certificate(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes, recipient: str
) -> None:
    """RFC 7030 s4.4.1.2: the key named may be the CSR's, which has no certificate yet."""
    key = pki[recipient].key
    named = Recipient.of_public_key(key.public_key())
    assert named.key_id == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    sealed = seal_key(
        pkcs8, signer_certificate=pki["signer"].cert, signer_key=pki["signer"].key, recipient=named
    )
    assert open_key(sealed, recipient_key=key).pkcs8 == pkcs8
    # openssl, given only the key, finds the RecipientInfo it can open.
    (tmp_path / "env.der").write_bytes(sealed)
    openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        tmp_path / "env.der",
        "-inkey",
        pki[recipient].key_pem,
        "-binary",
        "-out",
        tmp_path / "signed.der",
    )
    signed = (tmp_path / "signed.der").read_bytes()
    assert openssl_verify(tmp_path, signed, pki["signer"]) == der.sequence([pkcs8])


# -- 4. failures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed_p256(pki: dict[str, Party], pkcs8: bytes) -> bytes:
    return seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=pki["p256"].cert,
    )


def test_wrong_recipient_key_fails(pki: dict[str, Party], pkcs8: bytes, sealed_p256: bytes) -> None:
    with pytest.raises(KeyPackageError, match="cannot decrypt"):
        open_key(sealed_p256, recipient_key=pki["other-p256"].key)
    with pytest.raises(KeyPackageError, match="no RecipientInfo"):
        open_key(sealed_p256, recipient_key=pki["rsa"].key)  # no ktri in an EC envelope
    with pytest.raises(KeyPackageError, match="no RecipientInfo"):
        open_key(sealed_p256, recipient_key=pki["p256"].key, recipient=pki["other-p256"].cert)
    sealed_rsa = seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=pki["rsa"].cert,
    )
    with pytest.raises(KeyPackageError, match="cannot decrypt"):
        open_key(sealed_rsa, recipient_key=pki["other-rsa"].key)


def test_flipped_ciphertext_byte_fails(pki: dict[str, Party], sealed_p256: bytes) -> None:
    # The last byte is the ciphertext's last: it garbles the signature and the padding.
    corrupted = sealed_p256[:-1] + bytes([sealed_p256[-1] ^ 0x01])
    with pytest.raises(KeyPackageError):
        open_key(corrupted, recipient_key=pki["p256"].key)


def test_flipped_wrapped_key_byte_fails(pki: dict[str, Party], sealed_p256: bytes) -> None:
    wrapped = _wrapped_key(sealed_p256)
    at = sealed_p256.index(wrapped) + len(wrapped) - 1
    corrupted = sealed_p256[:at] + bytes([sealed_p256[at] ^ 0x80]) + sealed_p256[at + 1 :]
    with pytest.raises(KeyPackageError, match="cannot decrypt"):
        open_key(corrupted, recipient_key=pki["p256"].key)


def _wrapped_key(sealed: bytes) -> bytes:
    """The encryptedKey of the first RecipientEncryptedKey of the first kari."""
    enveloped = der.read_one(der.read_one(sealed).children()[1].content)
    kari = enveloped.children()[1].children()[0]
    return kari.children()[-1].children()[0].children()[1].content


def test_tampered_signature_fails(
    tmp_path: Path, pki: dict[str, Party], sealed_p256: bytes
) -> None:
    signed = openssl_decrypt(tmp_path, sealed_p256, pki["p256"])
    signer_info = der.read_one(signed).children()[-1].children()[0]
    signature = signer_info.children()[5].raw
    at = signed.index(signature) + len(signature) - 1  # last octet of the ECDSA s value
    tampered = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1 :]
    (tmp_path / "tampered.der").write_bytes(tampered)
    enveloped = openssl_encrypt(tmp_path, tmp_path / "tampered.der", pki["p256"])
    with pytest.raises(KeyPackageError, match="signature does not verify"):
        open_key(enveloped, recipient_key=pki["p256"].key)
    # Untouched, the same re-enveloping opens: the failure is the signature alone.
    (tmp_path / "signed.der").write_bytes(signed)
    enveloped = openssl_encrypt(tmp_path, tmp_path / "signed.der", pki["p256"])
    assert open_key(enveloped, recipient_key=pki["p256"].key).signer == pki["signer"].cert


def test_other_content_type_is_not_a_key_package(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes
) -> None:
    signed = openssl_sign(tmp_path, der.sequence([pkcs8]), pki["signer"], key_package=False)
    enveloped = openssl_encrypt(tmp_path, signed, pki["p256"])
    with pytest.raises(KeyPackageError, match="not an aKeyPackage"):
        open_key(enveloped, recipient_key=pki["p256"].key)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage that is not DER", b"\x30\x03\x02\x01\x00", bytes(range(64))],
    ids=["empty", "text", "wrong-sequence", "bytes"],
)
def test_garbage_fails(pki: dict[str, Party], data: bytes) -> None:
    with pytest.raises(KeyPackageError):
        open_key(data, recipient_key=pki["p256"].key)


def test_every_corrupted_signed_data_byte_is_refused_or_harmless(
    pki: dict[str, Party], pkcs8: bytes, sealed_p256: bytes
) -> None:
    """Flip each byte of the SignedData and envelope it again: open_key either says
    KeyPackageError or (a byte only the certificate's own signature covers) still
    returns the very key that was signed. Nothing else escapes."""
    p256 = pki["p256"]
    signed = _decrypted(sealed_p256, p256)
    recipient = Recipient.of_certificate(p256.cert)
    outcomes = {"refused": 0, "unchanged": 0}
    for at in range(len(signed)):
        mutated = signed[:at] + bytes([signed[at] ^ 0x41]) + signed[at + 1 :]
        enveloped = enveloped_data(mutated, recipient, AES128_CBC)
        try:
            opened = open_key(enveloped, recipient_key=p256.key)
        except KeyPackageError:
            outcomes["refused"] += 1
        else:
            assert opened.pkcs8 == pkcs8
            outcomes["unchanged"] += 1
    assert outcomes["refused"] > len(signed) // 2


@pytest.mark.parametrize("recipient", ["rsa", "p256"])
def test_every_corrupted_envelope_header_byte_is_refused(
    pki: dict[str, Party], pkcs8: bytes, recipient: str
) -> None:
    """Each byte from the ContentInfo header up to the ciphertext, flipped: a KeyPackageError
    (or, for a byte of a name open_key does not check without `recipient`, the same key)."""
    party = pki[recipient]
    sealed = seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=party.cert,
    )
    enveloped = der.read_one(der.read_one(sealed).children()[1].content)
    ciphertext = enveloped.children()[2].children()[2].content
    for at in range(len(sealed) - len(ciphertext)):
        mutated = sealed[:at] + bytes([sealed[at] ^ 0x41]) + sealed[at + 1 :]
        try:
            opened = open_key(mutated, recipient_key=party.key)
        except KeyPackageError:
            continue
        assert opened.pkcs8 == pkcs8


def _decrypted(sealed: bytes, party: Party) -> bytes:
    """The SignedData inside an envelope, taken out with cryptography's primitives."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

    enveloped = der.read_one(der.read_one(sealed).children()[1].content).children()
    kari = enveloped[1].children()[0].children()
    _, point = kari[1].children()[0].children()
    wrap_alg = der.read_one(kari[2].raw).children()[1]
    assert isinstance(party.key, ec.EllipticCurvePrivateKey)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(party.key.curve, point.content[1:])
    shared_info = der.sequence(
        [wrap_alg.raw, der.context(2, der.octet_string((128).to_bytes(4, "big")))]
    )
    kek = X963KDF(hashes.SHA256(), 16, shared_info).derive(party.key.exchange(ec.ECDH(), peer))
    cek = aes_key_unwrap(kek, _wrapped_key(sealed))
    _, cipher, ciphertext = enveloped[2].children()
    iv = cipher.children()[1].content
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext.content) + decryptor.finalize()
    return padded[: -padded[-1]]


def test_truncated_input_fails(pki: dict[str, Party], sealed_p256: bytes) -> None:
    for cut in (1, 17, len(sealed_p256) // 2, len(sealed_p256) - 2):
        with pytest.raises(KeyPackageError):
            open_key(sealed_p256[:cut], recipient_key=pki["p256"].key)


# -- 5. S/MIME capabilities -------------------------------------------------------


def test_smime_capabilities_round_trip(tmp_path: Path) -> None:
    attribute = smime_capabilities_attribute([AES256_CBC, AES128_CBC])
    kind, values = der.read_one(attribute).children()
    assert der.decode_oid(kind) == ID_SMIME_CAPABILITIES
    assert smime_capabilities(values.raw) == [AES256_CBC, AES128_CBC]
    # openssl reads the same attribute, in the same order.
    (tmp_path / "attribute.der").write_bytes(attribute)
    parsed = openssl("asn1parse", "-inform", "DER", "-in", tmp_path / "attribute.der")
    assert "S/MIME Capabilities" in parsed
    assert parsed.index("aes-256-cbc") < parsed.index("aes-128-cbc")
    default = der.read_one(smime_capabilities_attribute()).children()[1]
    assert smime_capabilities(default.raw) == [AES128_CBC]


@pytest.mark.parametrize(
    "values", [b"", b"\x30\x00", b"\x31\x03\x02\x01\x00", b"\x31\x04\x30\x02\x30\x00"]
)
def test_malformed_smime_capabilities_fail(values: bytes) -> None:
    with pytest.raises(KeyPackageError):
        smime_capabilities(values)


def test_asymmetric_decrypt_key_id_attribute(tmp_path: Path) -> None:
    key_id = bytes(range(20))
    attribute = asymmetric_decrypt_key_id_attribute(key_id)
    kind, values = der.read_one(attribute).children()
    assert der.decode_oid(kind) == ID_AA_ASYMM_DECRYPT_KEY_ID
    (value,) = values.children()
    assert value.is_universal(der.OCTET_STRING) and value.content == key_id
    (tmp_path / "attribute.der").write_bytes(attribute)
    parsed = openssl("asn1parse", "-inform", "DER", "-in", tmp_path / "attribute.der")
    assert "1.2.840.113549.1.9.16.2.54" in parsed and "[HEX DUMP]:000102" in parsed


def test_choose_content_cipher() -> None:
    des3 = "1.2.840.113549.3.7"
    assert choose_content_cipher([des3, AES256_CBC, AES128_CBC]) == AES256_CBC
    assert choose_content_cipher([AES128_CBC, AES256_CBC]) == AES128_CBC
    assert choose_content_cipher([]) == AES128_CBC
    assert choose_content_cipher([des3]) is None


# -- 6. keys shared in advance (RFC 7030 s4.4.1.1, KEKRecipientInfo) ---------------

WRAP_NAMES = {16: "id-aes128-wrap", 24: "id-aes192-wrap", 32: "id-aes256-wrap"}


def shared(size: int, key_id: bytes = b"device-7 kek") -> SharedKey:
    return SharedKey(key_id, bytes((size * 7 + i * 13) % 256 for i in range(size)))


def openssl_secret_args(key: SharedKey) -> list[str]:
    return ["-secretkey", key.key.hex(), "-secretkeyid", key.key_id.hex()]


@pytest.mark.parametrize(
    ("size", "cipher"), [(16, AES128_CBC), (32, AES128_CBC), (32, AES256_CBC), (24, AES256_CBC)]
)
def test_openssl_decrypts_kek_sealed_key(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes, size: int, cipher: str
) -> None:
    kek = shared(size)
    sealed = seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=kek,
        content_cipher=cipher,
    )
    printed = print_cms(tmp_path, sealed)
    # RFC 5652 s6.1: no originatorInfo, no pwri/ori, a v4 RecipientInfo -> version 2.
    assert "d.envelopedData: \n    version: 2" in printed
    assert "d.kekri: \n        version: 4" in printed
    assert WRAP_NAMES[size] in printed and "date: <ABSENT>" in printed
    assert "contentType: pkcs7-signedData" in printed
    (tmp_path / "env.der").write_bytes(sealed)
    openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        tmp_path / "env.der",
        *openssl_secret_args(kek),
        "-binary",
        "-out",
        tmp_path / "signed.der",
    )
    signed = (tmp_path / "signed.der").read_bytes()
    assert openssl_verify(tmp_path, signed, pki["signer"]) == der.sequence([pkcs8])


@pytest.mark.parametrize(("size", "cipher"), [(16, "-aes128"), (24, "-aes256"), (32, "-aes256")])
def test_open_key_reads_openssl_kek_envelopes(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes, size: int, cipher: str
) -> None:
    kek = shared(size)
    signed = openssl_sign(tmp_path, der.sequence([pkcs8]), pki["signer"])
    openssl(
        "cms",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        cipher,
        *openssl_secret_args(kek),
        "-in",
        signed,
        "-out",
        tmp_path / "env.der",
    )
    enveloped = (tmp_path / "env.der").read_bytes()
    assert WRAP_NAMES[size] in print_cms(tmp_path, enveloped)  # openssl picks by KEK length
    opened = open_key(enveloped, shared_key=kek)
    assert opened.pkcs8 == pkcs8
    assert opened.signer == pki["signer"].cert


def test_openssl_envelope_with_kek_and_certificate_recipients(
    tmp_path: Path, pki: dict[str, Party], pkcs8: bytes
) -> None:
    """One envelope for both a certificate (ktri) and a shared key (kekri): each of the
    two opens its own RecipientInfo, and a shared key with another id finds none."""
    kek = shared(16)
    signed = openssl_sign(tmp_path, der.sequence([pkcs8]), pki["signer"])
    enveloped = openssl_encrypt(tmp_path, signed, pki["rsa"], *openssl_secret_args(kek))
    assert open_key(enveloped, shared_key=kek).pkcs8 == pkcs8
    assert open_key(enveloped, recipient_key=pki["rsa"].key).pkcs8 == pkcs8
    with pytest.raises(KeyPackageError, match="no RecipientInfo"):
        open_key(enveloped, shared_key=SharedKey(b"another id", kek.key))


@pytest.mark.parametrize("size", [16, 24, 32])
@pytest.mark.parametrize("cipher", [AES128_CBC, AES256_CBC])
def test_kek_round_trips(pki: dict[str, Party], pkcs8: bytes, size: int, cipher: str) -> None:
    kek = shared(size)
    sealed = seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=kek,
        content_cipher=cipher,
    )
    assert open_key(sealed, shared_key=kek) == OpenedKey(
        pkcs8, pki["signer"].cert, (pki["signer"].cert,)
    )
    # The same key under an equal but separately built SharedKey opens it as well.
    assert open_key(sealed, shared_key=SharedKey(kek.key_id, bytes(kek.key))).pkcs8 == pkcs8


@pytest.fixture(scope="module")
def sealed_kek(pki: dict[str, Party], pkcs8: bytes) -> bytes:
    return seal_key(
        pkcs8,
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=shared(16),
    )


def test_wrong_shared_key_fails(pki: dict[str, Party], sealed_kek: bytes) -> None:
    kek = shared(16)
    with pytest.raises(KeyPackageError, match="no RecipientInfo"):
        open_key(sealed_kek, shared_key=SharedKey(b"device-8 kek", kek.key))
    with pytest.raises(KeyPackageError, match="cannot decrypt: wrong key"):
        open_key(sealed_kek, shared_key=SharedKey(kek.key_id, bytes(16)))
    with pytest.raises(KeyPackageError, match="cannot decrypt"):  # aes128-wrap, 32-byte key
        open_key(sealed_kek, shared_key=shared(32))
    # A private key finds no kekri to use, a shared key no ktri/kari.
    with pytest.raises(KeyPackageError, match="no RecipientInfo"):
        open_key(sealed_kek, recipient_key=pki["p256"].key)
    sealed_rsa = seal_key(
        b"\x30\x00",
        signer_certificate=pki["signer"].cert,
        signer_key=pki["signer"].key,
        recipient=pki["rsa"].cert,
    )
    with pytest.raises(KeyPackageError, match="no RecipientInfo"):
        open_key(sealed_rsa, shared_key=kek)


def test_flipped_kek_wrapped_key_byte_fails(sealed_kek: bytes) -> None:
    enveloped = der.read_one(der.read_one(sealed_kek).children()[1].content)
    wrapped = enveloped.children()[1].children()[0].children()[3].content
    at = sealed_kek.index(wrapped) + 3
    corrupted = sealed_kek[:at] + bytes([sealed_kek[at] ^ 0x10]) + sealed_kek[at + 1 :]
    with pytest.raises(KeyPackageError, match="cannot decrypt: wrong key"):
        open_key(corrupted, shared_key=shared(16))


def test_every_corrupted_kek_envelope_header_byte_is_refused(
    pkcs8: bytes, sealed_kek: bytes
) -> None:
    enveloped = der.read_one(der.read_one(sealed_kek).children()[1].content)
    ciphertext = enveloped.children()[2].children()[2].content
    for at in range(len(sealed_kek) - len(ciphertext)):
        mutated = sealed_kek[:at] + bytes([sealed_kek[at] ^ 0x41]) + sealed_kek[at + 1 :]
        try:
            opened = open_key(mutated, shared_key=shared(16))
        except KeyPackageError:
            continue
        # Harmless flips exist: the EnvelopedData version, a tag read by position, or IV
        # bytes that only garble the SignedData's unused digestAlgorithms. Never another key.
        assert opened.pkcs8 == pkcs8


@pytest.mark.parametrize("size", [0, 10, 15, 20, 33, 64])
def test_shared_key_must_be_an_aes_wrap_key(size: int) -> None:
    with pytest.raises(KeyPackageError, match="16, 24 or 32"):
        SharedKey(b"id", bytes(size))


def test_shared_key_needs_an_identifier_and_hides_the_key() -> None:
    with pytest.raises(KeyPackageError, match="identifier"):
        SharedKey(b"", bytes(16))
    assert bytes(16).hex() not in repr(SharedKey(b"id", bytes(16)))
    assert "\\x00" * 4 not in repr(SharedKey(b"id", bytes(16)))


def test_open_key_wants_exactly_one_key(pki: dict[str, Party], sealed_kek: bytes) -> None:
    kek = shared(16)
    for wrong in (
        {},
        {"recipient": pki["p256"].cert},
        {"recipient_key": pki["p256"].key, "shared_key": kek},
        {"recipient": pki["p256"].cert, "shared_key": kek},
    ):
        with pytest.raises(ValueError, match="recipient_key") as caught:
            open_key(sealed_kek, **wrong)  # type: ignore[arg-type]
        assert not isinstance(caught.value, KeyPackageError)


def test_decrypt_key_id_attribute(tmp_path: Path) -> None:
    key_id = bytes([0xDE, 0xC0, 0x00, 0x07])
    attribute = decrypt_key_id_attribute(key_id)
    kind, values = der.read_one(attribute).children()
    assert der.decode_oid(kind) == ID_AA_DECRYPT_KEY_ID == "1.2.840.113549.1.9.16.2.37"
    (value,) = values.children()
    assert der.is_set(values)
    assert value.is_universal(der.OCTET_STRING) and value.content == key_id
    (tmp_path / "attribute.der").write_bytes(attribute)
    parsed = openssl("asn1parse", "-inform", "DER", "-in", tmp_path / "attribute.der")
    assert "1.2.840.113549.1.9.16.2.37" in parsed and "[HEX DUMP]:DEC00007" in parsed


# -- 7. found in review ---------------------------------------------------------------


def test_deeply_nested_octet_string_segments_are_refused_not_a_crash() -> None:
    """2,000 constructed OCTET STRINGs inside one another: a KeyPackageError, not a
    RecursionError out of open_key."""
    inner = der.octet_string(b"x")
    for _ in range(2000):
        inner = der.tlv(0x24, inner)  # constructed OCTET STRING
    signed = der.sequence(
        [
            der.integer(3),
            der.set_of([]),
            der.sequence([der.oid(keypackage.ID_CT_KP_AKEY_PACKAGE), der.context(0, inner)]),
            der.set_of([]),
        ]
    )
    key = shared(16)
    enveloped = enveloped_data(signed, key, keypackage.AES128_CBC)
    with pytest.raises(KeyPackageError, match="nested too deep"):
        open_key(enveloped, shared_key=key)


def test_rsa_recipients_below_2048_bits_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyPackageError, match="too small"):
        keypackage.Recipient.of_public_key(small.public_key())


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (der.set_of([der.octet_string(b"\x01\x02")]), None),
        (der.set_of([]), "one value"),
        (der.set_of([der.octet_string(b"a"), der.octet_string(b"b")]), "one value"),
        (der.sequence([der.octet_string(b"a")]), "one value"),
        (der.set_of([der.octet_string(b"")]), "non-empty OCTET STRING"),
        (der.set_of([der.integer(5)]), "non-empty OCTET STRING"),
        (b"\x31\x05\x04", "one value"),
    ],
)
def test_key_identifier_attribute_values(values: bytes, reason: str | None) -> None:
    if reason is None:
        assert keypackage.key_identifier(values, "DecryptKeyIdentifier") == b"\x01\x02"
    else:
        with pytest.raises(KeyPackageError, match=reason):
            keypackage.key_identifier(values, "DecryptKeyIdentifier")
