"""openssl as the independent peer that opens an RFC 7030 s4.4.2 key package: decrypt
with the recipient key, then verify the signer against a CA file."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.codec import der, keypackage


def openssl_open_key(
    workdir: Path, sealed: bytes, key: ec.EllipticCurvePrivateKey, ca_file: Path
) -> bytes:
    """The PKCS#8 DER inside `sealed`, as openssl decrypts and verifies it."""
    # openssl names the recipient by a certificate: any holding the key and its SKI.
    key_id = keypackage.Recipient.of_public_key(key.public_key()).key_id
    (workdir / "env.der").write_bytes(sealed)
    (workdir / "rcpt.pem").write_bytes(
        _holder(key, key_id).public_bytes(serialization.Encoding.PEM)
    )
    (workdir / "rcpt.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    _openssl(
        workdir,
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        "env.der",
        "-recip",
        "rcpt.pem",
        "-inkey",
        "rcpt.key",
        "-binary",
        "-out",
        "signed-data.der",
    )
    # CMS envelopes the SignedData itself (content type id-signedData); openssl's verify
    # reads a ContentInfo, so wrap it as one.
    signed_data = (workdir / "signed-data.der").read_bytes()
    (workdir / "signed.der").write_bytes(
        der.sequence([der.oid(keypackage.ID_SIGNED_DATA), der.context(0, signed_data)])
    )
    _openssl(
        workdir,
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        "signed.der",
        "-CAfile",
        str(ca_file),
        "-purpose",
        "any",
        "-binary",
        "-out",
        "package.der",
    )
    # An AsymmetricKeyPackage holding one OneAsymmetricKey.
    (pkcs8,) = der.read_one((workdir / "package.der").read_bytes()).children()
    return pkcs8.raw


def _holder(key: ec.EllipticCurvePrivateKey, key_id: bytes) -> x509.Certificate:
    name = x509.Name.from_rfc4514_string("CN=recipient")
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier(key_id), critical=False)
        .sign(key, hashes.SHA256())
    )


def _openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
