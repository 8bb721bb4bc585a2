"""The bad-input matrix: each refusal has its status and diagnostic, and the server keeps serving.

Requests go through aiohttp's client (an independent HTTP stack) so that we can send
what EstClient never would.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.client import EstClient, build_csr, generate_key
from estcoap.codec import b64
from estcoap.codec.operations import EST_WELL_KNOWN
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    client_ssl,
    running,
)

pytestmark = pytest.mark.timeout(60)

MAX_BODY = 4096
GARBAGE_DER = b"\x30\x03\x02\x01\x07"  # a SEQUENCE holding an INTEGER: not a CSR
PKCS10 = {"Content-Type": "application/pkcs10"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


GOOD_AUTH = basic(USER, PASSWORD)


def _csr(subject: str = "CN=bad-input", **kw) -> bytes:  # type: ignore[no-untyped-def]
    return build_csr(generate_key(), x509.Name.from_rfc4514_string(subject), **kw)


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 1024):
        yield b"A" * 1024


@dataclass
class Case:
    method: str
    path: str
    status: int
    diagnostic: str
    body: object = None
    headers: dict[str, str] = field(default_factory=lambda: dict(PKCS10))
    auth: str | None = GOOD_AUTH  # the Authorization header
    skip: tuple[str, ...] = ()
    check: str | None = None  # an extra header that must be present


def _cases() -> dict[str, Case]:
    good = b64.encode(_csr())
    sig = bytearray(_csr())
    sig[-3] ^= 0xFF  # inside the signature BIT STRING
    return {
        "missing content-type": Case(
            "POST", "simpleenroll", 415, "application/pkcs10", good, {}, skip=("Content-Type",)
        ),
        "wrong content-type": Case(
            "POST", "simpleenroll", 415, "application/pkcs10", good, {"Content-Type": "text/plain"}
        ),
        "bad base64": Case("POST", "simpleenroll", 400, "base64", b"!!!! not base64 ****"),
        "garbage DER": Case("POST", "simpleenroll", 400, "CSR", b64.encode(GARBAGE_DER)),
        "empty body": Case("POST", "simpleenroll", 400, "empty", b""),
        "bad CSR signature": Case("POST", "simpleenroll", 400, "signature", b64.encode(bytes(sig))),
        "GET on simpleenroll": Case("GET", "simpleenroll", 405, "POST", check="Allow"),
        "POST on cacerts": Case("POST", "cacerts", 405, "GET", good, check="Allow"),
        "unknown label": Case("GET", "nosuchlabel/cacerts", 404, "label"),
        "unknown operation": Case("GET", "nosuchop", 404, "operation"),
        "fullcmc": Case("POST", "fullcmc", 501, "fullcmc", good),
        "no credentials": Case(
            "POST", "simpleenroll", 401, "authentication", good, auth=None, check="WWW-Authenticate"
        ),
        "wrong password": Case(
            "POST",
            "simpleenroll",
            401,
            "password",
            good,
            auth=basic(USER, "wrong"),
            check="WWW-Authenticate",
        ),
        "oversized body": Case("POST", "simpleenroll", 413, "exceeds", b"A" * (MAX_BODY + 10)),
        "oversized chunked body": Case(
            "POST", "simpleenroll", 413, "exceeds", lambda: _chunks(MAX_BODY * 4)
        ),
        "PoP mismatch": Case(
            "POST",
            "simpleenroll",
            403,
            "proof-of-possession",
            b64.encode(_csr(challenge_password=base64.b64encode(b"\x01" * 12))),
        ),
    }


CASES = _cases()


async def _still_serving(env) -> None:  # type: ignore[no-untyped-def]
    async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
        assert await est.cacerts() == [env.ca.ca_certificate]
        chain = await est.enroll(key=generate_key(), subject="CN=after")
        assert chain[0].subject.rfc4514_string() == "CN=after"


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input(ca_dir, name: str) -> None:
    case = CASES[name]
    async with running(ca_dir, max_body=MAX_BODY) as env:
        connector = aiohttp.TCPConnector(ssl=client_ssl(env.paths, tls12=True))
        async with aiohttp.ClientSession(
            connector=connector, skip_auto_headers=case.skip
        ) as session:
            body = case.body() if callable(case.body) else case.body
            headers = dict(case.headers)
            if case.auth:
                headers["Authorization"] = case.auth
            url = f"{env.url}/{case.path}"
            async with session.request(case.method, url, data=body, headers=headers) as resp:
                text = await resp.text()
                assert resp.status == case.status, text
                assert case.diagnostic.lower() in text.lower()
                if resp.status >= 400:
                    assert resp.content_type == "text/plain"
                if case.check:
                    assert resp.headers.get(case.check)
                if case.check == "Allow":
                    assert resp.headers["Allow"] in ("GET", "POST")
        await _still_serving(env)


async def test_401_offers_digest_sha256_then_basic_and_no_md5(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(env.paths))
        ) as session:
            url = f"{env.url}/simpleenroll"
            async with session.post(url, data=b64.encode(_csr()), headers=PKCS10) as resp:
                assert resp.status == 401
                challenges = resp.headers.getall("WWW-Authenticate")
        assert len(challenges) == 2
        assert challenges[0].startswith("Digest") and "algorithm=SHA-256" in challenges[0]
        assert challenges[1].startswith("Basic")
        assert not any("MD5" in c for c in challenges)
        assert 'qop="auth"' in challenges[0]


async def test_reenroll_with_another_subject_is_forbidden(ca_dir, tmp_path) -> None:
    async with running(ca_dir) as env:
        key = generate_key()
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            cert = (await est.enroll(key=key, subject="CN=owner"))[0]
        cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ctx = client_ssl(env.paths)
        ctx.load_cert_chain(cert_path, key_path)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            body = b64.encode(build_csr(key, x509.Name.from_rfc4514_string("CN=someone-else")))
            async with session.post(f"{env.url}/simplereenroll", data=body, headers=PKCS10) as resp:
                assert resp.status == 403
                assert "mismatch" in (await resp.text())
        await _still_serving(env)


async def test_unknown_path_outside_est_is_404(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(env.paths))
        ) as session:
            base = env.url[: -len(EST_WELL_KNOWN)]
            async with session.get(f"{base}/.well-known/est/a/b/c") as resp:
                assert resp.status == 404
