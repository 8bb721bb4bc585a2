"""Revoked client certificates refused on both fronts of the CA, over real sockets.

Where: at the request, not in the (D)TLS handshake (docs/revocation.md says why): a
revoked device completes the handshake and every operation is answered 4.03 / 403 with
a diagnostic naming the certificate and the reason. CRLs are built in the test with
cryptography's builder and given as files, as an operator gives `serve --crl FILE`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from estcoap.client import EstClient, EstClientError, generate_key
from estcoap.https import start_https_server
from tests.crl_util import load_ca_key, make_crl, write_crl
from tests.integration.coaps_fixtures import (
    Deployment,
    make_deployment,
    running_coaps,
    write_identity,
)
from tests.integration.https_fixtures import PASSWORD, USER, running

pytestmark = pytest.mark.timeout(90)

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


def maker_crl(deployment: Deployment, revoked=(), number: int = 1, key=None) -> Path:
    maker = deployment.maker
    crl = make_crl(maker.certificate, key or maker.private_key, revoked, number=number)
    return write_crl(deployment.root / "maker.crl", crl)


async def test_revoked_ldevid_cannot_sren_but_idevid_enrolls_afresh(deployment: Deployment) -> None:
    device = deployment.device("dev-r1")
    async with running_coaps(deployment) as run:
        async with run.client(device) as est:
            issued = await est.provision()
        ldevid = write_identity(deployment.root, "ldevid", issued.certificate, issued.private_key)
        ca_cert, ca_key = load_ca_key(deployment.paths.dir)
        ca_crl = make_crl(ca_cert, ca_key, [(issued.certificate, KEY_COMPROMISE)])
        run.ca.revocation.add_crl_files([write_crl(deployment.root / "ca.crl", ca_crl)])

        async with run.client(ldevid) as est:
            with pytest.raises(EstClientError) as refused:
                await est.reenroll()
        text = str(refused.value)
        assert "4.03" in text and "is revoked (keyCompromise)" in text
        assert f"{issued.certificate.serial_number:x}" in text
        # nor may it enroll with it as its credential
        async with run.client(ldevid) as est:
            with pytest.raises(EstClientError, match=r"4\.03.*revoked \(keyCompromise\)"):
                await est.enroll(key=generate_key(), subject=device.subject())

        # the device still holds its IDevID, which the maker did not revoke: policy lets
        # it enroll afresh
        async with run.client(device) as est:
            fresh = await est.provision()
        assert fresh.certificate.serial_number != issued.certificate.serial_number


async def test_maker_crl_refuses_idevid_at_sen_and_reloads(deployment: Deployment) -> None:
    device, other = deployment.device("dev-r2"), deployment.device("dev-r3")
    crl_path = maker_crl(deployment)  # nothing revoked yet
    async with running_coaps(deployment) as run:
        run.ca.revocation.add_crl_files([crl_path])
        async with run.client(device) as est:
            await est.provision()

        # the maker revokes the IDevID: the next request sees the new file, no restart
        maker_crl(deployment, [(device.certificate, KEY_COMPROMISE)], number=2)
        async with run.client(device) as est:
            with pytest.raises(EstClientError) as refused:
                await est.enroll(key=generate_key(), subject=device.subject())
        assert "4.03" in str(refused.value)
        assert "serialNumber=dev-r2" in str(refused.value)
        assert "is revoked (keyCompromise)" in str(refused.value)
        async with run.client(other) as est:  # the maker's other devices are fine
            await est.enroll(key=generate_key(), subject=other.subject())

        # a forged CRL (another key under the maker's name): refused loudly, and the
        # maker's devices are refused until a good one is back (fail closed)
        forger = generate_key()
        maker_crl(deployment, number=3, key=forger)
        async with run.client(other) as est:
            with pytest.raises(EstClientError) as closed:
                await est.enroll(key=generate_key(), subject=other.subject())
        assert "4.03" in str(closed.value) and "cannot check revocation" in str(closed.value)
        assert "bad signature" in str(closed.value)
        maker_crl(deployment, [(device.certificate, KEY_COMPROMISE)], number=4)
        async with run.client(other) as est:
            await est.enroll(key=generate_key(), subject=other.subject())


async def test_revoked_certificate_cannot_simplereenroll_over_https(ca_dir: Path) -> None:
    async with running(ca_dir) as env:
        key = generate_key()
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            cert = (await est.enroll(key=key, subject="CN=revoked-later"))[0]
        ca_cert, ca_key = load_ca_key(ca_dir)
        crl = make_crl(ca_cert, ca_key, [(cert, KEY_COMPROMISE)])
        env.ca.revocation.add_crl_files([write_crl(ca_dir / "ca.crl", crl)])
        async with EstClient(env.url, trust=env.paths.ca_cert, cert=cert, key=key) as est:
            with pytest.raises(EstClientError) as refused:
                await est.reenroll()
        assert "403" in str(refused.value)
        assert "is revoked (keyCompromise)" in str(refused.value)
        # a revoked certificate is refused even beside a good password
        async with EstClient(
            env.url, trust=env.paths.ca_cert, cert=cert, key=key, user=USER, password=PASSWORD
        ) as est:
            with pytest.raises(EstClientError, match=r"403.*revoked"):
                await est.enroll(key=generate_key(), subject="CN=revoked-later")


async def test_revoked_in_the_store_refused_on_both_fronts(deployment: Deployment) -> None:
    """What `ca revoke` records (Store.revoke) is refused at once: sren over CoAPs,
    simplereenroll over HTTPS, whichever front the certificate comes back on."""
    device = deployment.device("dev-r4")
    async with running_coaps(deployment) as run:
        async with run.client(device) as est:
            issued = await est.provision()
        ldevid = write_identity(deployment.root, "ldevid", issued.certificate, issued.private_key)
        run.ca.store.revoke(
            issued.certificate.serial_number,
            reason=KEY_COMPROMISE,
            invalidity_date=None,
            revoked_by="test",
        )
        async with run.client(ldevid) as est:
            with pytest.raises(EstClientError) as refused:
                await est.reenroll()
        assert refused.value.status == "4.03"
        assert "is revoked (keyCompromise)" in refused.value.diagnostic
        https = await start_https_server(
            run.ca,
            "127.0.0.1",
            0,
            cert_chain=deployment.paths.server_cert,
            key=deployment.paths.server_key,
        )
        try:
            async with EstClient(
                https.url,
                trust=deployment.paths.ca_cert,
                cert=ldevid.cert_path,
                key=ldevid.key_path,
            ) as est:
                with pytest.raises(EstClientError) as refused:
                    await est.reenroll()
        finally:
            await https.close()
        assert refused.value.status == "403"
        assert "is revoked (keyCompromise)" in refused.value.diagnostic
        # its IDevID still enrolls the device afresh
        async with run.client(device) as est:
            await est.provision()
