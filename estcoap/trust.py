"""Small X.509 trust checks for services (TLS/DTLS layers do full path validation)."""

from __future__ import annotations

import datetime
import threading
from collections import OrderedDict
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID


class _SignatureVerdicts:
    """A bounded LRU of (certificate, issuer) pairs whose signature verified.

    A signature check is a pure function of the two certificates, so a verdict can be
    reused for as long as both exist; x509.Certificate hashes and compares by its DER,
    so a key matches only the very same bytes. Only successes are kept: a failure costs
    the attacker who sends it, and must not evict good entries.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._pairs: OrderedDict[tuple[x509.Certificate, x509.Certificate], None] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __contains__(self, pair: tuple[x509.Certificate, x509.Certificate]) -> bool:
        with self._lock:
            if pair in self._pairs:
                self._pairs.move_to_end(pair)
                return True
        return False

    def add(self, pair: tuple[x509.Certificate, x509.Certificate]) -> None:
        with self._lock:
            self._pairs[pair] = None
            self._pairs.move_to_end(pair)
            while len(self._pairs) > self._size:
                self._pairs.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()


_verified = _SignatureVerdicts(4096)


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when issuer's key signed certificate and the names chain."""
    pair = (certificate, issuer)
    if pair in _verified:  # only pairs whose names chain get in
        return True
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    _verified.add(pair)
    return True


def note_verified_chain(chain: Sequence[x509.Certificate]) -> None:
    """Remember the signatures of a chain (leaf first) that a TLS/DTLS stack has verified,
    each certificate by the next, so chains_to() need not check them a second time.

    Only for chains a verifier really checked (e.g. OpenSSL's verified chain of the peer);
    validity periods and anchors are still checked by chains_to() on every call.
    """
    for pair in zip(chain, chain[1:], strict=False):
        _verified.add(pair)  # a verifier built the chain by matching issuer names


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
