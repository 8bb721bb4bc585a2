"""Upstream: an EstService that forwards to another EST server over HTTPS, as an RA.

Behind the coap front it is the RFC 9148 s5 registrar; behind the https front it
is an RFC 7030 proxy. It authenticates the device itself (the upstream only sees
the RA's certificate, RFC 7030 s3.7), checks PoP on the device's own channel
(tls-unique does not survive the hop), and maps upstream answers to service
results. The wire work (base64, multipart, 202, statuses) is the transport's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from cryptography import x509
from estcoap.codec.multipart import decode_multipart_core

from estcoap import service as svc
from estcoap.client.transport import ClientTransport, Reply, ReplyKind
from estcoap.codec import pkcs7
from estcoap.codec.errors import CodecError
from estcoap.codec.operations import ContentFormat, Operation, spec_for
from estcoap.pop import check_pop
from estcoap.trust import chains_to

log = logging.getLogger(__name__)

# Upstream HTTP status -> the meaning the device gets (SPEC.md "Gateway / registrar").
_STATUS_ERRORS: dict[str, type[svc.EstError]] = {
    "400": svc.BadRequest,
    "401": svc.Unauthenticated,
    "403": svc.Forbidden,
    "404": svc.NotFound,
    "415": svc.UnsupportedFormat,
    "504": svc.UpstreamTimeout,
}


class Upstream:
    def __init__(
        self,
        transport: ClientTransport,
        *,
        labels: Mapping[str, str | None] | None = None,
        require_pop: bool = False,
        trust_clients: list[x509.Certificate] | None = None,
        timeout: float = 10.0,
    ):
        """labels maps a device-side label to the upstream label (None = upstream's default)."""
        self.transport = transport
        self.labels = dict(labels or {})
        self.require_pop = require_pop
        self.trust_clients = list(trust_clients or [])
        self.timeout = timeout
        self._upstream_cas: list[x509.Certificate] = []

    # ---- EstService ------------------------------------------------------

    def has_label(self, label: str | None) -> bool:
        return label is None or label in self.labels

    async def cacerts(self, label: str | None) -> svc.Certificates:
        reply = await self._call(Operation.CACERTS, label, None)
        certs = _decode_certs(reply.body)
        if label is None:
            self._upstream_cas = certs
        return svc.Certificates(tuple(certs), raw_pkcs7=reply.body)

    async def csrattrs(self, label: str | None, peer: svc.Peer) -> svc.CsrAttributes:
        reply = await self._call(Operation.CSRATTRS, label, None)
        if not reply.body:
            raise svc.NotFound("upstream has no CSR attributes")
        return svc.CsrAttributes(reply.body)

    async def enroll(self, request: svc.EnrollRequest) -> svc.Certificates | svc.Pending:
        self._authenticate(request.peer)
        check_pop(request.csr, request.peer, required=self.require_pop)
        return await self._certificates(Operation.SIMPLEENROLL, request)

    async def reenroll(self, request: svc.EnrollRequest) -> svc.Certificates | svc.Pending:
        await self._authenticate_reenroll(request)
        check_pop(request.csr, request.peer, required=self.require_pop)
        return await self._certificates(Operation.SIMPLEREENROLL, request)

    async def serverkeygen(self, request: svc.EnrollRequest) -> svc.KeyAndCertificate | svc.Pending:
        self._authenticate(request.peer)
        check_pop(request.csr, request.peer, required=self.require_pop)
        reply = await self._call(Operation.SERVERKEYGEN, request.label, request.csr.der)
        if reply.kind is ReplyKind.PENDING:
            return svc.Pending(reply.retry_after)
        return _key_and_certificate(reply.body)

    # ---- device authentication ------------------------------------------

    def _authenticate(self, peer: svc.Peer) -> None:
        if peer.http_user is not None:
            return
        if not peer.certificates:
            raise svc.Unauthenticated("a client certificate is required")
        anchors = self.trust_clients + self._upstream_cas
        if anchors and not chains_to(peer.certificates, anchors):
            raise svc.Unauthenticated("client certificate is not from a trusted issuer")

    async def _authenticate_reenroll(self, request: svc.EnrollRequest) -> None:
        peer = request.peer
        if not peer.certificates:
            raise svc.Unauthenticated("re-enrollment needs the certificate being renewed")
        if not self._upstream_cas:
            await self.cacerts(None)
        if not chains_to(peer.certificates, self._upstream_cas):
            raise svc.Unauthenticated("certificate to renew was not issued by the upstream CA")
        # The upstream sees only the RA, so the RFC 7030 s4.2.2 identity rule is checked here.
        current = peer.certificates[0]
        if request.csr.subject != current.subject:
            raise svc.Forbidden("re-enroll identity mismatch: CSR Subject differs")
        if request.csr.subject_alt_name != _san_of(current):
            raise svc.Forbidden("re-enroll identity mismatch: CSR SubjectAltName differs")

    # ---- upstream calls ---------------------------------------------------

    async def _certificates(
        self, operation: Operation, request: svc.EnrollRequest
    ) -> svc.Certificates | svc.Pending:
        reply = await self._call(operation, request.label, request.csr.der)
        if reply.kind is ReplyKind.PENDING:
            return svc.Pending(reply.retry_after)
        return svc.Certificates(tuple(_decode_certs(reply.body)), raw_pkcs7=reply.body)

    async def _call(self, operation: Operation, label: str | None, body: bytes | None) -> Reply:
        if not self.has_label(label):
            raise svc.NotFound(f"unknown label {label!r}")
        upstream_label = self.labels.get(label) if label is not None else None
        spec = spec_for(operation)
        try:
            reply = await asyncio.wait_for(
                self.transport.call(spec, upstream_label, body), self.timeout
            )
        except TimeoutError as exc:
            raise svc.UpstreamTimeout(
                f"upstream did not answer {spec.long_name} in {self.timeout:g} s"
            ) from exc
        except CodecError as exc:
            raise svc.UpstreamUnavailable(f"upstream answered garbage: {exc}") from exc
        except Exception as exc:  # connection refused, TLS failure, protocol error
            log.warning("upstream %s failed: %s", spec.long_name, exc)
            raise svc.UpstreamUnavailable(f"upstream unreachable: {exc}") from exc
        if reply.kind is ReplyKind.ERROR:
            kind = _STATUS_ERRORS.get(reply.status, svc.UpstreamUnavailable)
            detail = reply.diagnostic.strip() or "no diagnostic"
            raise kind(f"upstream {reply.status}: {detail}"[:200])
        if reply.kind is ReplyKind.PENDING and operation in (Operation.CACERTS, Operation.CSRATTRS):
            raise svc.UpstreamUnavailable(f"upstream answered {spec.long_name} with 202")
        return reply


def _decode_certs(body: bytes) -> list[x509.Certificate]:
    try:
        return pkcs7.decode_certs_only(body)
    except CodecError as exc:
        raise svc.UpstreamUnavailable(f"upstream answered garbage: {exc}") from exc


def _key_and_certificate(body: bytes) -> svc.KeyAndCertificate:
    try:
        parts = dict(decode_multipart_core(body))
    except CodecError as exc:
        raise svc.UpstreamUnavailable(f"upstream serverkeygen answer is malformed: {exc}") from exc
    certs_der = parts.get(int(ContentFormat.PKCS7_CERTS_ONLY))
    if certs_der is None:
        raise svc.UpstreamUnavailable("upstream serverkeygen answer has no certificate part")
    certificates = svc.Certificates(tuple(_decode_certs(certs_der)), raw_pkcs7=certs_der)
    if int(ContentFormat.PKCS8) in parts:
        return svc.KeyAndCertificate(
            parts[int(ContentFormat.PKCS8)], svc.KeyFormat.PKCS8, certificates
        )
    if int(ContentFormat.PKCS7_SERVER_KEYGEN) in parts:
        # An encrypted key (CMS EnvelopedData) goes to the device untouched.
        return svc.KeyAndCertificate(
            parts[int(ContentFormat.PKCS7_SERVER_KEYGEN)], svc.KeyFormat.CMS_ENVELOPED, certificates
        )
    raise svc.UpstreamUnavailable("upstream serverkeygen answer has no key part")


def _san_of(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
