"""Small X.509 trust checks for services (TLS/DTLS layers do full path validation)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when issuer's key signed certificate and the names chain."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_current(certificate: x509.Certificate, now: datetime.datetime | None = None) -> bool:
    now = now or datetime.datetime.now(datetime.UTC)
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def chains_to(chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]) -> bool:
    """True when the chain (leaf first, intermediates after) leads to one of the anchors."""
    if not chain:
        return False
    current = chain[0]
    remaining = list(chain[1:])
    for _ in range(len(chain) + 1):
        if not is_current(current):
            return False
        if any(current == anchor or issued_by(current, anchor) for anchor in anchors):
            return True
        parent = next((c for c in remaining if issued_by(current, c)), None)
        if parent is None:
            return False
        remaining.remove(parent)
        current = parent
    return False


def has_eku(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return oid in eku


# id-kp-cmcRA (RFC 6402 s2.10): marks a certificate as an EST/CMC Registration Authority.
ID_KP_CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")
ID_KP_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
