"""Interop with peers we did not write: curl talks to our HTTPS front, openssl makes the CSRs
and checks the PKCS#7 answers (cacerts, simpleenroll with Basic, Digest and a client certificate,
simplereenroll)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import require
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    running,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(60),
]
require("curl", "EST over HTTPS with curl")
require("openssl", "openssl reads what curl received")


async def run(*args: str | Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"{args[0]} failed: {err.decode()}"
    return out.decode()


async def curl(out: Path, url: str, *args: str | Path) -> tuple[int, str]:
    """curl, answering with (status, content type); the body goes to `out`."""
    written = await run("curl", "-sS", "-o", out, "-w", "%{http_code} %{content_type}", *args, url)
    status, _, content_type = written.partition(" ")
    return int(status), content_type


async def pkcs7_certs(tmp: Path, b64_file: Path) -> list[x509.Certificate]:
    """openssl undoes the base64 and prints the certificates of the PKCS#7."""
    der, pem = tmp / f"{b64_file.stem}.p7.der", tmp / f"{b64_file.stem}.certs.pem"
    await run("openssl", "base64", "-d", "-in", b64_file, "-out", der)
    await run("openssl", "pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-out", pem)
    return x509.load_pem_x509_certificates(pem.read_bytes())


async def openssl_csr(
    tmp: Path, name: str, key: Path | None = None, subject: str | None = None
) -> Path:
    """A P-256 key (unless given) and a base64 CSR made by openssl req (subject /CN=name
    unless given)."""
    key = key or tmp / f"{name}.key"
    der, b64 = tmp / f"{name}.csr.der", tmp / f"{name}.csr.b64"
    if not key.exists():
        await run(
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key,
        )
    await run(
        "openssl",
        "req",
        "-new",
        "-key",
        key,
        "-subj",
        subject or f"/CN={name}",
        "-outform",
        "DER",
        "-out",
        der,
    )
    await run("openssl", "base64", "-in", der, "-out", b64)
    return b64


async def enroll_with_curl(
    tmp: Path,
    url: str,
    cafile: Path,
    name: str,
    *auth: str | Path,
    op: str = "simpleenroll",
    subject: str | None = None,
) -> x509.Certificate:
    key = tmp / "dev.key" if op == "simplereenroll" else None
    csr = await openssl_csr(tmp, name, key=key, subject=subject)
    out = tmp / f"{name}.b64"
    status, content_type = await curl(
        out,
        f"{url}/{op}",
        "--cacert",
        cafile,
        *auth,
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        f"@{csr}",
    )
    assert status == 200, out.read_text()
    assert content_type.startswith("application/pkcs7-mime")
    certs = await pkcs7_certs(tmp, out)
    leaf = next(c for c in certs if c.subject != c.issuer)  # not the (self-signed) CA
    leaf_pem = tmp / f"{name}.pem"
    leaf_pem.write_bytes(leaf.public_bytes(Encoding.PEM))
    assert "OK" in await run("openssl", "verify", "-CAfile", cafile, leaf_pem)
    return leaf


async def test_curl_cacerts(ca_dir, tmp_path: Path) -> None:
    async with running(ca_dir) as env:
        out = tmp_path / "cacerts.b64"
        status, content_type = await curl(out, f"{env.url}/cacerts", "--cacert", env.paths.ca_cert)
        assert status == 200
        assert content_type == "application/pkcs7-mime; smime-type=certs-only"
        assert await pkcs7_certs(tmp_path, out) == [env.ca.ca_certificate]


@pytest.mark.parametrize("scheme", ["--basic", "--digest"])
async def test_curl_simpleenroll_with_password(ca_dir, tmp_path: Path, scheme: str) -> None:
    async with running(ca_dir) as env:
        leaf = await enroll_with_curl(
            tmp_path, env.url, env.paths.ca_cert, "curl-dev", scheme, "--user", f"{USER}:{PASSWORD}"
        )
        assert env.ca.store.find_issued(leaf.serial_number).requester == f"user:{USER}"
        out = tmp_path / "denied.txt"
        status, _ = await curl(
            out,
            f"{env.url}/simpleenroll",
            "--cacert",
            env.paths.ca_cert,
            scheme,
            "--user",
            f"{USER}:wrong",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            "@" + str(await openssl_csr(tmp_path, "denied")),
        )
        assert status == 401


async def test_curl_client_certificate_enroll_and_reenroll(ca_dir, tmp_path: Path) -> None:
    async with running(ca_dir) as env:
        cafile = env.paths.ca_cert
        password = ("--basic", "--user", f"{USER}:{PASSWORD}")
        first = await enroll_with_curl(tmp_path, env.url, cafile, "dev", *password)
        cert = ("--cert", tmp_path / "dev.pem", "--key", tmp_path / "dev.key")
        # held to the identity of the certificate it authenticates with (ca/policy.py)
        other = await enroll_with_curl(
            tmp_path, env.url, cafile, "by-cert", *cert, subject="/CN=dev/OU=by-cert"
        )
        assert env.ca.store.find_issued(other.serial_number).requester == "cert:CN=dev"
        renewed = await enroll_with_curl(
            tmp_path, env.url, cafile, "dev", *cert, op="simplereenroll"
        )
        assert renewed.public_key() == first.public_key()
        assert renewed.serial_number != first.serial_number
        assert env.ca.store.find_issued(renewed.serial_number).kind == "renew"
