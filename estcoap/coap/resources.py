"""One aiocoap resource per EST-coaps operation (RFC 9148 s4.1-4.5).

Each resource only translates: CoAP request -> typed service call -> CoAP
response. Policy lives in the service; codes come from codes.py.
"""

from __future__ import annotations

import logging
import time

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.resource import Resource

from .. import service as svc
from ..codec.errors import CodecError
from ..codec.multipart import encode_multipart_core
from ..codec.operations import EST_ROOT_RT, ContentFormat, Operation, OperationSpec
from ..codec.pkcs10 import parse_csr
from ..observe.hooks import NO_HOOK, RequestHook
from .block1 import Block1Assembler, Block1Continue, Block1Refusal
from .codes import code_for, retry_after_for
from .peer import peer_of

log = logging.getLogger(__name__)

EMPTY_CSRATTRS = b"\x30\x00"


def error_response(code: Code, diagnostic: str) -> Message:
    return Message(code=code, payload=diagnostic.encode("utf-8"))


class EstRootResource(Resource):
    """The EST root (rt=ace.est): a link target for discovery, no methods."""

    takes_body = False

    def __init__(self, advertise: bool):
        super().__init__()
        self.advertise = advertise

    def get_link_description(self):
        return {"rt": EST_ROOT_RT} if self.advertise else None


class EstResource(Resource):
    def __init__(
        self,
        spec: OperationSpec,
        service: svc.EstService,
        label: str | None,
        assembler: Block1Assembler,
        advertise: bool,
        hook: RequestHook = NO_HOOK,
    ):
        super().__init__()
        self.spec = spec
        self.hook = hook
        self.service = service
        self.label = label
        self.assembler = assembler
        self.advertise = advertise
        # A service that forwards to a CA which checks the signature anyway (the gateway's
        # Upstream) says so; everything else gets the CSR checked here.
        self.check_csr_signature = service.front_checks_csr_signature
        # Only the enrollment operations read a body (crts and att are GETs).
        self.takes_body = spec.method == "POST"

    def get_link_description(self):
        if not self.advertise:
            return None
        return {"rt": self.spec.rt, "ct": self.spec.link_ct}

    async def render_to_pipe(self, pipe):
        request = pipe.request
        try:
            whole = self.assembler.feed(request, (self.label, self.spec.short_name))
            response = await self._respond(whole)
            response.opt.block1 = whole.opt.block1
        except (Block1Continue, Block1Refusal) as answer:
            response = answer.to_message()
        pipe.add_response(response, is_last=True)

    async def _respond(self, request: Message) -> Message:
        """Render, going through aiocoap's Block2 cache only when blocks are involved:
        its cache key costs a deep copy of the request, most answers fit one datagram."""
        if request.opt.block2 is None:
            response = await self.render(request)
            if len(response.payload) <= request.remote.maximum_payload_size:
                return response

            async def rendered() -> Message:
                return response

            return await self._block2.extract_or_insert(request, rendered)
        return await self._block2.extract_or_insert(request, lambda: self.render(request))

    async def render(self, request: Message) -> Message:
        """The answer to a whole request (after Block1, before Block2), reported to the hook
        once: its metrics and its request log line."""
        start = time.perf_counter()
        response = await self._render(request)
        self.hook.request_done(
            self.spec.long_name,
            response.code.dotted,
            time.perf_counter() - start,
            label=self.label,
            address=None,  # the peer's (hostinfo), looked up only if the line is logged
            peer=getattr(request.remote, "front_peer", None),
        )
        return response

    async def _render(self, request: Message) -> Message:
        try:
            return await self._answer(request)
        except (svc.EstError, CodecError) as exc:
            message = error_response(code_for(exc), str(exc))
            max_age = retry_after_for(exc)
            if max_age is not None:
                message.opt.max_age = max_age
            return message
        except Exception as exc:
            # One line per failure; the traceback only when debugging (issue 11: a peer
            # that can trigger a failure must not be able to fill the log with them).
            log.error(
                "EST %s failed: %s: %s",
                self.spec.short_name,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return error_response(Code.INTERNAL_SERVER_ERROR, "internal error")

    async def _answer(self, request: Message) -> Message:
        spec = self.spec
        if request.code.name != spec.method:
            return error_response(Code.METHOD_NOT_ALLOWED, f"use {spec.method}")
        accept = request.opt.accept
        if accept is not None and int(accept) not in [int(cf) for cf in spec.response_formats]:
            wanted = spec.link_ct
            return error_response(Code.NOT_ACCEPTABLE, f"Accept must be one of {wanted}")
        chosen = ContentFormat(int(accept)) if accept is not None else spec.default_format
        peer = peer_of(request, self.service.client_trust)

        if spec.operation is Operation.CACERTS:
            certs = await self.service.cacerts(self.label)
            return _certificates(certs, chosen, Code.CONTENT, whole_set=True)
        if spec.operation is Operation.CSRATTRS:
            attrs = await self.service.csrattrs(self.label, peer)
            if attrs.der == EMPTY_CSRATTRS:
                return error_response(Code.NOT_FOUND, "no CSR attributes for this CA")
            return Message(
                code=Code.CONTENT, payload=attrs.der, content_format=int(ContentFormat.CSRATTRS)
            )

        if request.opt.content_format is None or int(request.opt.content_format) != int(
            ContentFormat.PKCS10
        ):
            return error_response(
                Code.UNSUPPORTED_CONTENT_FORMAT, "Content-Format must be 286 (application/pkcs10)"
            )
        csr = parse_csr(request.payload, check_signature=self.check_csr_signature)
        enroll = svc.EnrollRequest(csr=csr, peer=peer, label=self.label)
        if spec.operation is Operation.SIMPLEENROLL:
            return _issued(await self.service.enroll(enroll), chosen)
        if spec.operation is Operation.SIMPLEREENROLL:
            return _issued(await self.service.reenroll(enroll), chosen)
        result = await self.service.serverkeygen(enroll)
        if isinstance(result, svc.Pending):
            return _pending(result)
        return _key_and_certificate(result, single=spec.operation is Operation.SERVERKEYGEN_CERT)


def _pending(pending: svc.Pending) -> Message:
    # RFC 9148 s4.7: 5.03 with Max-Age; an absent Max-Age would mean 60 s.
    message = error_response(Code.SERVICE_UNAVAILABLE, "request pending; retry after Max-Age")
    message.opt.max_age = max(0, int(pending.retry_after))
    return message


def _issued(result: svc.Certificates | svc.Pending, chosen: ContentFormat) -> Message:
    if isinstance(result, svc.Pending):
        return _pending(result)
    return _certificates(result, chosen, Code.CHANGED, whole_set=False)


def _certificates(
    certs: svc.Certificates, chosen: ContentFormat, code: Code, *, whole_set: bool
) -> Message:
    """281 carries the whole set; 287 one certificate: the issued one, or the only CA cert."""
    if chosen is ContentFormat.PKIX_CERT:
        if whole_set and len(certs.certificates) != 1:
            return error_response(
                Code.NOT_ACCEPTABLE,
                f"{len(certs.certificates)} CA certificates cannot be one pkix-cert; ask for 281",
            )
        der = certs.certificate_der(0)
        return Message(code=code, payload=der, content_format=int(ContentFormat.PKIX_CERT))
    return Message(
        code=code, payload=certs.pkcs7_der, content_format=int(ContentFormat.PKCS7_CERTS_ONLY)
    )


def _key_and_certificate(result: svc.KeyAndCertificate, *, single: bool) -> Message:
    key_format = (
        ContentFormat.PKCS8
        if result.key_format is svc.KeyFormat.PKCS8
        else ContentFormat.PKCS7_SERVER_KEYGEN
    )
    if single:
        cert_part = (
            int(ContentFormat.PKIX_CERT),
            result.certificates.certificate_der(0),
        )
    else:
        cert_part = (int(ContentFormat.PKCS7_CERTS_ONLY), result.certificates.pkcs7_der)
    payload = encode_multipart_core([(int(key_format), result.private_key), cert_part])
    return Message(
        code=Code.CHANGED, payload=payload, content_format=int(ContentFormat.MULTIPART_CORE)
    )
