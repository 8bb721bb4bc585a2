"""libcoap's coap-client-openssl as the device, with a revoked certificate: the DTLS
handshake completes and the request is answered 4.03 with the reason (docs/revocation.md
says why at the request); an IDevID its maker's CRL revokes, and an LDevID revoked in the
CA's store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.conftest import require
from tests.crl_util import make_crl, write_crl
from tests.integration.coaps_fixtures import Deployment, make_deployment, running_coaps
from tests.interop.libcoap_util import Exchange, coap_client, openssl_csr

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]
require("coap-client-openssl", "EST-coaps with libcoap's client (Debian: libcoap3-bin)")
require("openssl", "openssl makes the device's CSRs")

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


async def sen(
    origin: str,
    deployment: Deployment,
    cert: Path,
    key: Path,
    csr: Path,
    op: str = "sen",
    out: Path | None = None,
) -> Exchange:
    extra: list[str | Path] = ["-o", out] if out is not None else []
    return await coap_client(
        f"{origin}/.well-known/est/{op}",
        cert,
        key,
        deployment.paths.ca_cert,
        "-m",
        "post",
        "-t",
        "286",
        "-f",
        csr,
        *extra,
    )


def refused_revoked(exchange: Exchange) -> str:
    assert exchange.code == "4.03", exchange.describe()
    line = exchange.stderr.strip().splitlines()[-1]
    assert line.startswith("4.03 ") and "is revoked (keyCompromise)" in line, exchange.stderr
    return line


async def test_libcoap_device_with_revoked_idevid_or_ldevid_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    good, stolen = deployment.device("lib-good"), deployment.device("lib-stolen")
    maker = deployment.maker
    crl = make_crl(maker.certificate, maker.private_key, [(stolen.certificate, KEY_COMPROMISE)])
    async with running_coaps(deployment) as run:
        run.ca.revocation.add_crl_files([write_crl(tmp_path / "maker.crl", crl)])
        csr, _ = await openssl_csr(tmp_path, "stolen", "/serialNumber=lib-stolen")
        line = refused_revoked(
            await sen(run.origin, deployment, stolen.cert_path, stolen.key_path, csr)
        )
        assert "serialNumber=lib-stolen" in line

        # the good device enrolls, then its LDevID is revoked in the store: sren refused
        csr, key = await openssl_csr(tmp_path, "good", "/serialNumber=lib-good")
        done = await sen(
            run.origin, deployment, good.cert_path, good.key_path, csr, out=tmp_path / "good.p7"
        )
        assert done.code == "2.04", done.describe()
        issued = next(
            c
            for c in pkcs7.load_der_pkcs7_certificates((tmp_path / "good.p7").read_bytes())
            if c.issuer == run.ca.ca_certificate.subject
        )
        ldevid = tmp_path / "ldevid.pem"
        ldevid.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
        run.ca.store.revoke(
            issued.serial_number, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="test"
        )
        renew, _ = await openssl_csr(tmp_path, "renew", "/serialNumber=lib-good", key=key)
        refused_revoked(await sen(run.origin, deployment, ldevid, key, renew, op="sren"))
