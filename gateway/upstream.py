"""Upstream: an EstService that forwards to another EST server over HTTPS, as an RA.

Behind the coap front it is the RFC 9148 s5 registrar; behind the https front it
is an RFC 7030 proxy. It authenticates the device itself (the upstream only sees
the RA's certificate, RFC 7030 s3.7), checks PoP on the device's own channel
(tls-unique does not survive the hop), and maps upstream answers to service
results. The wire work (base64, multipart, 202, statuses) is the transport's.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap import service as svc
from estcoap.client.transport import ClientTransport, Reply, ReplyKind
from estcoap.codec import der, pkcs7
from estcoap.codec.errors import CodecError
from estcoap.codec.multipart import KeygenParts
from estcoap.codec.operations import ContentFormat, Operation, spec_for
from estcoap.codec.pkcs10 import Csr
from estcoap.pop import check_pop
from estcoap.trust import chains_to

log = logging.getLogger(__name__)

# Upstream HTTP status -> the meaning the device gets (SPEC.md "Gateway / registrar").
# Anything else (5xx, odd 3xx/4xx) means the upstream failed us: UpstreamUnavailable (5.02).
_STATUS_ERRORS: dict[str, type[svc.EstError]] = {
    "400": svc.BadRequest,
    "401": svc.Unauthenticated,
    "403": svc.Forbidden,
    "404": svc.NotFound,
    "415": svc.UnsupportedFormat,
}
_DIAGNOSTIC_LIMIT = 200
_VERDICT_CACHE = 4096


class Upstream:
    """EstService forwarding to `transport` (an HttpsPool in the gateway and proxy)."""

    # A front may parse CSRs for this service without checking their signatures: the
    # upstream CA verifies each one anyway (a bad one comes back as its 400), and a
    # second check here would cost more CPU than the rest of the forward. What the
    # gateway reads itself (subject, SAN, challengePassword for PoP) is covered by that
    # same signature, so skipping it here weakens nothing that is issued.
    front_checks_csr_signature = False

    def __init__(
        self,
        transport: ClientTransport,
        *,
        labels: Mapping[str, str | None] | None = None,
        require_pop: bool = False,
        trust_clients: Sequence[x509.Certificate] = (),
        timeout: float = 10.0,
    ):
        """labels maps a device-side label to the upstream label (None = upstream's default).

        trust_clients: anchors for device certificates on enroll (IDevID makers); the
        upstream CA's own certificates (learnt from /cacerts) are added for re-enroll.
        timeout bounds each upstream request, connection included.
        """
        self.transport = transport
        self.labels = dict(labels or {})
        self.require_pop = require_pop
        self.trust_clients = list(trust_clients)
        self.timeout = timeout
        self.upstream_cas: list[x509.Certificate] = []
        self._chain_verdicts: dict[
            tuple[tuple[x509.Certificate, ...], int],
            tuple[bool, datetime.datetime, datetime.datetime],
        ] = {}
        self._verdicts_by_identity: dict[
            int,
            tuple[
                tuple[x509.Certificate, ...],
                int,
                tuple[bool, datetime.datetime, datetime.datetime],
            ],
        ] = {}

    # ---- EstService ------------------------------------------------------

    def has_label(self, label: str | None) -> bool:
        return label is None or label in self.labels

    def client_trust_anchors(self) -> list[x509.Certificate]:
        """What a front verifies device certificates against: makers plus the upstream CA."""
        return [*self.trust_clients, *self.upstream_cas]

    async def learn_upstream_ca(self) -> list[x509.Certificate]:
        """Fetch the upstream's CA certificates (needed to accept its certificates for sren)."""
        await self.cacerts(None)
        return list(self.upstream_cas)

    async def cacerts(self, label: str | None) -> svc.Certificates:
        reply = await self._call(Operation.CACERTS, label, None)
        certs = _decode_certs(reply.body)
        if label is None and certs != self.upstream_cas:
            self.upstream_cas = certs
            self._chain_verdicts.clear()
            self._verdicts_by_identity.clear()
        return svc.Certificates(tuple(certs), raw_pkcs7=reply.body)

    async def csrattrs(self, label: str | None, peer: svc.Peer) -> svc.CsrAttributes:
        reply = await self._call(Operation.CSRATTRS, label, None)
        if not reply.body:  # 204: the upstream has nothing to ask for
            raise svc.NotFound("upstream has no CSR attributes")
        try:
            top = der.read_one(reply.body)
        except CodecError as exc:
            raise svc.UpstreamUnavailable(f"upstream csrattrs answer is not DER: {exc}") from exc
        if not der.is_sequence(top):
            raise svc.UpstreamUnavailable("upstream csrattrs answer is not a SEQUENCE")
        return svc.CsrAttributes(reply.body)

    async def enroll(self, request: svc.EnrollRequest) -> svc.Certificates | svc.Pending:
        self._authenticate(request.peer)
        check_pop(request.csr, request.peer, required=self.require_pop)
        return await self._certificates(Operation.SIMPLEENROLL, request)

    async def reenroll(self, request: svc.EnrollRequest) -> svc.Certificates | svc.Pending:
        await self._authenticate_reenroll(request)
        check_pop(request.csr, request.peer, required=self.require_pop)
        return await self._certificates(Operation.SIMPLEREENROLL, request)

    async def serverkeygen(
        self, request: svc.EnrollRequest
    ) -> svc.KeyAndCertificate | svc.Pending:
        self._authenticate(request.peer)
        check_pop(request.csr, request.peer, required=self.require_pop)
        reply = await self._call(Operation.SERVERKEYGEN, request.label, request.csr.der)
        if reply.kind is ReplyKind.PENDING:
            return svc.Pending(reply.retry_after)
        return _key_and_certificate(reply.body)

    # ---- device authentication ------------------------------------------

    def _authenticate(self, peer: svc.Peer) -> None:
        if peer.http_user is not None:  # the https front checked the password
            return
        if not peer.certificates:
            raise svc.Unauthenticated("a client certificate is required")
        if not self._trusted(peer.certificates):
            raise svc.Unauthenticated("client certificate is not from a trusted issuer")

    def _trusted(self, chain: tuple[x509.Certificate, ...]) -> bool:
        if not self.trust_clients and not self.upstream_cas:
            return True
        # Signature checks cost more than the rest of a forward; devices come back with the
        # same chain, so remember the verdict with the window in which every certificate of
        # the chain is valid (dates are still checked every time, against that window).
        # A DTLS association builds its Peer, and so this tuple, once: finding it by
        # identity skips hashing every certificate (a few us each) on each request.
        generation = len(self.upstream_cas)
        same = self._verdicts_by_identity.get(id(chain))
        if same is not None and same[0] is chain and same[1] == generation:
            known = same[2]
        else:
            known = self._verdict(chain, generation)
            if len(self._verdicts_by_identity) >= _VERDICT_CACHE:
                self._verdicts_by_identity.clear()
            # The entry holds the tuple, so its id cannot be reused while the entry lives.
            self._verdicts_by_identity[id(chain)] = (chain, generation, known)
        verdict, valid_from, valid_until = known
        return verdict and valid_from <= datetime.datetime.now(datetime.UTC) <= valid_until

    def _verdict(
        self, chain: tuple[x509.Certificate, ...], generation: int
    ) -> tuple[bool, datetime.datetime, datetime.datetime]:
        key = (chain, generation)
        known = self._chain_verdicts.get(key)
        if known is None:
            known = (
                chains_to(chain, self.client_trust_anchors()),
                max(c.not_valid_before_utc for c in chain),
                min(c.not_valid_after_utc for c in chain),
            )
            if len(self._chain_verdicts) >= _VERDICT_CACHE:
                self._chain_verdicts.clear()
            self._chain_verdicts[key] = known
        return known

    async def _authenticate_reenroll(self, request: svc.EnrollRequest) -> None:
        peer = request.peer
        if not peer.certificates:
            raise svc.Unauthenticated("re-enrollment needs the certificate being renewed")
        if not self.upstream_cas:
            await self.learn_upstream_ca()
        if not chains_to(peer.certificates, self.upstream_cas):
            raise svc.Forbidden("re-enrollment needs a certificate issued by the upstream CA")
        # The upstream sees only the RA, so the RFC 7030 s4.2.2 identity rule is checked here.
        current = peer.certificates[0]
        if request.csr.subject != current.subject:
            raise svc.Forbidden(
                "re-enroll identity mismatch: CSR subject "
                f"{request.csr.subject.rfc4514_string()!r} differs from the certificate's "
                f"{current.subject.rfc4514_string()!r}"
            )
        if _san_set(request.csr.subject_alt_name) != _san_set(_san_of(current)):
            raise svc.Forbidden("re-enroll identity mismatch: CSR subjectAltName differs")

    # ---- upstream calls ---------------------------------------------------

    async def _certificates(
        self, operation: Operation, request: svc.EnrollRequest
    ) -> svc.Certificates | svc.Pending:
        reply = await self._call(operation, request.label, request.csr.der)
        if reply.kind is ReplyKind.PENDING:
            return svc.Pending(reply.retry_after)
        certs = _decode_certs(reply.body)
        # The issued certificate goes first (287 carries only it); the PKCS#7 stays as sent.
        return svc.Certificates(tuple(_issued_for_csr(certs, request.csr)), raw_pkcs7=reply.body)

    async def _call(self, operation: Operation, label: str | None, body: bytes | None) -> Reply:
        if not self.has_label(label):
            raise svc.NotFound(f"unknown label {label!r}")
        upstream_label = self.labels.get(label) if label is not None else None
        spec = spec_for(operation)
        try:
            async with asyncio.timeout(self.timeout):  # no extra task, unlike wait_for
                reply = await self.transport.call(spec, upstream_label, body)
        except TimeoutError as exc:
            log.warning("upstream %s: no answer in %g s", spec.long_name, self.timeout)
            raise svc.UpstreamTimeout(
                f"upstream did not answer {spec.long_name} within {self.timeout:g} s"
            ) from exc
        except CodecError as exc:
            raise svc.UpstreamUnavailable(f"upstream answered garbage: {exc}") from exc
        except Exception as exc:  # connection refused, TLS failure, broken HTTP
            log.warning("upstream %s failed: %s", spec.long_name, exc)
            raise svc.UpstreamUnavailable(_clip(f"upstream unavailable: {exc}")) from exc
        if reply.kind is ReplyKind.ERROR:
            detail = reply.diagnostic.strip() or "no diagnostic"
            if reply.status == "200":  # a 200 whose body would not decode
                raise svc.UpstreamUnavailable(_clip(f"upstream answered garbage: {detail}"))
            kind = _STATUS_ERRORS.get(reply.status, svc.UpstreamUnavailable)
            raise kind(_clip(f"upstream {reply.status}: {detail}"))
        if reply.kind is ReplyKind.PENDING and operation in (Operation.CACERTS, Operation.CSRATTRS):
            raise svc.UpstreamUnavailable(f"upstream answered {spec.long_name} with 202")
        return reply


def _clip(text: str) -> str:
    return " ".join(text.split())[:_DIAGNOSTIC_LIMIT]


def _decode_certs(body: bytes) -> list[x509.Certificate]:
    try:
        certs = pkcs7.decode_certs_only(body)
    except CodecError as exc:
        raise svc.UpstreamUnavailable(_clip(f"upstream answered garbage: {exc}")) from exc
    if not certs:
        raise svc.UpstreamUnavailable("upstream answered a PKCS#7 without certificates")
    return certs


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_for_csr(certs: list[x509.Certificate], csr: Csr) -> list[x509.Certificate]:
    """_issued_first for an enrollment: the SubjectPublicKeyInfo bytes as the device and
    the CA encoded them settle it in a few microseconds, where loading and re-encoding
    both keys took about 25. Keys whose encodings differ (a compressed EC point) are
    still matched by value."""
    if len(certs) == 1:
        return certs
    wanted = _encoded_spki(csr.der, depth=2, skip=2)
    chosen = next(
        (c for c in certs if wanted and _encoded_spki(c.tbs_certificate_bytes, 1) == wanted),
        None,
    )
    if chosen is not None:
        return [chosen, *(c for c in certs if c is not chosen)]
    try:
        public_key_der = csr.public_key_der
    except CodecError:  # the upstream issued for it anyway: pick by the other rule
        public_key_der = None
    return _issued_first(certs, public_key_der)


def _encoded_spki(data: bytes, depth: int, skip: int | None = None) -> bytes | None:
    """The SubjectPublicKeyInfo TLV as encoded: enter `depth` SEQUENCEs, then step over
    `skip` elements (a TBSCertificate: version, serial, signature, issuer, validity,
    subject; a CertificationRequestInfo: version, subject). None for anything unexpected.
    A few header reads, so no Tlv objects or content copies."""
    try:
        offset = 0
        for _ in range(depth):
            if data[offset] != der.SEQUENCE:
                return None
            offset, _ = _header(data, offset)
        if skip is None:  # a certificate's version is an optional [0]
            skip = 6 if data[offset] == 0xA0 else 5
        for _ in range(skip):
            _, offset = _header(data, offset)
        if data[offset] != der.SEQUENCE:
            return None
        _, end = _header(data, offset)
    except (IndexError, ValueError):
        return None
    return data[offset:end]


def _header(data: bytes, offset: int) -> tuple[int, int]:
    """(content start, end) of the DER element at offset (low tag numbers, definite length)."""
    if data[offset] & 0x1F == 0x1F:
        raise ValueError("high tag number")
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise ValueError("truncated")
    return start, end


def _issued_first(
    certs: list[x509.Certificate], public_key_der: bytes | None
) -> list[x509.Certificate]:
    """Move the certificate for this key (else the first end-entity one) to the front."""
    if len(certs) == 1:  # the usual answer (RFC 7030 s4.2.3): nothing to choose
        return certs
    chosen = next((c for c in certs if public_key_der and _spki(c) == public_key_der), None)
    if chosen is None:
        chosen = next((c for c in certs if not _is_ca(c)), certs[0])
    return [chosen, *(c for c in certs if c is not chosen)]


def _key_and_certificate(body: bytes) -> svc.KeyAndCertificate:
    try:
        parts = KeygenParts.from_core(body)
    except CodecError as exc:
        raise svc.UpstreamUnavailable(
            _clip(f"upstream serverkeygen answer is malformed: {exc}")
        ) from exc
    if parts.cert_format is ContentFormat.PKIX_CERT:
        certs = [_load_der_cert(parts.certificate)]
        raw = None
    else:
        certs = _decode_certs(parts.certificate)
        raw = parts.certificate
    if parts.key_format is ContentFormat.PKCS8:
        key_format = svc.KeyFormat.PKCS8
        issued = _issued_first(certs, _pkcs8_public_der(parts.key))
    else:
        # An encrypted key (CMS EnvelopedData, 280) goes to the device untouched.
        key_format = svc.KeyFormat.CMS_ENVELOPED
        issued = _issued_first(certs, None)
    return svc.KeyAndCertificate(parts.key, key_format, svc.Certificates(tuple(issued), raw))


def _load_der_cert(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise svc.UpstreamUnavailable(f"upstream certificate part is not DER: {exc}") from exc


def _pkcs8_public_der(key_der: bytes) -> bytes | None:
    try:
        key = serialization.load_der_private_key(key_der, password=None)
    except (ValueError, TypeError):
        return None  # not ours to judge: the device gets the key as sent
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _san_of(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _san_set(san: x509.SubjectAlternativeName | None) -> frozenset[x509.GeneralName]:
    return frozenset(san) if san is not None else frozenset()
