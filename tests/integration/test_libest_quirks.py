"""Bodies as libEST's example server writes them: the base64 CSR attributes end with the
C string's NUL terminator. Our client and the gateway take them (RFC 8951 leniency), over
real TLS from a scripted upstream; a NUL inside the body is still refused."""

from __future__ import annotations

from pathlib import Path

import aiocoap
import pytest
from aiocoap.numbers.codes import Code
from aiohttp import web

from estcoap.client import EstClient, EstClientError
from estcoap.codec import b64
from estcoap.codec.csrattrs import decode_csrattrs
from estcoap.codec.operations import MEDIA_TYPES, ContentFormat
from tests.integration.coaps_fixtures import Deployment, make_deployment
from tests.integration.gateway_fixtures import (
    CSRATTRS_DER,
    device_context,
    running_gateway,
    scripted_upstream,
)

pytestmark = pytest.mark.timeout(60)
CSRATTRS_TYPE = MEDIA_TYPES[ContentFormat.CSRATTRS]


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


async def nul_terminated(request: web.Request, body: bytes) -> web.Response:
    return web.Response(body=b64.encode(CSRATTRS_DER) + b"\0", content_type=CSRATTRS_TYPE)


async def nul_inside(request: web.Request, body: bytes) -> web.Response:
    text = b64.encode(CSRATTRS_DER)
    return web.Response(body=text[:8] + b"\0" + text[8:], content_type=CSRATTRS_TYPE)


async def test_client_reads_nul_terminated_csrattrs(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        upstream.script["csrattrs"] = nul_terminated
        async with EstClient(upstream.url, trust=deployment.paths.ca_cert) as est:
            items = await est.csrattrs()
            upstream.script["csrattrs"] = nul_inside
            with pytest.raises(EstClientError, match="NUL byte before its end"):
                await est.csrattrs()
    assert items == decode_csrattrs(CSRATTRS_DER) and items


async def test_gateway_passes_nul_terminated_csrattrs_on(deployment: Deployment) -> None:
    async with scripted_upstream(deployment) as upstream:
        upstream.script["csrattrs"] = nul_terminated
        async with running_gateway(deployment, upstream.url) as gateway:
            ctx = await device_context(deployment, deployment.device("dev"))
            try:
                uri = f"{gateway.url}/att"
                passed = await ctx.request(aiocoap.Message(code=Code.GET, uri=uri)).response
                upstream.script["csrattrs"] = nul_inside
                refused = await ctx.request(aiocoap.Message(code=Code.GET, uri=uri)).response
            finally:
                await ctx.shutdown()
    assert passed.code == Code.CONTENT and passed.payload == CSRATTRS_DER
    assert refused.code == Code.BAD_GATEWAY and b"NUL" in refused.payload
