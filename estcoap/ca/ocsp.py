"""OCSP answers (RFC 6960) for the certificates of this CA. No I/O: DER in, DER out.

OcspResponder.respond() takes the DER of an OCSPRequest and always returns the DER of an
OCSPResponse, never raises for what a peer sent:

* a request that does not parse: malformedRequest (s2.3). So is one asking about several
  certificates at once, which cryptography (that parses and builds here) cannot read;
* a certificate of another issuer (CertID's issuer hashes are not this CA's): unauthorized,
  the status for "not authoritative for this certificate" (s2.3);
* else a signed answer: good, revoked (with the revocation time and the reason, except
  unspecified), or unknown for a serial this CA never issued (s2.2);
* the nonce of the request, when it has one, is echoed (s4.4.1).

The answer is signed by the CA, or by a delegated responder certificate that the CA
issued for it (id-kp-OCSPSigning, s4.2.2.2; `estcoap ca issue-ocsp`), which is then sent
along so the client can check the delegation. Responses name their signer by key hash.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..codec import der
from ..codec.errors import CodecError
from ..codec.keytypes import PrivateKey
from ..service import ServiceUnavailable
from .keys import signature_hash
from .store import RevocationRecord, Store

log = logging.getLogger(__name__)

# How long a relying party may keep an answer (nextUpdate). Short: a cached "good" hides
# a revocation for at most this long; signing a fresh answer is cheap.
DEFAULT_VALIDITY = dt.timedelta(minutes=10)
# thisUpdate backdated a little for clients whose clocks run behind.
CLOCK_SKEW = dt.timedelta(minutes=1)
# The largest request answered: one CertID with a nonce and perhaps a requestor's
# signature and certificates is well under this.
MAX_REQUEST_BYTES = 16 * 1024

_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (
    hashes.SHA1,  # what most clients send (openssl, browsers)
    hashes.SHA224,
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
)


@dataclass(frozen=True)
class Status:
    """What the CA's records say of a serial: issued (revocation None: good; else
    revoked) or not (unknown)."""

    issued: bool
    revocation: RevocationRecord | None = None


Lookup = Callable[[int], Status]


def store_lookup(store: Store) -> Lookup:
    """The status of a serial from the store: current, even for revocations made by
    another process a moment ago (two indexed reads)."""

    def lookup(serial: int) -> Status:
        revocation = store.revocation_of(serial)
        if revocation is not None:
            return Status(True, revocation)
        return Status(store.find_issued(serial) is not None)

    return lookup


class OcspResponder:
    """Answers OCSP requests about the certificates ca_cert issued.

    signer_cert/signer_key: the delegated responder (issued by ca_cert with
    id-kp-OCSPSigning), or None to sign with the CA's own key (ca_key)."""

    def __init__(
        self,
        ca_cert: x509.Certificate,
        ca_key: PrivateKey,
        lookup: Lookup,
        *,
        signer_cert: x509.Certificate | None = None,
        signer_key: PrivateKey | None = None,
        validity: dt.timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if (signer_cert is None) != (signer_key is None):
            raise ValueError("a delegated OCSP responder needs both its certificate and key")
        if signer_cert is not None:
            check_delegated_responder(signer_cert, ca_cert)
            assert signer_key is not None
            if signer_cert.public_key() != signer_key.public_key():
                raise ValueError("the OCSP responder's key does not belong to its certificate")
        self.ca_cert = ca_cert
        self.lookup = lookup
        self.validity = validity
        self.signer_cert = signer_cert or ca_cert
        self._signer_key = signer_key or ca_key
        self.delegated = signer_cert is not None
        self._issuer_hashes = {
            algorithm.name: issuer_hashes(ca_cert, algorithm)
            for algorithm in (make() for make in _HASHES)
        }

    def describe(self) -> str:
        if self.delegated:
            return f"the delegated responder {self.signer_cert.subject.rfc4514_string()}"
        return f"the CA {self.ca_cert.subject.rfc4514_string()}"

    def respond(self, request_der: bytes, now: dt.datetime | None = None) -> bytes:
        """The DER OCSPResponse for a DER OCSPRequest, whatever the request holds."""
        if len(request_der) > MAX_REQUEST_BYTES:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
            name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
            serial = request.serial_number
            nonce = _nonce(request)
        except (ValueError, UnsupportedAlgorithm, NotImplementedError) as exc:
            # NotImplementedError: more than one certificate in a request.
            log.info("malformed OCSP request: %s", exc)
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if self._issuer_hashes.get(algorithm.name) != (name_hash, key_hash):
            log.info("OCSP request for serial %x of another issuer", serial)
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        return self._answer(algorithm, name_hash, key_hash, serial, nonce, now)

    def _answer(
        self,
        algorithm: hashes.HashAlgorithm,
        name_hash: bytes,
        key_hash: bytes,
        serial: int,
        nonce: x509.OCSPNonce | None,
        now: dt.datetime | None,
    ) -> bytes:
        now = now or dt.datetime.now(dt.UTC)
        status = self.lookup(serial)
        revoked = status.revocation
        if revoked is not None:
            cert_status = ocsp.OCSPCertStatus.REVOKED
        elif status.issued:
            cert_status = ocsp.OCSPCertStatus.GOOD
        else:
            cert_status = ocsp.OCSPCertStatus.UNKNOWN
        reason = revoked.reason_flag if revoked is not None else None
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=algorithm,
                cert_status=cert_status,
                this_update=now - CLOCK_SKEW,
                next_update=now + self.validity,
                revocation_time=revoked.revocation_time if revoked is not None else None,
                # RFC 5280 s5.3.1: rather no reason code than unspecified.
                revocation_reason=None if reason is x509.ReasonFlags.unspecified else reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.signer_cert)
        )
        if self.delegated:
            builder = builder.certificates([self.signer_cert])
        if nonce is not None:
            builder = builder.add_extension(nonce, critical=False)
        try:
            response = builder.sign(self._signer_key, signature_hash(self._signer_key))
        except ServiceUnavailable:
            # The CA key's token cannot sign now (it logged why): RFC 6960 s2.3 tryLater.
            return _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        return response.public_bytes(serialization.Encoding.DER)


def issuer_hashes(
    ca_cert: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    """The CertID's issuerNameHash and issuerKeyHash of this CA (RFC 6960 s4.1.1): hashes
    of its subject's DER and of its public key's BIT STRING value."""
    name = hashes.Hash(algorithm)
    name.update(ca_cert.subject.public_bytes())
    key = hashes.Hash(algorithm)
    key.update(_public_key_bits(ca_cert))
    return name.finalize(), key.finalize()


def _public_key_bits(cert: x509.Certificate) -> bytes:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        bit_string = der.read_one(spki).children()[1]
    except (CodecError, IndexError) as exc:  # cryptography wrote it: cannot happen
        raise ValueError(f"cannot read the CA's public key: {exc}") from exc
    return bit_string.content[1:]  # after the unused-bits octet


def check_delegated_responder(responder: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """A responder certificate the CA delegated OCSP to (RFC 6960 s4.2.2.2): issued by
    it, with id-kp-OCSPSigning. ValueError with the reason otherwise."""
    if responder.issuer != ca_cert.subject:
        raise ValueError("the OCSP responder certificate was not issued by this CA")
    try:
        responder.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ValueError("the OCSP responder certificate is not signed by this CA") from exc
    if responder.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise ValueError(
            "the OCSP responder certificate has expired: issue another (estcoap ca issue-ocsp)"
        )
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise ValueError("the OCSP responder certificate lacks id-kp-OCSPSigning")


def _nonce(request: ocsp.OCSPRequest) -> x509.OCSPNonce | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        return None


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return response.public_bytes(serialization.Encoding.DER)
