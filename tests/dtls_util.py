"""Test PKI for the DTLS tests: EC P-256 CAs and leaf certificates written as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Identity:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(
    directory: Path,
    stem: str,
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    chain: tuple[x509.Certificate, ...] = (),
) -> Identity:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain))
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Identity(cert, key, cert_path, key_path)


def make_ca(directory: Path, stem: str = "ca", cn: str = "Test DTLS CA") -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=1))
        .not_valid_after(_NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, stem, cert, key)


def make_leaf(
    directory: Path,
    ca: Identity,
    stem: str,
    cn: str,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    expired: bool = False,
) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    if expired:
        start, end = _NOW - datetime.timedelta(days=10), _NOW - datetime.timedelta(days=1)
    else:
        start, end = _NOW - datetime.timedelta(days=1), _NOW + datetime.timedelta(days=10)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return _write(directory, stem, cert, key)


@dataclass(frozen=True)
class Pki:
    ca: Identity
    server: Identity
    client: Identity
    other_ca: Identity
    untrusted_client: Identity
    expired_client: Identity


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory)
    other = make_ca(directory, "other-ca", "Untrusted CA")
    return Pki(
        ca=ca,
        server=make_leaf(
            directory, ca, "server", "server", dns=("localhost",), ips=("127.0.0.1", "::1")
        ),
        client=make_leaf(directory, ca, "client", "device-1"),
        other_ca=other,
        untrusted_client=make_leaf(directory, other, "untrusted-client", "intruder"),
        expired_client=make_leaf(directory, ca, "expired-client", "old-device", expired=True),
    )
