"""Shared helpers for the CA tests (no tests here): CSRs, peers and CA directories."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import LocalCA, init_ca
from estcoap.codec.pkcs10 import Csr, parse_csr
from estcoap.service import EnrollRequest, Peer, Transport


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_csr(
    key: object | None = None,
    subject: x509.Name | None = None,
    *,
    san: Sequence[x509.GeneralName] | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    attributes: Sequence[tuple[x509.ObjectIdentifier, bytes, int | None]] = (),
    challenge: bytes | None = None,
) -> Csr:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else name("device-1")
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge)
    for oid, value, tag in attributes:
        if tag is None:
            builder = builder.add_attribute(oid, value)
        else:
            builder = builder.add_attribute(oid, value, _tag=x509.name._ASN1Type(tag))
    request = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return parse_csr(request.public_bytes(serialization.Encoding.DER))


def user_peer(user: str = "alice", **kw: object) -> Peer:
    return Peer(Transport.HTTPS, http_user=user, **kw)  # type: ignore[arg-type]


def cert_peer(*certs: x509.Certificate, **kw: object) -> Peer:
    return Peer(Transport.COAPS, certificates=tuple(certs), **kw)  # type: ignore[arg-type]


def enroll_request(csr: Csr, peer: Peer, label: str | None = None) -> EnrollRequest:
    return EnrollRequest(csr=csr, peer=peer, label=label)


def new_ca(tmp_path: Path, store_url: str | None = None, **open_kw: object) -> LocalCA:
    """A LocalCA on tmp_path/ca, made on first use; store_url: its store (ca init --store),
    else the directory's est.sqlite3."""
    directory = tmp_path / "ca"
    if not (directory / "ca.pem").exists():
        init_ca(directory, ["localhost", "127.0.0.1"], store_url=store_url)
    return LocalCA.open(directory, **open_kw)  # type: ignore[arg-type]


def foreign_ca(cn: str = "Manufacturer CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA outside estcoap, e.g. the one that signs IDevIDs."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def leaf(
    issuer: x509.Certificate,
    issuer_key: object,
    subject: x509.Name,
    *,
    key: object | None = None,
    days: int = 30,
    expired: bool = False,
    san: Sequence[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed directly (outside the CA's records)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=days + 2) if expired else now - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key  # type: ignore[arg-type]
