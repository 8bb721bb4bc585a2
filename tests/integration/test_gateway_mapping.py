"""The gateway's RFC 9148 s5 mappings, in one process but over real DTLS and real TLS:
a device (aiocoap on our DTLS) -> the gateway -> a scripted RFC 7030 upstream."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import socket
import ssl
import time
from pathlib import Path

import aiocoap
import aiohttp
import cbor2
import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.client import EstClient
from estcoap.codec import b64, pkcs7
from estcoap.codec.multipart import encode_multipart_mixed
from estcoap.codec.operations import HTTP_PKCS8, MEDIA_TYPES, ContentFormat
from estcoap.gateway import Gateway, UpstreamSettings, open_upstream, start_proxy
from estcoap.https import user_from_arg
from tests.integration.coaps_fixtures import Deployment, make_deployment
from tests.integration.gateway_fixtures import (
    CERTS_ONLY,
    CSRATTRS_DER,
    ScriptedUpstream,
    base64_response,
    device_context,
    new_csr,
    running_gateway,
    scripted_upstream,
    spki,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


class Device:
    """One DTLS session to the gateway; request() sends a CoAP request and waits."""

    def __init__(self, ctx: aiocoap.Context, gateway: Gateway) -> None:
        self.ctx = ctx
        self.base = gateway.url

    async def request(self, code: Code, op: str, **options: object) -> aiocoap.Message:
        message = aiocoap.Message(code=code, uri=f"{self.base}/{op}", **options)
        return await self.ctx.request(message).response

    async def enroll(self, csr: bytes, op: str = "sen", **options: object) -> aiocoap.Message:
        return await self.request(Code.POST, op, payload=csr, content_format=286, **options)


async def _device(deployment: Deployment, gateway: Gateway, name: str = "dev") -> Device:
    ctx = await device_context(deployment, deployment.device(name))
    return Device(ctx, gateway)


def _ops(upstream: ScriptedUpstream) -> list[str]:
    return [seen.path.rsplit("/", 1)[1] for seen in upstream.seen]


async def test_enroll_forwards_wrapped_base64_as_the_ra(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        ra = deployment.paths.server_cert  # the CA's server cert doubles as a client cert here
        ra_chain = x509.load_pem_x509_certificates(ra.read_bytes())
        ra_key = serialization.load_pem_private_key(
            deployment.paths.server_key.read_bytes(), password=None
        )
        async with running_gateway(
            deployment, upstream.url, ra_chain=ra_chain, ra_key=ra_key
        ) as gateway:
            device = await _device(deployment, gateway)
            try:
                csr, key = new_csr("CN=wrapped")
                answer = await device.enroll(csr)
            finally:
                await device.ctx.shutdown()
    assert answer.code == Code.CHANGED
    assert answer.opt.content_format == ContentFormat.PKCS7_CERTS_ONLY
    # certs-only is a SET OF: order is not kept, so look for the device's certificate
    issued = pkcs7.decode_certs_only(answer.payload)
    assert any(spki(c) == spki(key) for c in issued)
    (post,) = [s for s in upstream.seen if s.method == "POST"]
    assert post.path == "/.well-known/est/simpleenroll"
    assert post.headers["Content-Type"] == "application/pkcs10"
    assert post.headers["Content-Transfer-Encoding"] == "base64"
    lines = post.body.decode().splitlines()
    assert len(lines) > 1 and all(len(line) <= 64 for line in lines)
    assert all(len(line) == 64 for line in lines[:-1])
    assert b64.decode(post.body) == csr
    assert post.client_subject == "CN=127.0.0.1"  # upstream saw the RA certificate


async def test_lax_upstream_unwrapped_base64_no_cte_and_287(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:

        async def lax(request: web.Request, body: bytes) -> web.Response:
            cert = upstream.issue(b64.decode(body))
            # CA first, one unbroken base64 line, no Content-Transfer-Encoding.
            der = pkcs7.encode_certs_only([upstream.ca_certificate, cert])
            lax.der = der  # type: ignore[attr-defined]
            return base64_response(der, CERTS_ONLY, wrap=False, cte=False)

        upstream.script["simpleenroll"] = lax
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                csr, key = new_csr("CN=lax")
                as_287 = await device.enroll(csr, accept=287)
                as_281 = await device.enroll(new_csr("CN=lax2")[0])
            finally:
                await device.ctx.shutdown()
    assert as_287.code == Code.CHANGED and as_287.opt.content_format == 287
    cert = x509.load_der_x509_certificate(as_287.payload)
    assert spki(cert) == spki(key)  # the issued certificate, not the CA listed first
    assert as_281.code == Code.CHANGED and as_281.opt.content_format == 281
    assert as_281.payload == lax.der  # type: ignore[attr-defined]  # the PKCS#7 passed on as sent


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [("7", 7, 7), ("http-date", 118, 121)],
)
async def test_pending_202_becomes_503_with_max_age(
    deployment: Deployment, retry_after: str, low: int, high: int
) -> None:
    async with scripted_upstream(deployment) as upstream:

        async def pending(request: web.Request, body: bytes) -> web.Response:
            value = retry_after
            if value == "http-date":
                value = email.utils.formatdate(time.time() + 120, usegmt=True)
            return web.Response(status=202, text="pending\n", headers={"Retry-After": value})

        upstream.script["simpleenroll"] = pending
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                answer = await device.enroll(new_csr()[0])
            finally:
                await device.ctx.shutdown()
    assert answer.code == Code.SERVICE_UNAVAILABLE
    assert low <= answer.opt.max_age <= high
    assert answer.payload  # a diagnostic


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Code.BAD_REQUEST),
        (401, Code.UNAUTHORIZED),
        (403, Code.FORBIDDEN),
        (404, Code.NOT_FOUND),
        (415, Code.UNSUPPORTED_CONTENT_FORMAT),
        (500, Code.BAD_GATEWAY),
        (503, Code.BAD_GATEWAY),
        (504, Code.BAD_GATEWAY),
    ],
)
async def test_upstream_status_becomes_coap_code(
    deployment: Deployment, status: int, code: Code
) -> None:
    async with scripted_upstream(deployment) as upstream:

        async def refuse(request: web.Request, body: bytes) -> web.Response:
            return web.Response(status=status, text=f"upstream says no ({status})\n")

        upstream.script["simpleenroll"] = refuse
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                answer = await device.enroll(new_csr()[0])
            finally:
                await device.ctx.shutdown()
    assert answer.code == code
    assert f"upstream {status}: upstream says no ({status})".encode() in answer.payload


async def test_garbage_answers_give_502_and_the_gateway_keeps_serving(
    deployment: Deployment,
) -> None:
    async with scripted_upstream(deployment) as upstream:

        async def not_base64(request: web.Request, body: bytes) -> web.Response:
            return web.Response(body=b"<html>oops</html>", content_type="text/html")

        async def not_pkcs7(request: web.Request, body: bytes) -> web.Response:
            return base64_response(b"\x30\x03\x02\x01\x01", CERTS_ONLY)

        async def broken_multipart(request: web.Request, body: bytes) -> web.Response:
            return web.Response(
                body=b"--b\r\nContent-Type: application/pkcs8\r\n\r\nAAAA\r\n",
                headers={"Content-Type": "multipart/mixed; boundary=b"},
            )

        upstream.script.update(
            simpleenroll=not_base64, cacerts=not_pkcs7, serverkeygen=broken_multipart
        )
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                answers = {
                    "sen": await device.enroll(new_csr()[0]),
                    "crts": await device.request(Code.GET, "crts"),
                    "skg": await device.enroll(new_csr()[0], "skg"),
                }
                upstream.script.clear()
                after = await device.enroll(new_csr("CN=after")[0])
            finally:
                await device.ctx.shutdown()
    for op, answer in answers.items():
        assert answer.code == Code.BAD_GATEWAY, op
        assert b"upstream" in answer.payload, (op, answer.payload)
    assert after.code == Code.CHANGED


async def test_slow_upstream_gives_504_and_no_answer_is_replayed(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        release = asyncio.Event()

        async def slow_then_normal(request: web.Request, body: bytes) -> web.Response:
            if b64.decode(body) == slow_csr:
                await release.wait()  # answers only after the gateway gave up
            cert = upstream.issue(b64.decode(body))
            return base64_response(pkcs7.encode_certs_only([cert]), CERTS_ONLY)

        upstream.script["simpleenroll"] = slow_then_normal
        slow_csr, _ = new_csr("CN=slow")
        async with running_gateway(deployment, upstream.url, timeout=0.8, connections=1) as gateway:
            device = await _device(deployment, gateway, "a")
            other = await _device(deployment, gateway, "b")
            try:
                started = time.monotonic()
                slow = asyncio.ensure_future(device.enroll(slow_csr))
                await asyncio.sleep(0.2)
                assert not slow.done()
                timed_out = await slow
                elapsed = time.monotonic() - started
                release.set()  # the late answer arrives on a connection nobody reads
                next_csr, next_key = new_csr("CN=next")
                following = await other.enroll(next_csr)
            finally:
                await device.ctx.shutdown()
                await other.ctx.shutdown()
    assert timed_out.code == Code.GATEWAY_TIMEOUT
    assert b"did not answer" in timed_out.payload
    assert 0.7 < elapsed < 2.0
    assert following.code == Code.CHANGED
    (cert,) = pkcs7.decode_certs_only(following.payload)
    assert spki(cert) == spki(next_key)  # its own answer, not the late one for CN=slow


async def test_slow_device_does_not_block_others(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        release = asyncio.Event()

        async def slow(request: web.Request, body: bytes) -> web.Response:
            await release.wait()
            cert = upstream.issue(b64.decode(body))
            return base64_response(pkcs7.encode_certs_only([cert]), CERTS_ONLY)

        upstream.script["simpleenroll"] = slow
        async with running_gateway(deployment, upstream.url, timeout=5) as gateway:
            a = await _device(deployment, gateway, "a")
            b = await _device(deployment, gateway, "b")
            try:
                waiting = asyncio.ensure_future(a.enroll(new_csr()[0]))
                await asyncio.sleep(0.2)
                started = time.monotonic()
                crts = await b.request(Code.GET, "crts")
                quick = time.monotonic() - started
                release.set()
                enrolled = await waiting
            finally:
                await a.ctx.shutdown()
                await b.ctx.shutdown()
    assert crts.code == Code.CONTENT and quick < 1.0
    assert enrolled.code == Code.CHANGED


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_upstream_down_gives_502_within_a_second(deployment: Deployment) -> None:
    url = f"https://127.0.0.1:{_closed_port()}/.well-known/est"
    async with running_gateway(deployment, url, timeout=5) as gateway:
        assert gateway.warning and "upstream CA" in gateway.warning
        device = await _device(deployment, gateway)
        try:
            started = time.monotonic()
            answer = await device.enroll(new_csr()[0])
            elapsed = time.monotonic() - started
            crts = await device.request(Code.GET, "crts")
        finally:
            await device.ctx.shutdown()
    assert answer.code == Code.BAD_GATEWAY and elapsed < 1.0
    assert b"upstream unavailable" in answer.payload
    assert crts.code == Code.BAD_GATEWAY


async def test_csrattrs_passed_through_and_204_404_become_404(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                passed = await device.request(Code.GET, "att")

                async def empty(request: web.Request, body: bytes) -> web.Response:
                    return web.Response(status=204)

                upstream.script["csrattrs"] = empty
                no_content = await device.request(Code.GET, "att")

                async def missing(request: web.Request, body: bytes) -> web.Response:
                    return web.Response(status=404, text="no csrattrs here\n")

                upstream.script["csrattrs"] = missing
                not_found = await device.request(Code.GET, "att")
            finally:
                await device.ctx.shutdown()
    assert passed.code == Code.CONTENT and passed.payload == CSRATTRS_DER
    assert passed.opt.content_format == ContentFormat.CSRATTRS
    assert no_content.code == Code.NOT_FOUND and no_content.payload
    assert not_found.code == Code.NOT_FOUND and b"no csrattrs here" in not_found.payload


async def test_serverkeygen_multipart_mixed_becomes_62(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                skg = await device.enroll(new_csr("CN=skg")[0], "skg")
                skc = await device.enroll(new_csr("CN=skc")[0], "skc")
            finally:
                await device.ctx.shutdown()
    assert skg.code == Code.CHANGED and skg.opt.content_format == 62
    parts = dict(zip(*[iter(cbor2.loads(skg.payload))] * 2, strict=True))
    assert set(parts) == {284, 281}
    key = serialization.load_der_private_key(parts[284], password=None)
    certs = pkcs7.decode_certs_only(parts[281])
    assert any(spki(c) == spki(key) for c in certs)
    parts = dict(zip(*[iter(cbor2.loads(skc.payload))] * 2, strict=True))
    assert set(parts) == {284, 287}
    cert = x509.load_der_x509_certificate(parts[287])
    key = serialization.load_der_private_key(parts[284], password=None)
    assert spki(cert) == spki(key)  # the device's certificate, not the CA listed first
    assert cert.subject.rfc4514_string() == "CN=skc"


async def test_encrypted_key_280_passes_through_untouched(deployment: Deployment) -> None:
    blob = b"\x30\x80" + bytes(range(256)) * 3  # opaque to the gateway: never parsed
    async with scripted_upstream(deployment) as upstream:

        async def enveloped(request: web.Request, body: bytes) -> web.Response:
            cert = upstream.issue(b64.decode(body))
            payload, content_type = encode_multipart_mixed(
                [
                    (MEDIA_TYPES[ContentFormat.PKCS7_SERVER_KEYGEN], blob),
                    (CERTS_ONLY, pkcs7.encode_certs_only([cert])),
                ]
            )
            return web.Response(body=payload, headers={"Content-Type": content_type})

        upstream.script["serverkeygen"] = enveloped
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                answer = await device.enroll(new_csr()[0], "skg")
            finally:
                await device.ctx.shutdown()
    assert answer.code == Code.CHANGED
    parts = dict(zip(*[iter(cbor2.loads(answer.payload))] * 2, strict=True))
    assert parts[280] == blob


async def test_labels_map_to_upstream_labels(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        labels = {"iot": "factory", "plain": None}
        async with running_gateway(deployment, upstream.url, labels=labels) as gateway:
            device = await _device(deployment, gateway)
            try:
                mapped = await device.enroll(new_csr()[0], "iot/sen")
                default = await device.request(Code.GET, "plain/crts")
                unknown = await device.request(Code.GET, "other/crts")
            finally:
                await device.ctx.shutdown()
    assert mapped.code == Code.CHANGED and default.code == Code.CONTENT
    assert unknown.code == Code.NOT_FOUND
    paths = [s.path for s in upstream.seen]
    assert "/.well-known/est/factory/simpleenroll" in paths
    assert paths.count("/.well-known/est/cacerts") == 2  # at start, and for label "plain"


async def test_pop_checked_by_the_gateway_on_the_device_channel(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        async with running_gateway(deployment, upstream.url, require_pop=True) as gateway:
            device = deployment.device("pop")
            ctx = await device_context(deployment, device)
            try:
                forged = base64.b64encode(b"\x00" * 12)
                refused = await Device(ctx, gateway).enroll(new_csr(challenge=forged)[0])
                no_pop = await Device(ctx, gateway).enroll(new_csr()[0])
            finally:
                await ctx.shutdown()
            async with EstClient(
                gateway.url,
                trust=deployment.paths.ca_cert,
                cert=device.cert_path,
                key=device.key_path,
            ) as est:
                certs = await est.enroll(key=new_csr()[1], subject="CN=proven", pop=True)
    assert refused.code == Code.UNAUTHORIZED and b"proof-of-possession" in refused.payload
    assert no_pop.code == Code.UNAUTHORIZED
    assert certs[0].subject.rfc4514_string() == "CN=proven"
    # Only the proven request reached the upstream (tls-unique does not survive the hop).
    assert _ops(upstream).count("simpleenroll") == 1


async def test_sren_needs_an_upstream_certificate(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway, "idevid")
            try:
                answer = await device.enroll(new_csr("CN=idevid")[0], "sren")
            finally:
                await device.ctx.shutdown()
    assert answer.code == Code.FORBIDDEN and b"upstream CA" in answer.payload
    assert "simplereenroll" not in _ops(upstream)


async def test_connections_are_kept_alive_and_reused(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                for i in range(5):
                    answer = await device.enroll(new_csr(f"CN=keep{i}")[0])
                    assert answer.code == Code.CHANGED
            finally:
                await device.ctx.shutdown()
            assert gateway.upstream.transport.connections_made == 1  # type: ignore[attr-defined]


async def test_pkcs8_answer_media_type_is_mapped(deployment: Deployment) -> None:
    """multipart/mixed parts may come in either order, with or without CTE headers."""
    async with scripted_upstream(deployment) as upstream:

        async def reversed_parts(request: web.Request, body: bytes) -> web.Response:
            from cryptography.hazmat.primitives.asymmetric import ec

            key = ec.generate_private_key(ec.SECP256R1())
            cert = upstream.issue(b64.decode(body), key.public_key())
            key_der = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            text = (
                b"--xyz\r\nContent-Type: "
                + CERTS_ONLY.encode()
                + b"\r\n\r\n"
                + base64.b64encode(pkcs7.encode_certs_only([cert]))
                + b"\r\n"
                + b"--xyz\r\nContent-Type: "
                + HTTP_PKCS8.encode()
                + b"\r\n\r\n"
                + base64.b64encode(key_der)
                + b"\r\n--xyz--\r\n"
            )
            return web.Response(
                body=text, headers={"Content-Type": "multipart/mixed; boundary=xyz"}
            )

        upstream.script["serverkeygen"] = reversed_parts
        async with running_gateway(deployment, upstream.url) as gateway:
            device = await _device(deployment, gateway)
            try:
                answer = await device.enroll(new_csr()[0], "skc")
            finally:
                await device.ctx.shutdown()
    assert answer.code == Code.CHANGED
    parts = dict(zip(*[iter(cbor2.loads(answer.payload))] * 2, strict=True))
    key = serialization.load_der_private_key(parts[284], password=None)
    assert spki(x509.load_der_x509_certificate(parts[287])) == spki(key)


async def test_proxy_maps_timeouts_and_statuses_to_http(deployment: Deployment) -> None:
    """The same Upstream behind the https front: 504 for a slow upstream, 415 kept, 502 for 5xx."""
    async with scripted_upstream(deployment) as upstream:

        async def slow(request: web.Request, body: bytes) -> web.Response:
            await asyncio.sleep(2)
            return web.Response(status=500)

        async def unsupported(request: web.Request, body: bytes) -> web.Response:
            return web.Response(status=415, text="want pkcs10\n")

        async def broken(request: web.Request, body: bytes) -> web.Response:
            return web.Response(status=500, text="database on fire\n")

        upstream.script.update(simpleenroll=slow, csrattrs=unsupported, serverkeygen=broken)
        ca_cert = x509.load_pem_x509_certificate(deployment.paths.ca_cert.read_bytes())
        service = open_upstream(UpstreamSettings(url=upstream.url, trust=[ca_cert], timeout=0.5))
        proxy = await start_proxy(
            service,
            "127.0.0.1",
            0,
            cert_chain=deployment.paths.server_cert,
            key=deployment.paths.server_key,
            users=[user_from_arg("alice:secret")],
        )
        ctx = ssl.create_default_context(cafile=str(deployment.paths.ca_cert))
        body = base64.encodebytes(new_csr()[0])
        token = base64.b64encode(b"alice:secret").decode()
        headers = {"Content-Type": "application/pkcs10", "Authorization": f"Basic {token}"}
        answers = {}
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
                for op in ("simpleenroll", "serverkeygen", "simplereenroll"):
                    async with http.post(f"{proxy.url}/{op}", data=body, headers=headers) as r:
                        answers[op] = (r.status, await r.text())
                async with http.get(f"{proxy.url}/csrattrs", headers=headers) as r:
                    answers["csrattrs"] = (r.status, await r.text())
        finally:
            await proxy.close()
    assert answers["simpleenroll"][0] == 504 and "did not answer" in answers["simpleenroll"][1]
    assert answers["serverkeygen"] == (502, "upstream 500: database on fire\n")
    assert answers["csrattrs"] == (415, "upstream 415: want pkcs10\n")
    # A password user has no certificate to renew: refused before anything is forwarded.
    assert answers["simplereenroll"][0] == 401
    assert "simplereenroll" not in _ops(upstream)
