"""Small X.509 trust checks for services (TLS/DTLS layers do full path validation)."""

from __future__ import annotations

import datetime
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from .codec import oids


def der_digest(*certificates: x509.Certificate) -> bytes:
    """SHA-256 over the certificates' DER, in order: what the verdict memories keep in
    place of the certificates. A parsed certificate with the objects `cryptography`
    caches on it is ~9 KiB; kept for every device of a fleet, the memories held tens of
    MiB after a run (docs/performance.md, "Server memory after a run"). The digest
    names the very same bytes as the certificates did (collisions are SHA-256's)."""
    digest = hashlib.sha256()
    for certificate in certificates:
        digest.update(certificate.public_bytes(Encoding.DER))
    return digest.digest()


class SignatureVerdicts:
    """A bounded LRU of (certificate, issuer) pairs whose signature verified.

    A signature check is a pure function of the two certificates, so a verdict can be
    reused for as long as both exist; a pair is remembered by the digest of both DER
    encodings, so it matches only the very same bytes and holds no certificate. Only
    successes are kept: a failure costs the attacker who sends it, and must not evict
    good entries.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._pairs: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # LocalCA checks chains in worker threads too

    def __contains__(self, pair: tuple[x509.Certificate, x509.Certificate]) -> bool:
        key = der_digest(*pair)
        with self._lock:
            if key in self._pairs:
                self._pairs.move_to_end(key)
                return True
        return False

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, pair: tuple[x509.Certificate, x509.Certificate]) -> None:
        key = der_digest(*pair)
        with self._lock:
            self._pairs[key] = None
            self._pairs.move_to_end(key)
            while len(self._pairs) > self._size:
                self._pairs.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()


def issued_by(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    verdicts: SignatureVerdicts | None = None,
) -> bool:
    """True when issuer's key signed certificate and the names chain; a success is
    remembered in `verdicts` when given, and a verdict found there is not checked again."""
    pair = (certificate, issuer)
    if verdicts is not None and pair in verdicts:  # only pairs whose names chain get in
        return True
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if verdicts is not None:
        verdicts.add(pair)
    return True


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def is_current(certificate: x509.Certificate, now: datetime.datetime | None = None) -> bool:
    now = now or utc_now()
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def chains_to(
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    verdicts: SignatureVerdicts | None = None,
    now: datetime.datetime | None = None,
) -> bool:
    """True when the chain (leaf first, intermediates after) leads to one of the anchors.

    verdicts: signatures already verified (and where new ones are remembered), if any.
    now: the time at which every certificate must be valid (default: now).
    """
    if not chain:
        return False
    current = chain[0]
    remaining = list(chain[1:])
    for _ in range(len(chain) + 1):
        if not is_current(current, now):
            return False
        if any(current == anchor or issued_by(current, anchor, verdicts) for anchor in anchors):
            return True
        parent = next((c for c in remaining if issued_by(current, c, verdicts)), None)
        if parent is None:
            return False
        remaining.remove(parent)
        current = parent
    return False


# The chains remembered by identity (each held, with its certificates): about the
# associations in use at once; the rest are found by digest, for ~3 us more.
IDENTITY_SIZE = 512

# (chains to an anchor, start and end of the window in which every certificate is valid)
_Verdict = tuple[bool, datetime.datetime, datetime.datetime]


class ChainVerdicts:
    """chains_to() against fixed anchors, remembered for chains that come back.

    A front builds a peer's chain tuple once per (D)TLS association or client certificate,
    so the verdict is found first by the tuple's identity (no hashing of certificates),
    then by the digest of the chain's DER (der_digest). Only the identity memory holds
    chains, and it is kept small (IDENTITY_SIZE): it serves the associations in use, the
    digest memory every chain seen. The verdict keeps the window in which every
    certificate of the chain is valid, and dates are checked on every call against that
    window, so a certificate that expires after its first use is refused on the next one
    (RFC 5280 s4.1.2.5).
    Bounded: when full, it starts over. signatures: the signature memory its chain checks
    use (ClientTrust shares one among its verdicts); a memory of its own when not given.
    now: the clock dates are checked against (tests pass their own).
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        size: int = 4096,
        signatures: SignatureVerdicts | None = None,
        now: Callable[[], datetime.datetime] = utc_now,
    ) -> None:
        self.anchors = tuple(anchors)
        self._now = now
        self.signatures = signatures if signatures is not None else SignatureVerdicts(size)
        self._size = size
        self._by_value: dict[bytes, _Verdict] = {}
        # id -> (the tuple itself, kept so its id cannot be reused while the entry lives)
        self._by_identity: dict[int, tuple[tuple[x509.Certificate, ...], _Verdict]] = {}
        self._identity_size = min(size, IDENTITY_SIZE)

    def made_with(self, anchors: Sequence[x509.Certificate]) -> bool:
        """Whether these are the very anchor objects the verdicts were made with."""
        held = self.anchors
        return len(held) == len(anchors) and all(a is b for a, b in zip(held, anchors, strict=True))

    def trusted(self, chain: tuple[x509.Certificate, ...]) -> bool:
        now = self._now()
        same = self._by_identity.get(id(chain))
        if same is not None and same[0] is chain:
            good, valid_from, valid_until = same[1]
            return good and valid_from <= now <= valid_until
        if not chain:
            return False
        digest = der_digest(*chain)
        verdict = self._by_value.get(digest)
        if verdict is None:
            verdict = (
                chains_to(chain, self.anchors, self.signatures, now),
                max(c.not_valid_before_utc for c in chain),
                min(c.not_valid_after_utc for c in chain),
            )
        good, valid_from, valid_until = verdict
        in_window = valid_from <= now <= valid_until
        # A refusal outside the validity window may be the dates' doing alone, and a
        # not-yet-valid chain becomes good later: only refusals on trust are remembered.
        if good or in_window:
            self._remember(chain, digest, verdict)
        return good and in_window

    def _remember(
        self, chain: tuple[x509.Certificate, ...], digest: bytes, verdict: _Verdict
    ) -> None:
        if len(self._by_value) >= self._size:
            self._by_value.clear()
        if len(self._by_identity) >= self._identity_size:
            self._by_identity.clear()
        self._by_value[digest] = verdict
        self._by_identity[id(chain)] = (chain, verdict)


class ClientTrust:
    """What a server trusts for client certificates, and what it has verified of them.

    One per service (EstService.client_trust), shared with its fronts: a front verifies
    client chains against `anchors` in the (D)TLS handshake and notes the chains it
    verified (note_verified_chain), so that the service, checking the same chain with
    trusted(), does not verify its signatures a second time. Every memory here is bounded
    by `size`: signatures by LRU, chain verdicts by starting over when full.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate] = (),
        *,
        size: int = 4096,
        now: Callable[[], datetime.datetime] = utc_now,
    ) -> None:
        self.size = size
        self.now = now
        self.signatures = SignatureVerdicts(size)
        self._chains = self.verdicts_for(anchors)

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._chains.anchors

    def set_anchors(self, anchors: Sequence[x509.Certificate]) -> None:
        """Trust these from now on (e.g. once an upstream CA is learnt). Chain verdicts
        start over; signature verdicts stay, as they do not depend on the anchors."""
        if not self._chains.made_with(anchors):
            self._chains = self.verdicts_for(anchors)

    def trusted(self, chain: tuple[x509.Certificate, ...]) -> bool:
        """Whether the chain (leaf first) leads to one of the anchors and is valid now."""
        return self._chains.trusted(chain)

    def verdicts_for(self, anchors: Sequence[x509.Certificate]) -> ChainVerdicts:
        """Chain verdicts against other anchors (e.g. the CA alone, for RAs) that share
        this trust's signature memory."""
        return ChainVerdicts(anchors, self.size, self.signatures, self.now)

    def issued_by(self, certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
        return issued_by(certificate, issuer, self.signatures)

    def chains_to(
        self, chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
    ) -> bool:
        return chains_to(chain, anchors, self.signatures, self.now())

    def note_verified_chain(self, chain: Sequence[x509.Certificate]) -> None:
        """Remember the signatures of a chain (leaf first) that a TLS/DTLS stack has
        verified, each certificate by the next, so they are not checked a second time.

        Only for chains a verifier really checked (e.g. OpenSSL's verified chain of the
        peer); validity periods and anchors are still checked on every call.
        """
        for pair in zip(chain, chain[1:], strict=False):
            self.signatures.add(pair)  # a verifier built the chain by matching issuer names


def is_ca(certificate: x509.Certificate) -> bool:
    """Whether basicConstraints says CA:TRUE."""
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def has_eku(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return oid in eku


# id-kp-cmcRA (RFC 6402 s2.10): marks a certificate as an EST/CMC Registration Authority.
ID_KP_CMC_RA = oids.KP_CMC_RA
ID_KP_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
