"""Authentication over real TLS: Basic, Digest (SHA-256, MD5, stale nonces, replays), users
file, client certificates, and tls-unique proof-of-possession checked by the server."""

from __future__ import annotations

import base64
import ssl

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.ca import init_ca
from estcoap.client import EstClient, EstClientError, build_csr, generate_key
from estcoap.codec import b64
from estcoap.codec.authheaders import digest_ha1, digest_response, parse_challenges
from estcoap.https import add_user, parse_users_file
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    client_ssl,
    running,
)

pytestmark = pytest.mark.timeout(60)
PKCS10 = {"Content-Type": "application/pkcs10"}


def _csr(subject: str, key=None, **kw) -> bytes:  # type: ignore[no-untyped-def]
    return build_csr(key or generate_key(), x509.Name.from_rfc4514_string(subject), **kw)


def _requester(env, chain) -> str:  # type: ignore[no-untyped-def]
    return env.ca.store.find_issued(chain[0].serial_number).requester


def _digest_header(challenge, method: str, uri: str, nc: str = "00000001", password=PASSWORD):  # type: ignore[no-untyped-def]
    p = challenge.params
    algorithm = p["algorithm"]
    ha1 = digest_ha1(algorithm, USER, p["realm"], password)
    response = digest_response(
        algorithm, ha1, method=method, uri=uri, nonce=p["nonce"], nc=nc, cnonce="abcd", qop="auth"
    )
    return (
        f'Digest username="{USER}", realm="{p["realm"]}", uri="{uri}", algorithm={algorithm}, '
        f'nonce="{p["nonce"]}", nc={nc}, cnonce="abcd", qop=auth, response="{response}", '
        f'opaque="{p["opaque"]}"'
    )


async def _challenge(session, url: str, algorithm: str):  # type: ignore[no-untyped-def]
    async with session.post(url, data=b64.encode(_csr("CN=probe")), headers=PKCS10) as resp:
        assert resp.status == 401
        challenges = parse_challenges(resp.headers.getall("WWW-Authenticate"))
    return next(c for c in challenges if c.params.get("algorithm") == algorithm)


async def test_basic_auth(ca_dir) -> None:
    async with running(ca_dir) as env:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(env.paths))
        ) as session:
            headers = {**PKCS10, "Authorization": f"Basic {token}"}
            body = b64.encode(_csr("CN=basic"))
            async with session.post(f"{env.url}/simpleenroll", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["Content-Transfer-Encoding"] == "base64"
                assert r.content_type == "application/pkcs7-mime"
                assert "certs-only" in r.headers["Content-Type"]
                lines = (await r.read()).split(b"\n")
                assert max(len(line) for line in lines) == 64


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_digest_auth_both_algorithms_and_replay(ca_dir, algorithm: str) -> None:
    # MD5 is offered only when the operator enables it (for libEST devices).
    async with running(ca_dir, http_auth=("digest-sha256", "digest-md5", "basic")) as env:
        url = f"{env.url}/simpleenroll"
        uri = url[url.index("/.well-known") :]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(env.paths))
        ) as session:
            challenge = await _challenge(session, url, algorithm)
            headers = {**PKCS10, "Authorization": _digest_header(challenge, "POST", uri)}
            async with session.post(url, data=b64.encode(_csr("CN=dig")), headers=headers) as r:
                assert r.status == 200, await r.text()
            # The same nonce count again is a replay.
            async with session.post(url, data=b64.encode(_csr("CN=dig")), headers=headers) as r:
                assert r.status == 401 and "replayed" in await r.text()
            wrong = _digest_header(challenge, "POST", uri, nc="00000002", password="nope")
            headers = {**PKCS10, "Authorization": wrong}
            async with session.post(url, data=b64.encode(_csr("CN=dig")), headers=headers) as r:
                assert r.status == 401 and r.headers.get("WWW-Authenticate")


async def test_estclient_uses_digest_sha256_and_survives_stale_nonce(ca_dir, clock) -> None:
    async with running(ca_dir, nonce_lifetime=1.0, auth_options={"clock": clock}) as env:
        url = f"{env.url}/simpleenroll"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(env.paths))
        ) as session:
            old = await _challenge(session, url, "SHA-256")
            clock.advance(2.2)  # the nonce expires
            uri = url[url.index("/.well-known") :]
            headers = {**PKCS10, "Authorization": _digest_header(old, "POST", uri)}
            async with session.post(url, data=b64.encode(_csr("CN=x")), headers=headers) as r:
                assert r.status == 401
                assert all(
                    "stale=true" in c
                    for c in r.headers.getall("WWW-Authenticate")
                    if c.startswith("Digest")
                )

        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            await est.csrattrs()  # learns a nonce
            transport = await est.transport()
            assert transport._digest.algorithm == "SHA-256"  # type: ignore[attr-defined]
            clock.advance(2.2)  # the nonce expires; the client answers stale=true itself
            chain = await est.enroll(key=generate_key(), subject="CN=stale-ok")
        assert _requester(env, chain) == f"user:{USER}"


async def test_users_file_basic_and_digest(ca_dir, tmp_path) -> None:
    users_file = tmp_path / "users"
    add_user(users_file, "bob", "s3cret")
    add_user(users_file, "carol", "other")
    add_user(users_file, "bob", "n3w")  # replaces bob
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    users = parse_users_file(users_file)
    assert [u.name for u in users] == ["carol", "bob"]
    assert "n3w" not in users_file.read_text()

    async with running(ca_dir, users=()) as env:
        # The fixture's server has no users; build one from the file on another port.
        from estcoap.https import start_https_server

        server = await start_https_server(
            env.ca,
            "127.0.0.1",
            0,
            cert_chain=env.paths.server_cert,
            key=env.paths.server_key,
            users=users,
        )
        try:
            async with EstClient(
                server.url, trust=env.paths.ca_cert, user="bob", password="n3w"
            ) as est:
                chain = await est.enroll(key=generate_key(), subject="CN=bob-dev")
            assert _requester(env, chain) == "user:bob"
            token = base64.b64encode(b"carol:other").decode()
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl(env.paths))
            ) as session:
                headers = {**PKCS10, "Authorization": f"Basic {token}"}
                body = b64.encode(_csr("CN=carol-dev"))
                async with session.post(
                    f"{server.url}/simpleenroll", data=body, headers=headers
                ) as r:
                    assert r.status == 200
            async with EstClient(
                server.url, trust=env.paths.ca_cert, user="bob", password="s3cret"
            ) as est:
                with pytest.raises(EstClientError, match="401"):
                    await est.enroll(key=generate_key(), subject="CN=old-password")
        finally:
            await server.close()


async def test_client_certificate_authenticates_without_password(ca_dir, tmp_path) -> None:
    async with running(ca_dir) as env:
        key = generate_key()
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            cert = (await est.enroll(key=key, subject="CN=certified"))[0]
        async with EstClient(env.url, trust=env.paths.ca_cert, cert=cert, key=key) as est:
            # held to its certificate's identity (CN=certified; ca/policy.py)
            chain = await est.enroll(key=generate_key(), subject="OU=by-cert,CN=certified")
        assert _requester(env, chain) == "cert:CN=certified"

        # A certificate from a CA the server does not trust fails the TLS handshake.
        other = init_ca(tmp_path / "other", ["127.0.0.1"])
        other_cert = x509.load_pem_x509_certificate(other.server_cert.read_bytes())
        other_key = serialization.load_pem_private_key(other.server_key.read_bytes(), None)
        async with EstClient(
            env.url, trust=env.paths.ca_cert, cert=other_cert, key=other_key
        ) as est:
            with pytest.raises(EstClientError):
                await est.enroll(key=generate_key(), subject="CN=intruder")


async def test_pop_success_on_tls12_server(ca_dir) -> None:
    async with running(ca_dir, require_pop=True) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            chain = await est.enroll(key=generate_key(), subject="CN=pop", pop=True)
            transport = await est.transport()
            assert transport.ssl_object().version() == "TLSv1.2"  # type: ignore[attr-defined]
            assert chain[0].subject.rfc4514_string() == "CN=pop"
        # Without PoP on a server that requires it: 401.
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            # Authenticated, but the CSR is not linked to the channel: 403 says so; a 401
            # would ask for a password that cannot help.
            with pytest.raises(EstClientError, match="403.*proof-of-possession required"):
                await est.enroll(key=generate_key(), subject="CN=no-pop")
            # provision() reads csrattrs, sees challengePassword asked, and links the CSR itself.
            result = await est.provision("CN=prov-pop")
            assert result.certificate.subject.rfc4514_string() == "CN=prov-pop"


async def test_pop_from_another_connection_is_refused(ca_dir) -> None:
    async with running(ca_dir, require_pop=True) as env:
        trust = env.paths.ca_cert
        async with (
            EstClient(env.url, trust=trust, user=USER, password=PASSWORD) as a,
            EstClient(env.url, trust=trust, user=USER, password=PASSWORD) as b,
        ):
            tls_unique_a = await (await a.transport()).tls_unique()
            tls_unique_b = await (await b.transport()).tls_unique()
            assert tls_unique_a and tls_unique_b and tls_unique_a != tls_unique_b
            csr = _csr("CN=stolen", challenge_password=base64.b64encode(tls_unique_a))
            with pytest.raises(EstClientError, match="403.*proof-of-possession failed"):
                await b.enroll(csr)
            chain = await a.enroll(csr)  # on its own channel the same CSR is fine
            assert chain[0].subject.rfc4514_string() == "CN=stolen"


async def test_tls13_has_no_tls_unique_and_client_falls_back(ca_dir) -> None:
    async with running(ca_dir) as env:  # no require_pop: TLS 1.3 allowed
        ctx = client_ssl(env.paths)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            headers = {**PKCS10, "Authorization": f"Basic {token}"}
            body = b64.encode(_csr("CN=t13", challenge_password=base64.b64encode(b"x" * 12)))
            async with session.post(f"{env.url}/simpleenroll", data=body, headers=headers) as r:
                assert r.status == 403 and "WWW-Authenticate" not in r.headers
                assert "TLS 1.3 has no tls-unique" in await r.text()
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            await est.cacerts()
            assert (await est.transport()).ssl_object().version() == "TLSv1.3"  # type: ignore[attr-defined]
            chain = await est.enroll(key=generate_key(), subject="CN=fallback", pop=True)
            assert (await est.transport()).ssl_object().version() == "TLSv1.2"  # type: ignore[attr-defined]
        assert chain[0].subject.rfc4514_string() == "CN=fallback"
