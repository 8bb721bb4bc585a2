"""Shared pieces of the gateway tests: a scriptable RFC 7030 upstream, the gateway in front
of it, and a device speaking EST-coaps over real DTLS.

The upstream is a small aiohttp server (its own TLS, its own CA key) whose answers a
test can replace per operation, to send what real servers send: unwrapped base64,
no Content-Transfer-Encoding, 202 with an HTTP-date, garbage, or nothing in time.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca.profile import Request, random_serial, sign_end_entity
from estcoap.codec import b64, pkcs7
from estcoap.codec.multipart import encode_multipart_mixed
from estcoap.codec.operations import HTTP_PKCS8, MEDIA_TYPES, ContentFormat
from estcoap.codec.pkcs10 import build_csr, parse_csr
from estcoap.dtls import DtlsClientConfig, create_client_context
from estcoap.gateway import Gateway, UpstreamSettings, open_upstream, start_gateway
from estcoap.https.tls import server_ssl_context
from tests.integration.coaps_fixtures import Deployment, Device

CERTS_ONLY = MEDIA_TYPES[ContentFormat.PKCS7_CERTS_ONLY]
# RFC 7030 A.2: what the upstream answers to /csrattrs unless scripted; passed on as is.
CSRATTRS_DER = (
    Path(__file__).parent.parent / "vectors" / "rfc7030" / "A2-csrattrs-response.der"
).read_bytes()

Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_subject: str | None


@dataclass
class ScriptedUpstream:
    """An EST server that signs with the deployment's CA unless a test scripts an answer."""

    deployment: Deployment
    script: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    @property
    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.deployment.paths.ca_cert.read_bytes())

    def issue(self, csr_der: bytes, public_key: object | None = None) -> x509.Certificate:
        csr = parse_csr(csr_der)
        ca_key = serialization.load_pem_private_key(
            self.deployment.paths.ca_key.read_bytes(), password=None
        )
        return sign_end_entity(
            Request(csr.subject, public_key or csr.public_key, csr.subject_alt_name),  # type: ignore[arg-type]
            ca_cert=self.ca_certificate,
            ca_key=ca_key,  # type: ignore[arg-type]
            serial=random_serial(),
            validity_days=30,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body, subject))
        op = request.match_info["op"]
        handler = self.script.get(op) or getattr(self, f"_default_{op}", None)
        if handler is None:
            return web.Response(status=404, text=f"no {op}\n")
        return await handler(request, body)

    async def _default_cacerts(self, request: web.Request, body: bytes) -> web.Response:
        return base64_response(pkcs7.encode_certs_only([self.ca_certificate]), CERTS_ONLY)

    async def _default_csrattrs(self, request: web.Request, body: bytes) -> web.Response:
        return base64_response(CSRATTRS_DER, MEDIA_TYPES[ContentFormat.CSRATTRS])

    async def _default_simpleenroll(self, request: web.Request, body: bytes) -> web.Response:
        cert = self.issue(b64.decode(body))
        return base64_response(pkcs7.encode_certs_only([cert, self.ca_certificate]), CERTS_ONLY)

    _default_simplereenroll = _default_simpleenroll

    async def _default_serverkeygen(self, request: web.Request, body: bytes) -> web.Response:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(b64.decode(body), key.public_key())
        key_der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = pkcs7.encode_certs_only([self.ca_certificate, cert])  # issued cert not first
        payload, content_type = encode_multipart_mixed([(HTTP_PKCS8, key_der), (CERTS_ONLY, chain)])
        return web.Response(body=payload, headers={"Content-Type": content_type})


def base64_response(
    der: bytes, media_type: str, *, wrap: bool = True, cte: bool = True, status: int = 200
) -> web.Response:
    """A 200 the way RFC 7030 servers write it, or (wrap/cte False) the way lax ones do."""
    text = b64.encode(der) if wrap else base64.b64encode(der)  # one line, no newline
    headers = {"Content-Type": media_type}
    if cte:
        headers["Content-Transfer-Encoding"] = "base64"
    return web.Response(status=status, body=text, headers=headers)


@contextlib.asynccontextmanager
async def scripted_upstream(deployment: Deployment) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(deployment)
    app = web.Application()
    app.router.add_route("*", "/.well-known/est/{op}", upstream.handle)
    app.router.add_route("*", "/.well-known/est/{label}/{op}", upstream.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    paths = deployment.paths
    ctx = server_ssl_context(paths.server_cert, paths.server_key, [upstream.ca_certificate])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"https://127.0.0.1:{port}/.well-known/est"
    try:
        yield upstream
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_gateway(
    deployment: Deployment, upstream_url: str, **settings: object
) -> AsyncIterator[Gateway]:
    """The gateway in this process: devices from the deployment's maker, upstream at the URL."""
    ca_cert = x509.load_pem_x509_certificate(deployment.paths.ca_cert.read_bytes())
    require_pop = bool(settings.pop("require_pop", False))
    service = open_upstream(
        UpstreamSettings(url=upstream_url, trust=[ca_cert], **settings),  # type: ignore[arg-type]
        trust_clients=[deployment.maker.certificate],
        require_pop=require_pop,
    )
    gateway = await start_gateway(
        service,
        [("127.0.0.1", 0)],
        cert_chain=deployment.paths.server_cert,
        key=deployment.paths.server_key,
    )
    try:
        yield gateway
    finally:
        await gateway.close()


async def device_context(deployment: Deployment, device: Device) -> aiocoap.Context:
    config = DtlsClientConfig(
        trust_anchors=[x509.load_pem_x509_certificate(deployment.paths.ca_cert.read_bytes())],
        certificate_chain=[device.certificate],
        private_key=device.key,  # type: ignore[arg-type]
    )
    return await create_client_context(config)


def new_csr(subject: str = "CN=dev", challenge: bytes | None = None) -> tuple[bytes, object]:
    key = ec.generate_private_key(ec.SECP256R1())
    return build_csr(key, x509.Name.from_rfc4514_string(subject), challenge_password=challenge), key


def spki(key_or_cert: object) -> bytes:
    public = key_or_cert.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
