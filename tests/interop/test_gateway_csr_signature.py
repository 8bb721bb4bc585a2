"""The proxy and the coaps gateway leave the CSR signature check to the upstream CA (one
check, not two), which still refuses a CSR whose signature does not verify; the CA's own
front still checks it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.client import EstClient, EstClientError, load_certificates
from estcoap.client.https_transport import HttpsTransport, client_ssl_context
from estcoap.codec import b64
from estcoap.codec.names import parse_name
from estcoap.codec.pkcs10 import build_csr
from estcoap.gateway import Upstream
from tests.interop.gateway_procs import (
    GATEWAY_READY,
    Pki,
    gateway_args,
    make_pki,
    relay_chain,
    serving,
)

pytestmark = pytest.mark.timeout(60)
USER, PASSWORD = "alice", "wonderland"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("sig-pki"))


@pytest.fixture(scope="module")
def urls(pki: Pki) -> Iterator[tuple[str, str]]:
    user = ("--user", f"{USER}:{PASSWORD}")
    with relay_chain("proxy", pki, upstream=user, front=user) as (up, proxy):
        yield up.url, proxy.url


def csr_with_bad_signature() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = bytearray(build_csr(key, x509.Name.from_rfc4514_string("CN=tampered")))
    csr[-3] ^= 0xFF  # inside the signature's s value: still DER, no longer valid
    return bytes(csr)


async def post_csr(pki: Pki, url: str, csr: bytes) -> tuple[int, str]:
    parts = urlsplit(url)
    transport = HttpsTransport(
        parts.hostname or "",
        parts.port or 443,
        root=parts.path,
        ssl_context=client_ssl_context(trust=load_certificates(pki.ca_pem)),
        user=USER,
        password=PASSWORD,
        timeout=20,
    )
    try:
        response = await transport.request(
            "POST", f"{parts.path}/simpleenroll", b64.encode(csr), content_type="application/pkcs10"
        )
    finally:
        await transport.close()
    return response.status, response.body.decode()


def test_the_upstream_service_lets_fronts_skip_the_check() -> None:
    assert Upstream.front_checks_csr_signature is False


async def test_the_proxy_forwards_and_the_upstream_refuses(pki: Pki, urls: tuple[str, str]) -> None:
    _, proxy = urls
    status, text = await post_csr(pki, proxy, csr_with_bad_signature())
    assert status == 400
    # The refusal is the upstream's, passed on: the proxy did not check the signature itself.
    assert text.startswith("upstream 400:") and "signature" in text


async def test_the_ca_front_checks_it_itself(pki: Pki, urls: tuple[str, str]) -> None:
    upstream, _ = urls
    status, text = await post_csr(pki, upstream, csr_with_bad_signature())
    assert status == 400 and "signature does not verify" in text and "upstream" not in text


async def test_the_coaps_gateway_forwards_and_the_upstream_refuses(
    pki: Pki, urls: tuple[str, str]
) -> None:
    upstream, _ = urls
    with serving(gateway_args(pki, upstream), GATEWAY_READY) as gateway:
        async with EstClient(
            gateway.url, trust=pki.ca_pem, cert=pki.device_cert, key=pki.device_key
        ) as est:
            with pytest.raises(EstClientError) as refused:
                await est.enroll(csr_with_bad_signature())
            good = await est.enroll(
                key=ec.generate_private_key(ec.SECP256R1()), subject="serialNumber=device-1,CN=fine"
            )
    assert refused.value.status == "4.00"
    assert refused.value.diagnostic.startswith("upstream 400:")
    assert "signature" in refused.value.diagnostic
    assert good[0].subject == parse_name("serialNumber=device-1,CN=fine")
