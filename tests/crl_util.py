"""CRLs for tests, built with cryptography's builder (the CA side's `ca crl` is not needed)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

NOW = datetime.datetime.now(datetime.UTC)

# (serial or certificate, reason or None)
Entry = tuple[int | x509.Certificate, x509.ReasonFlags | None]


def make_crl(
    issuer: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    revoked: Iterable[Entry] = (),
    *,
    this_update: datetime.datetime | None = None,
    next_update: datetime.datetime | None = None,
    number: int = 1,
) -> x509.CertificateRevocationList:
    this_update = this_update or NOW - datetime.timedelta(minutes=1)
    next_update = next_update or NOW + datetime.timedelta(days=7)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for item, reason in revoked:
        serial = item.serial_number if isinstance(item, x509.Certificate) else item
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(key, hashes.SHA256())


def write_crl(path: Path, crl: x509.CertificateRevocationList, *, der: bool = False) -> Path:
    """Written to a temporary name and renamed in place, as an operator's tools would."""
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(crl.public_bytes(encoding))
    temporary.replace(path)
    return path


def load_ca_key(ca_dir: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The certificate and key of a CA directory made by `ca init`."""
    from estcoap.ca.paths import CaPaths

    cert, key = CaPaths.of(ca_dir).load_ca()
    return cert, key  # type: ignore[return-value]
