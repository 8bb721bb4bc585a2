"""The client refuses a revoked server, after the (D)TLS handshake and before sending
anything: from CRL files it is given (crls= / --crl) and from the server certificate's
own CRL distribution point or OCSP responder (check_revocation= / --check-revocation).

The CRL and OCSP answers come from a small HTTP server in the test, signed with the CA's
key by cryptography's builders, as `serve` would publish them.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

from estcoap.ca import CaPaths
from estcoap.client import EstClient, EstClientError, generate_key
from tests.crl_util import NOW, load_ca_key, make_crl, write_crl
from tests.integration.coaps_fixtures import make_deployment, running_coaps
from tests.integration.https_fixtures import PASSWORD, USER, running

pytestmark = pytest.mark.timeout(90)
KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@dataclass
class Publisher:
    """Serves /ca.crl and an OCSP responder at /ocsp for the CA, over plain HTTP."""

    paths: CaPaths
    revoked: dict[int, x509.ReasonFlags] = field(default_factory=dict)
    url: str = ""
    asked: list[str] = field(default_factory=list)

    async def crl(self, request: web.Request) -> web.Response:
        self.asked.append("crl")
        cert, key = load_ca_key(self.paths.dir)
        crl = make_crl(cert, key, list(self.revoked.items()))
        return web.Response(body=crl.public_bytes(serialization.Encoding.DER))

    async def ocsp(self, request: web.Request) -> web.Response:
        self.asked.append("ocsp")
        asked = ocsp.load_der_ocsp_request(await request.read())
        cert, key = load_ca_key(self.paths.dir)
        server = x509.load_pem_x509_certificate(self.paths.server_cert.read_bytes())
        assert asked.serial_number == server.serial_number
        reason = self.revoked.get(server.serial_number)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=server,
                issuer=cert,
                algorithm=hashes.SHA1(),
                cert_status=ocsp.OCSPCertStatus.REVOKED if reason else ocsp.OCSPCertStatus.GOOD,
                this_update=NOW - datetime.timedelta(minutes=1),
                next_update=NOW + datetime.timedelta(days=1),
                revocation_time=NOW - datetime.timedelta(minutes=1) if reason else None,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        )
        nonce = asked.extensions.get_extension_for_class(x509.OCSPNonce).value
        response = builder.add_extension(nonce, critical=False).sign(key, hashes.SHA256())
        return web.Response(
            body=response.public_bytes(serialization.Encoding.DER),
            content_type="application/ocsp-response",
        )


@contextlib.asynccontextmanager
async def publishing(paths: CaPaths) -> AsyncIterator[Publisher]:
    publisher = Publisher(paths)
    app = web.Application()
    app.router.add_get("/ca.crl", publisher.crl)
    app.router.add_post("/ocsp", publisher.ocsp)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    publisher.url = f"http://127.0.0.1:{port}"
    try:
        yield publisher
    finally:
        await runner.cleanup()


def reissue_server_cert(paths: CaPaths, *, crl_url: str | None, ocsp_url: str | None) -> int:
    """The server certificate again, same key and names, carrying the pointers."""
    old = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    ca_cert, ca_key = load_ca_key(paths.dir)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(old.not_valid_after_utc)
    )
    for ext in old.extensions:
        if not isinstance(ext.value, x509.CRLDistributionPoints | x509.AuthorityInformationAccess):
            builder = builder.add_extension(ext.value, ext.critical)
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if ocsp_url:
        aia = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([aia]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.serial_number


def server_crl(paths: CaPaths, serial: int | None, name: str = "server.crl") -> Path:
    ca_cert, ca_key = load_ca_key(paths.dir)
    revoked = [(serial, KEY_COMPROMISE)] if serial is not None else []
    return write_crl(paths.dir.parent / name, make_crl(ca_cert, ca_key, revoked))


def user_client(env, **options: object) -> EstClient:  # type: ignore[no-untyped-def]
    return EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD, **options)  # type: ignore[arg-type]


async def test_https_crl_file_refuses_revoked_server_before_sending(ca_dir: Path) -> None:
    paths = CaPaths.of(ca_dir)
    serial = x509.load_pem_x509_certificate(paths.server_cert.read_bytes()).serial_number
    async with running(ca_dir) as env:
        issued = len(env.ca.store.issued_list())
        async with user_client(env, crls=[server_crl(paths, serial)]) as est:
            with pytest.raises(EstClientError) as refused:
                await est.enroll(key=generate_key(), subject="CN=should-not-be-sent")
        text = str(refused.value)
        assert "server certificate" in text and "is revoked (keyCompromise)" in text
        assert "\n" not in text
        assert len(env.ca.store.issued_list()) == issued  # nothing reached the CA
        async with user_client(env, crls=[server_crl(paths, None, "clean.crl")]) as est:
            assert await est.cacerts()


async def test_https_check_revocation_by_crl_distribution_point_and_ocsp(ca_dir: Path) -> None:
    paths = CaPaths.of(ca_dir)
    async with publishing(paths) as publisher:
        serial = reissue_server_cert(paths, crl_url=f"{publisher.url}/ca.crl", ocsp_url=None)
        async with running(ca_dir) as env:
            async with user_client(env, check_revocation=True) as est:
                assert await est.cacerts()  # not revoked: fine
            publisher.revoked[serial] = KEY_COMPROMISE
            async with user_client(env, check_revocation=True) as est:
                with pytest.raises(EstClientError, match=r"is revoked \(keyCompromise\)"):
                    await est.cacerts()
        assert publisher.asked == ["crl", "crl"]

        serial = reissue_server_cert(paths, crl_url=None, ocsp_url=f"{publisher.url}/ocsp")
        async with running(ca_dir) as env:
            async with user_client(env, check_revocation=True) as est:
                assert await est.cacerts()
            publisher.revoked[serial] = KEY_COMPROMISE
            async with user_client(env, check_revocation=True) as est:
                with pytest.raises(EstClientError, match=r"is revoked \(keyCompromise\)"):
                    await est.cacerts()
        assert publisher.asked[2:] == ["ocsp", "ocsp"]
    # the responder gone: no answer is a refusal, not a pass
    async with running(ca_dir) as env:
        async with user_client(env, check_revocation=True, timeout=5) as est:
            with pytest.raises(EstClientError, match="cannot check the revocation"):
                await est.cacerts()


async def test_coaps_client_refuses_revoked_server_after_dtls(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    device = deployment.device("dev-c1")
    paths = deployment.paths
    serial = x509.load_pem_x509_certificate(paths.server_cert.read_bytes()).serial_number
    async with running_coaps(deployment) as run:
        async with run.client(device, crls=[server_crl(paths, serial)]) as est:
            with pytest.raises(EstClientError, match=r"server certificate .* is revoked"):
                await est.cacerts()
        async with run.client(device, crls=[server_crl(paths, None, "clean.crl")]) as est:
            assert await est.cacerts()
