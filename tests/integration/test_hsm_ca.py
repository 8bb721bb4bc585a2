"""The CA key in a PKCS#11 token (issue 19), with SoftHSM2 and a throwaway token.

ca init generates the key in the token (sensitive, never extractable) and writes only
the certificate and key.uri; enrollment over CoAPs and HTTPS, re-enrollment,
serverkeygen (with a key package the CA signs), CRLs and OCSP responses are signed in
the token and verify with openssl against ca.pem; a session closed under the server's
feet costs the requests that meet it a 5.03 with Max-Age / 503 with Retry-After, and the
next ones succeed on a re-opened session.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import aiocoap
import aiohttp
import pytest
from aiocoap.numbers.codes import Code
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from estcoap.ca.crl import build_crl
from estcoap.ca.ocsp import OcspResponder, store_lookup
from estcoap.ca.pkcs11key import PIN_ENV, Pkcs11EcKey, key_attributes
from estcoap.ca.signer import read_key_uri
from estcoap.ca.store import Store
from estcoap.client import EstClient
from estcoap.codec.pkcs10 import build_csr
from estcoap.dtls import DtlsClientConfig, create_client_context
from tests.conftest import require
from tests.integration import hsm_fixtures
from tests.integration.coaps_fixtures import running_coaps, write_identity
from tests.integration.https_fixtures import PASSWORD, USER, client_ssl, running

pytestmark = pytest.mark.timeout(120)

OPENSSL = require("openssl", "openssl verifies what the token signed")
MODULE, PIN, TOKEN = hsm_fixtures.MODULE, hsm_fixtures.PIN, hsm_fixtures.TOKEN
token, pin_fixture = hsm_fixtures.token, hsm_fixtures.pin_fixture  # the run's one token
token_ca, deployment_on_token = hsm_fixtures.token_ca, hsm_fixtures.deployment_on_token
openssl_verify, close_all_sessions = hsm_fixtures.openssl_verify, hsm_fixtures.close_all_sessions


def private_key_files(directory: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in directory.rglob("*")
        if path.is_file() and b"PRIVATE KEY-----" in path.read_bytes()
    }


def test_init_keeps_the_ca_key_in_the_token(tmp_path: Path, pin: str) -> None:
    paths = token_ca(tmp_path, "ca-init")
    uri = read_key_uri(paths.dir)
    assert uri is not None and uri.object == "ca-init" and uri.module_path == MODULE
    assert pin not in paths.key_uri.read_text()
    assert not paths.ca_key.exists()
    # The only private key in the directory is the server's TLS key, not the CA's.
    assert set(private_key_files(paths.dir)) == {"server.key"}
    server_key = serialization.load_pem_private_key(paths.server_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    assert server_key.public_key() != ca_cert.public_key()
    attributes = key_attributes(uri, MODULE, pin)
    assert attributes == {
        "sensitive": True,
        "extractable": False,
        "never_extractable": True,
        "always_sensitive": True,
    }
    server = x509.load_pem_x509_certificates(paths.server_cert.read_bytes())[0]
    openssl_verify(paths.ca_cert, server, tmp_path)
    # The same label again: refused, the token's key is never replaced.
    with pytest.raises(ValueError, match="already holds a key"):
        token_ca(tmp_path / "again", "ca-init")


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-3072"])
def test_init_other_key_types(tmp_path: Path, pin: str, key_type: str) -> None:
    paths = token_ca(tmp_path, f"ca-{key_type}", key_type)
    ca_cert, key = paths.load_ca()
    assert key.public_key() == ca_cert.public_key()
    server = x509.load_pem_x509_certificates(paths.server_cert.read_bytes())[0]
    openssl_verify(paths.ca_cert, server, tmp_path)


async def test_coaps_enroll_reenroll_serverkeygen_signed_in_the_token(
    tmp_path: Path, pin: str
) -> None:
    deployment = deployment_on_token(tmp_path, "ca-coaps")
    device = deployment.device("hsm-dev-1")
    async with running_coaps(deployment) as run:
        assert isinstance(run.ca.signing_key, Pkcs11EcKey)
        async with run.client(device) as est:
            key = ec.generate_private_key(ec.SECP256R1())
            first = (await est.enroll(key=key, subject=device.subject("d1")))[0]
        async with run.client(device) as est:
            new_key, skg = await est.serverkeygen(subject=device.subject("d2"))
        async with run.client(device) as est:
            # The key package (CMS SignedData) is signed by the CA key: in the token.
            sealed_key, sealed = await est.serverkeygen(
                subject=device.subject("d3"), encrypted=True
            )
        enrolled = write_identity(tmp_path, "enrolled", first, key)
        async with run.client(enrolled) as est:
            renewed = (await est.reenroll())[0]
    assert sealed[0].public_key() == sealed_key.public_key()
    assert renewed.public_key() == first.public_key() and renewed.subject == first.subject
    for cert in (first, skg[0], sealed[0], renewed):
        openssl_verify(deployment.paths.ca_cert, cert, tmp_path)
    assert skg[0].public_key() == new_key.public_key()
    # No private key of any device or of the CA in the store.
    store = deployment.paths.store.read_bytes()
    assert b"PRIVATE KEY" not in store
    assert set(private_key_files(deployment.paths.dir)) == {"server.key"}


async def test_https_enroll_and_reenroll_signed_in_the_token(tmp_path: Path, pin: str) -> None:
    paths = token_ca(tmp_path, "ca-https")
    async with running(paths.dir) as env:
        key = ec.generate_private_key(ec.SECP256R1())
        async with EstClient(env.url, trust=paths.ca_cert, user=USER, password=PASSWORD) as est:
            first = (await est.enroll(key=key, subject="CN=hsm-https"))[0]
        async with EstClient(env.url, trust=paths.ca_cert, cert=first, key=key) as est:
            renewed = (await est.reenroll())[0]
    for cert in (first, renewed):
        openssl_verify(paths.ca_cert, cert, tmp_path)
    assert renewed.serial_number != first.serial_number


def test_crl_and_ocsp_signed_in_the_token(tmp_path: Path, pin: str) -> None:
    paths = token_ca(tmp_path, "ca-crl")
    ca_cert, ca_key = paths.load_ca()
    server = x509.load_pem_x509_certificates(paths.server_cert.read_bytes())[0]
    crl = build_crl([], ca_cert=ca_cert, ca_key=ca_key, number=1)  # type: ignore[arg-type]
    crl_pem = tmp_path / "ca.crl"
    crl_pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        [str(OPENSSL), "crl", "-in", str(crl_pem), "-CAfile", str(paths.ca_cert), "-noout"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "verify OK" in done.stderr + done.stdout, done.stderr
    with Store.open(paths.store) as store:
        responder = OcspResponder(ca_cert, ca_key, store_lookup(store))  # type: ignore[arg-type]
        request = ocsp.OCSPRequestBuilder().add_certificate(server, ca_cert, hashes.SHA1()).build()
        answer = ocsp.load_der_ocsp_response(
            responder.respond(request.public_bytes(serialization.Encoding.DER))
        )
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    ca_cert.public_key().verify(  # type: ignore[call-arg]
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
    )


async def test_session_closed_under_load_gives_503_then_recovers(
    tmp_path: Path, pin: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The request that meets the closed session is answered 5.03 with Max-Age; the
    client waits that long and asks again (RFC 9148 s4.7), the server re-opens the
    session and signs. Every certificate that comes back verifies against ca.pem."""
    deployment = deployment_on_token(tmp_path, "ca-fault")
    device = deployment.device("hsm-fault")
    async with running_coaps(deployment) as run:
        key = run.ca.signing_key
        assert isinstance(key, Pkcs11EcKey)
        issued: list[x509.Certificate] = []
        async with run.client(device) as est:
            for round_ in range(3):
                for i in range(4):
                    if round_ == 1 and i == 2:
                        close_all_sessions(key)
                    csr = ec.generate_private_key(ec.SECP256R1())
                    subject = device.subject(f"f{round_}{i}")
                    issued.append((await est.enroll(key=csr, subject=subject))[0])
        assert key.token.opened == 2  # opened at start, re-opened once after the fault
    for cert in issued:
        openssl_verify(deployment.paths.ca_cert, cert, tmp_path)
    failures = [r.getMessage() for r in caplog.records if r.name == "estcoap.ca.pkcs11key"]
    assert len([m for m in failures if "unavailable: signature failed" in m]) == 1, failures
    assert PIN not in " ".join(failures)


async def test_https_answers_503_with_retry_after_when_the_token_fails(
    tmp_path: Path, pin: str
) -> None:
    paths = token_ca(tmp_path, "ca-fault-https")
    async with running(paths.dir) as env:
        key = env.ca.signing_key
        assert isinstance(key, Pkcs11EcKey)
        close_all_sessions(key)
        csr = build_csr(
            ec.generate_private_key(ec.SECP256R1()),
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hsm-503")]),
        )
        auth = aiohttp.BasicAuth(USER, PASSWORD)
        connector = aiohttp.TCPConnector(ssl=client_ssl(paths))
        async with aiohttp.ClientSession(connector=connector, auth=auth) as http:
            headers = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "base64"}
            body = base64.encodebytes(csr)
            url = f"{env.url}/simpleenroll"
            async with http.post(url, data=body, headers=headers) as answer:
                status, text = answer.status, await answer.text()
                retry_after = answer.headers.get("Retry-After")
            async with http.post(url, data=body, headers=headers) as again:
                second = again.status
    assert status == 503 and retry_after is not None and int(retry_after) >= 1, text
    assert "signing key is unavailable" in text
    assert second == 200


async def test_coaps_answers_503_with_max_age_when_the_token_fails(
    tmp_path: Path, pin: str
) -> None:
    """The raw answer a device sees (RFC 9148 s4.7's try-later form), then success."""
    deployment = deployment_on_token(tmp_path, "ca-fault-coap")
    device = deployment.device("hsm-raw")
    async with running_coaps(deployment) as run:
        key = run.ca.signing_key
        assert isinstance(key, Pkcs11EcKey)
        config = DtlsClientConfig(
            trust_anchors=[run.ca.ca_certificate],
            certificate_chain=[device.certificate],
            private_key=device.key,  # type: ignore[arg-type]
        )
        context = await create_client_context(config)
        try:
            answers = []
            for attempt in range(2):
                if attempt == 0:
                    close_all_sessions(key)
                csr = build_csr(ec.generate_private_key(ec.SECP256R1()), device.subject("raw"))
                request = aiocoap.Message(
                    code=Code.POST, uri=f"{run.url}/sen", payload=csr, content_format=286
                )
                answers.append(await context.request(request).response)
        finally:
            await context.shutdown()
    refused, issued = answers
    assert refused.code == Code.SERVICE_UNAVAILABLE
    assert refused.opt.max_age == 5
    assert b"signing key is unavailable" in refused.payload
    assert issued.code == Code.CHANGED


def test_ocsp_answers_try_later_when_the_token_fails(tmp_path: Path, pin: str) -> None:
    paths = token_ca(tmp_path, "ca-ocsp-fault")
    ca_cert, ca_key = paths.load_ca()
    assert isinstance(ca_key, Pkcs11EcKey)
    server = x509.load_pem_x509_certificates(paths.server_cert.read_bytes())[0]
    request = ocsp.OCSPRequestBuilder().add_certificate(server, ca_cert, hashes.SHA1()).build()
    der = request.public_bytes(serialization.Encoding.DER)
    with Store.open(paths.store) as store:
        responder = OcspResponder(ca_cert, ca_key, store_lookup(store))
        close_all_sessions(ca_key)
        first = ocsp.load_der_ocsp_response(responder.respond(der))
        second = ocsp.load_der_ocsp_response(responder.respond(der))
    assert first.response_status is ocsp.OCSPResponseStatus.TRY_LATER
    assert second.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL


CLI = [sys.executable, "-m", "estcoap.cli"]


def est(*args: str | Path, pin_env: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != PIN_ENV}
    if pin_env is not None:
        env[PIN_ENV] = pin_env
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_cli_init_crl_and_what_it_refuses(tmp_path: Path, token: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    ca = tmp_path / "ca"
    uri = f"pkcs11:token={TOKEN};object=ca-cli"
    done = est(
        "ca",
        "init",
        ca,
        "--hostname",
        "localhost",
        "--key-uri",
        uri,
        "--pkcs11-module",
        MODULE,
        "--pin-file",
        pin_file,
    )
    assert done.returncode == 0, done.stderr
    assert f"{uri}?module-path={MODULE} (in the token)" in done.stdout
    assert PIN not in done.stdout + done.stderr
    assert sorted(p.name for p in ca.iterdir()) == [
        "ca.pem",
        "est.sqlite3",
        "key.uri",
        "server.key",
        "server.pem",
    ]

    crl = tmp_path / "ca.crl.pem"
    done = est("ca", "crl", ca, "--out", crl, pin_env=PIN)  # the PIN from the environment
    assert done.returncode == 0, done.stderr
    verified = subprocess.run(
        [str(OPENSSL), "crl", "-in", str(crl), "-CAfile", str(ca / "ca.pem"), "-noout"],
        capture_output=True,
        text=True,
    )
    assert "verify OK" in verified.stderr + verified.stdout
    done = est(
        "ca",
        "issue-ra",
        ca,
        "--out-cert",
        tmp_path / "ra.pem",
        "--out-key",
        tmp_path / "ra.key",
        "--pin-file",
        pin_file,
    )
    assert done.returncode == 0, done.stderr
    ra = x509.load_pem_x509_certificate((tmp_path / "ra.pem").read_bytes())
    openssl_verify(ca / "ca.pem", ra, tmp_path)

    refusals = [
        (est("ca", "crl", ca, "--out", tmp_path / "x.pem"), "needs its user PIN"),
        (est("ca", "crl", ca, "--out", tmp_path / "x.pem", pin_env="000000"), "wrong PIN"),
        (
            est(
                "ca",
                "init",
                tmp_path / "b",
                "--hostname",
                "h",
                "--key-uri",
                f"{uri}?pin-value={PIN}",
                "--pkcs11-module",
                MODULE,
            ),
            "pin-value is refused",
        ),
        (
            est(
                "ca",
                "init",
                tmp_path / "c",
                "--hostname",
                "h",
                "--key-uri",
                uri,
                "--key-type",
                "rsa-2048",
                "--pkcs11-module",
                MODULE,
                "--pin-file",
                pin_file,
            ),
            "not rsa-2048",
        ),
        (
            est(
                "ca",
                "init",
                tmp_path / "d",
                "--hostname",
                "h",
                "--key-uri",
                f"pkcs11:token={TOKEN};object=ca-d",
                "--pin-file",
                pin_file,
            ),
            "which PKCS#11 library",
        ),
    ]
    for done, why in refusals:
        assert done.returncode != 0 and why in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert PIN not in done.stderr.replace("000000", "")
