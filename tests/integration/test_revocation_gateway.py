"""The gateway refuses revoked devices: CoAPs device -> gateway (RA) -> HTTPS -> LocalCA.

Two places refuse, and both are shown: the gateway itself, against the CRLs it was given
(a maker's for IDevIDs), before anything goes upstream; and the upstream CA, for a
renewal of a certificate it revoked (it sees only the RA, so it checks the newest
certificate it issued to the subject), whose 403 the device gets as 4.03.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from estcoap.ca import LocalCA
from estcoap.ca.ra import issue_ra
from estcoap.client import EstClient, EstClientError, generate_key
from estcoap.gateway import Gateway, UpstreamSettings, open_upstream, start_gateway
from estcoap.https import start_https_server
from estcoap.revocation import RevocationChecker
from tests.crl_util import load_ca_key, make_crl, write_crl
from tests.integration.coaps_fixtures import Deployment, Device, make_deployment, write_identity

pytestmark = pytest.mark.timeout(90)

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


@contextlib.asynccontextmanager
async def ca_behind_gateway(deployment: Deployment) -> AsyncIterator[tuple[LocalCA, Gateway]]:
    paths = deployment.paths
    ca = LocalCA.open(paths.dir, trust_clients=[deployment.maker.certificate])
    https = await start_https_server(
        ca, "127.0.0.1", 0, cert_chain=paths.server_cert, key=paths.server_key
    )
    ra = issue_ra(paths.dir, name="revocation gateway")
    upstream = open_upstream(
        UpstreamSettings(
            url=https.url,
            trust=[ca.ca_certificate],
            ra_chain=[ra.certificate, ca.ca_certificate],
            ra_key=ra.key,
        ),
        trust_clients=[deployment.maker.certificate],
    )
    gateway = await start_gateway(
        upstream, [("127.0.0.1", 0)], cert_chain=paths.server_cert, key=paths.server_key
    )
    try:
        yield ca, gateway
    finally:
        await gateway.close()
        await https.close()
        ca.close()


def device_client(deployment: Deployment, device: Device, url: str) -> EstClient:
    return EstClient(
        url, trust=deployment.paths.ca_cert, cert=device.cert_path, key=device.key_path
    )


async def test_gateway_refuses_device_in_its_crl(deployment: Deployment) -> None:
    device, other = deployment.device("gw-r1"), deployment.device("gw-r2")
    maker = deployment.maker
    crl = make_crl(maker.certificate, maker.private_key, [(device.certificate, KEY_COMPROMISE)])
    crl_path = write_crl(deployment.root / "maker.crl", crl)
    async with ca_behind_gateway(deployment) as (ca, gateway):
        upstream = gateway.upstream
        upstream.revocation = RevocationChecker(upstream.client_trust_anchors(), [crl_path])
        issued_before = len(ca.store.issued_list())
        async with device_client(deployment, device, gateway.url) as est:
            with pytest.raises(EstClientError) as refused:
                await est.enroll(key=generate_key(), subject=device.subject())
        assert refused.value.status == "4.03"
        assert "serialNumber=gw-r1" in refused.value.diagnostic
        assert "is revoked (keyCompromise)" in refused.value.diagnostic
        assert len(ca.store.issued_list()) == issued_before  # nothing went upstream
        async with device_client(deployment, other, gateway.url) as est:
            await est.provision()


async def test_upstream_refuses_renewal_of_what_it_revoked(deployment: Deployment) -> None:
    device = deployment.device("gw-r3")
    async with ca_behind_gateway(deployment) as (ca, gateway):
        async with device_client(deployment, device, gateway.url) as est:
            issued = await est.provision()
        ldevid = write_identity(deployment.root, "ldevid", issued.certificate, issued.private_key)
        ca_cert, ca_key = load_ca_key(deployment.paths.dir)
        ca_crl = make_crl(ca_cert, ca_key, [(issued.certificate, KEY_COMPROMISE)])
        ca.revocation.add_crl_files([write_crl(deployment.root / "ca.crl", ca_crl)])
        async with device_client(deployment, ldevid, gateway.url) as est:
            with pytest.raises(EstClientError) as refused:
                await est.reenroll()
        assert refused.value.status == "4.03"
        assert "upstream 403" in refused.value.diagnostic
        assert "is revoked (keyCompromise)" in refused.value.diagnostic

        # given the upstream CA's CRL, the gateway refuses it itself, without asking
        upstream = gateway.upstream
        upstream.revocation = RevocationChecker(
            upstream.client_trust_anchors(), [deployment.root / "ca.crl"]
        )
        async with device_client(deployment, ldevid, gateway.url) as est:
            with pytest.raises(EstClientError) as refused:
                await est.reenroll()
        assert refused.value.status == "4.03"
        assert "upstream" not in refused.value.diagnostic
        assert "is revoked (keyCompromise)" in refused.value.diagnostic
