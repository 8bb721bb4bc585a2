"""Upstream: an EstService that forwards to another EST server over HTTPS, as an RA.

Behind the coap front it is the RFC 9148 s5 registrar; behind the https front it
is an RFC 7030 proxy. It authenticates the device itself (the upstream only sees
the RA's certificate, RFC 7030 s3.7), checks PoP on the device's own channel
(tls-unique does not survive the hop), and maps upstream answers to service
results. The wire work (base64, multipart, 202, statuses) is the transport's.

The upstream would otherwise see only the RA: on csrattrs, enroll and serverkeygen the
device's identity (its certificate's serialNumber, else CN) goes along in an
EST-Requester header, so that the upstream CA holds the device to its own identity
(ca/policy.py) and tells it the subject to use. Nothing is sent for password users: for
them the RA is the provisioner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap import service as svc
from estcoap.client.transport import Reply, ReplyKind
from estcoap.codec import der, pkcs7, spki
from estcoap.codec.errors import CodecError
from estcoap.codec.multipart import KeygenParts
from estcoap.codec.names import REQUESTER_HEADER, device_identity, requester_text
from estcoap.codec.operations import ContentFormat, Operation, OperationSpec, spec_for
from estcoap.codec.pkcs10 import Csr
from estcoap.identity import check_same_identity
from estcoap.observe.hooks import NO_HOOK, UpstreamHook
from estcoap.pop import check_pop
from estcoap.revocation import RevocationChecker
from estcoap.trust import ClientTrust, is_ca

from .psk_devices import (
    PskDevices,
    forward_psk,
    psk_device_of,
    requester_attribute,
    with_bound_subject,
)

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


class RaTransport(Protocol):
    """A ClientTransport that can add request headers (HttpsPool, HttpsTransport)."""

    async def call(
        self,
        spec: OperationSpec,
        label: str | None,
        body: bytes | None,
        accept: ContentFormat | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Reply: ...

    async def close(self) -> None: ...


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
        transport: RaTransport,
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
        self.client_trust = ClientTrust(self.client_trust_anchors())
        # Device certificates revoked in the CRLs the operator gave (makers', the upstream
        # CA's): the upstream sees only the RA, so the gateway refuses them itself.
        self.revocation: RevocationChecker | None = None
        # Hears of each upstream call (metrics); last_failure says why the latest call
        # failed, None when it succeeded (readiness, /readyz).
        self.hook: UpstreamHook = NO_HOOK
        self.last_failure: str | None = None
        self.calls = 0
        # Devices that enroll with a pre-shared key over the PSK DTLS front (psk_devices.py).
        self.psk_devices: PskDevices | None = None

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
        answer = _decode_certs(reply.body)
        certs = list(answer.certificates)
        if label is None and certs != self.upstream_cas:
            self.upstream_cas = certs
            self.client_trust.set_anchors(self.client_trust_anchors())
        return answer

    async def csrattrs(self, label: str | None, peer: svc.Peer) -> svc.CsrAttributes:
        reply = await self._call(Operation.CSRATTRS, label, None, self._requester(peer))
        if peer.psk_identity is not None:  # the template names the subject it is bound to
            device = psk_device_of(self.psk_devices, peer)
            try:
                return svc.CsrAttributes(with_bound_subject(reply.body, device))
            except CodecError as exc:
                raise svc.UpstreamUnavailable(f"upstream csrattrs answer: {exc}") from exc
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
        check_pop(request.csr, request.peer, required=self._pop_required(request.peer))
        forward = partial(
            self._certificates, Operation.SIMPLEENROLL, request, self._requester(request.peer)
        )
        if request.peer.psk_identity is not None:
            return await forward_psk(self.psk_devices, request, forward)
        return await forward()

    async def reenroll(self, request: svc.EnrollRequest) -> svc.Certificates | svc.Pending:
        await self._authenticate_reenroll(request)
        check_pop(request.csr, request.peer, required=self.require_pop)
        return await self._certificates(Operation.SIMPLEREENROLL, request)

    async def serverkeygen(self, request: svc.EnrollRequest) -> svc.KeyAndCertificate | svc.Pending:
        self._authenticate(request.peer)
        check_pop(request.csr, request.peer, required=self._pop_required(request.peer))
        if request.peer.psk_identity is not None:
            return await forward_psk(
                self.psk_devices, request, partial(self._serverkeygen, request)
            )
        return await self._serverkeygen(request)

    async def _serverkeygen(
        self, request: svc.EnrollRequest
    ) -> svc.KeyAndCertificate | svc.Pending:
        headers = self._requester(request.peer)
        reply = await self._call(Operation.SERVERKEYGEN, request.label, request.csr.der, headers)
        if reply.kind is ReplyKind.PENDING:
            return svc.Pending(reply.retry_after)
        return _key_and_certificate(reply.body)

    # ---- device authentication ------------------------------------------

    def _refuse_revoked(self, peer: svc.Peer) -> None:
        if self.revocation is not None and peer.certificates:
            why = self.revocation.refusal(peer.certificates)
            if why is not None:
                log.info("refused %s: %s", peer.describe(), why)
                raise svc.Forbidden(why)

    def _pop_required(self, peer: svc.Peer) -> bool:
        # A PSK channel (tinydtls) has no tls-unique: the key, bound to one subject and
        # spent with the certificate, stands in (docs/psk.md).
        return self.require_pop and peer.psk_identity is None

    def _authenticate(self, peer: svc.Peer) -> None:
        self._refuse_revoked(peer)
        if peer.psk_identity is not None:  # the PSK DTLS front found its key
            psk_device_of(self.psk_devices, peer)
            return
        if peer.http_user is not None:  # the https front checked the password
            return
        if not peer.certificates:
            raise svc.Unauthenticated("a client certificate is required")
        if not self._trusted(peer.certificates):
            raise svc.Unauthenticated("client certificate is not from a trusted issuer")

    def _requester(self, peer: svc.Peer) -> dict[str, str]:
        """The EST-Requester header naming a device this RA authenticated by its
        certificate or pre-shared key; none for anyone else."""
        if peer.psk_identity is not None:
            named = requester_attribute(psk_device_of(self.psk_devices, peer))
            return {REQUESTER_HEADER: requester_text(named)} if named is not None else {}
        cert = peer.certificate
        if cert is None or not self._trusted(peer.certificates):
            return {}
        identity = device_identity(cert)
        return {REQUESTER_HEADER: requester_text(identity)} if identity is not None else {}

    def _trusted(self, chain: tuple[x509.Certificate, ...]) -> bool:
        anchors = self.client_trust_anchors()
        if not anchors:
            return True
        # Signature checks cost more than the rest of a forward, and devices come back
        # with the same chain: verdicts are remembered against the anchors they were made
        # with (the upstream CA's certificates can change under cacerts).
        self.client_trust.set_anchors(anchors)  # starts over only if they changed
        return self.client_trust.trusted(chain)

    async def _authenticate_reenroll(self, request: svc.EnrollRequest) -> None:
        peer = request.peer
        if not peer.certificates:
            raise svc.Unauthenticated("re-enrollment needs the certificate being renewed")
        self._refuse_revoked(peer)
        if not self.upstream_cas:
            await self.learn_upstream_ca()
        if not self.client_trust.chains_to(peer.certificates, self.upstream_cas):
            raise svc.Forbidden("re-enrollment needs a certificate issued by the upstream CA")
        # The upstream sees only the RA, so the RFC 7030 s4.2.2 identity rule is checked here.
        check_same_identity(request.csr, peer.certificates[0])

    # ---- upstream calls ---------------------------------------------------

    async def _certificates(
        self,
        operation: Operation,
        request: svc.EnrollRequest,
        headers: Mapping[str, str] | None = None,
    ) -> svc.Certificates | svc.Pending:
        reply = await self._call(operation, request.label, request.csr.der, headers)
        if reply.kind is ReplyKind.PENDING:
            return svc.Pending(reply.retry_after)
        # The issued certificate goes first (287 carries only it); the PKCS#7 stays as sent.
        return _issued_for_csr(_decode_certs(reply.body), request.csr)

    def _failed(self, operation: str, reason: str, why: str) -> None:
        self.last_failure = f"{operation}: {why}"
        self.hook.upstream_done(operation, 0.0, reason)

    async def _call(
        self,
        operation: Operation,
        label: str | None,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        if not self.has_label(label):
            raise svc.NotFound(f"unknown label {label!r}")
        upstream_label = self.labels.get(label) if label is not None else None
        spec = spec_for(operation)
        name = spec.long_name
        start = time.perf_counter()
        self.calls += 1
        try:
            async with asyncio.timeout(self.timeout):  # no extra task, unlike wait_for
                reply = await self.transport.call(spec, upstream_label, body, headers=headers)
        except TimeoutError as exc:
            log.warning("upstream %s: no answer in %g s", name, self.timeout)
            self._failed(name, "timeout", f"no answer in {self.timeout:g} s")
            raise svc.UpstreamTimeout(
                f"upstream did not answer {name} within {self.timeout:g} s"
            ) from exc
        except CodecError as exc:
            self._failed(name, "unavailable", "answered garbage")
            raise svc.UpstreamUnavailable(f"upstream answered garbage: {exc}") from exc
        except Exception as exc:  # connection refused, TLS failure, broken HTTP
            log.warning("upstream %s failed: %s", name, exc)
            self._failed(name, "unavailable", _clip(str(exc) or type(exc).__name__))
            raise svc.UpstreamUnavailable(_clip(f"upstream unavailable: {exc}")) from exc
        self.hook.upstream_done(name, time.perf_counter() - start, None)
        if reply.kind is ReplyKind.ERROR:
            detail = reply.diagnostic.strip() or "no diagnostic"
            if reply.status == "200":  # a 200 whose body would not decode
                self._failed(name, "unavailable", "answered garbage")
                raise svc.UpstreamUnavailable(_clip(f"upstream answered garbage: {detail}"))
            kind = _STATUS_ERRORS.get(reply.status, svc.UpstreamUnavailable)
            if kind is svc.UpstreamUnavailable:  # its own failure (5xx), not the device's
                self._failed(name, "status", f"answered {reply.status}")
            else:
                self.last_failure = None
            raise kind(_clip(f"upstream {reply.status}: {detail}"))
        self.last_failure = None
        if reply.kind is ReplyKind.PENDING and operation in (Operation.CACERTS, Operation.CSRATTRS):
            raise svc.UpstreamUnavailable(f"upstream answered {spec.long_name} with 202")
        return reply


def _clip(text: str) -> str:
    return " ".join(text.split())[:_DIAGNOSTIC_LIMIT]


def _decode_certs(body: bytes) -> svc.Certificates:
    """The answer's certificates, each with its DER as sent, and the PKCS#7 as sent."""
    try:
        pairs = pkcs7.decode_certs_only_with_der(body)
    except CodecError as exc:
        raise svc.UpstreamUnavailable(_clip(f"upstream answered garbage: {exc}")) from exc
    if not pairs:
        raise svc.UpstreamUnavailable("upstream answered a PKCS#7 without certificates")
    return svc.Certificates(
        tuple(c for c, _ in pairs), raw_pkcs7=body, raw_certificates=tuple(d for _, d in pairs)
    )


def _issued_for_csr(answer: svc.Certificates, csr: Csr) -> svc.Certificates:
    """The answer with the certificate for the CSR's key first, matched on the
    SubjectPublicKeyInfo bytes as the device and the CA encoded them (spki.index_of_key)."""
    if len(answer.certificates) == 1:  # the usual answer (RFC 7030 s4.2.3)
        return answer
    return _issued_first(answer, spki.of_csr(csr.der), lambda: _csr_public_key_der(csr))


def _csr_public_key_der(csr: Csr) -> bytes | None:
    try:
        return csr.public_key_der
    except CodecError:  # the upstream issued for it anyway: pick by the other rule
        return None


def _issued_first(
    answer: svc.Certificates, encoded_key: bytes | None, public_key: Callable[[], bytes | None]
) -> svc.Certificates:
    """The answer with the certificate for this key (spki.index_of_key) first, else the
    first end-entity one: the gateway passes the answer on, and the device judges it."""
    certs = answer.certificates
    if len(certs) == 1:
        return answer
    pairs = [(cert, answer.certificate_der(i)) for i, cert in enumerate(certs)]
    index = spki.index_of_key(pairs, encoded_key, public_key)
    if index is None:
        index = next((i for i, c in enumerate(certs) if not is_ca(c)), 0)
    return _with_first(answer, index)


def _with_first(answer: svc.Certificates, index: int) -> svc.Certificates:
    """The same answer (PKCS#7 as sent) with certificate `index` moved to the front."""
    if index == 0:
        return answer
    order = [index, *(i for i in range(len(answer.certificates)) if i != index)]
    ders = answer.raw_certificates
    return svc.Certificates(
        tuple(answer.certificates[i] for i in order),
        raw_pkcs7=answer.raw_pkcs7,
        raw_certificates=tuple(ders[i] for i in order) if ders is not None else None,
    )


def _key_and_certificate(body: bytes) -> svc.KeyAndCertificate:
    try:
        parts = KeygenParts.from_core(body)
    except CodecError as exc:
        raise svc.UpstreamUnavailable(
            _clip(f"upstream serverkeygen answer is malformed: {exc}")
        ) from exc
    if parts.cert_format is ContentFormat.PKIX_CERT:
        answer = svc.Certificates(
            (_load_der_cert(parts.certificate),), raw_certificates=(parts.certificate,)
        )
    else:
        answer = _decode_certs(parts.certificate)
    if parts.key_format is ContentFormat.PKCS8:
        key_format = svc.KeyFormat.PKCS8
        public_key = _pkcs8_public_der(parts.key)
        issued = _issued_first(answer, public_key, lambda: public_key)
    else:
        # An encrypted key (CMS EnvelopedData, 280) goes to the device untouched.
        key_format = svc.KeyFormat.CMS_ENVELOPED
        issued = _issued_first(answer, None, lambda: None)
    return svc.KeyAndCertificate(parts.key, key_format, issued)


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
    return spki.public_key_der(key)
