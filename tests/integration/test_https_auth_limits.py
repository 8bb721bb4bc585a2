"""Password guessing cannot stall the server (issue 11 item 2), and the auth/TLS settings
that go with it: scrypt off the event loop in a bounded pool, unknown names checked like
known ones, failure limits per source and per user name, AEAD-only TLS 1.2, the offered
HTTP auth schemes and their order, and the status a PoP failure gets.

Floods come from 127.0.0.2.. (loopback aliases) and are bounded in count and time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from estcoap.client import EstClient, build_csr, generate_key
from estcoap.codec import b64
from estcoap.codec.authheaders import digest_ha1, digest_response, parse_challenges
from estcoap.https import HttpsServer, add_user, parse_users_file, start_https_server, user_from_arg
from estcoap.https import users as users_module
from estcoap.https.auth import HttpAuthenticator
from estcoap.https.front import FRONT
from estcoap.https.throttle import AuthLimits
from tests.conftest import require
from tests.integration.coaps_fixtures import make_deployment, running_coaps

pytestmark = pytest.mark.timeout(120)

ALICE, ALICE_PW = "alice", "correct horse"  # a command-line user (Digest and Basic)
BOB, BOB_PW = "bob", "battery staple"  # a users-file user (scrypt for Basic)
# Limits so high they never trigger: every guess then really runs scrypt.
NO_LIMITS = AuthLimits(source_burst=10**6, user_burst=10**6)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _auth(server: HttpsServer) -> HttpAuthenticator:
    auth = server.runner.app[FRONT].auth
    assert auth is not None
    return auth


@contextlib.asynccontextmanager
async def _session(ca_pem: Path, source: str = "127.0.0.1") -> AsyncIterator[aiohttp.ClientSession]:
    ctx = ssl.create_default_context(cafile=str(ca_pem))
    connector = aiohttp.TCPConnector(ssl=ctx, local_addr=(source, 0), force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def _get(session: aiohttp.ClientSession, url: str, **headers: str) -> aiohttp.ClientResponse:
    async with session.get(f"{url}/csrattrs", headers=headers) as resp:
        await resp.read()
        return resp


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_deployment(tmp_path)


@pytest.fixture(name="users")
def users_fixture(tmp_path: Path) -> list[users_module.User]:
    path = tmp_path / "users"
    add_user(path, BOB, BOB_PW)
    return [user_from_arg(f"{ALICE}:{ALICE_PW}"), *parse_users_file(path)]


@contextlib.asynccontextmanager
async def _https(ca, paths, users, **options: object) -> AsyncIterator[HttpsServer]:  # type: ignore[no-untyped-def]
    server = await start_https_server(
        ca,
        "127.0.0.1",
        0,
        cert_chain=paths.server_cert,
        key=paths.server_key,
        users=users,
        **options,  # type: ignore[arg-type]
    )
    try:
        yield server
    finally:
        await server.close()


# ---- the flood ---------------------------------------------------------------------


async def test_wrong_password_flood_does_not_stall_coaps_or_https_enrollment(
    deployment, users
) -> None:
    """8 connections of wrong Basic guesses for a users-file user (each one a real scrypt
    run: no limits) while a device enrolls over CoAPs with its IDevID and another over
    HTTPS with Digest: both finish within their own client timeouts."""
    device = deployment.device("dev-0001")
    async with (
        running_coaps(deployment) as coaps,
        _https(coaps.ca, deployment.paths, users, auth_options={"limits": NO_LIMITS}) as https,
    ):
        auth = _auth(https)
        stop = asyncio.Event()
        statuses: list[int] = []

        async def flood(n: int) -> None:
            async with _session(deployment.paths.ca_cert, f"127.0.0.{2 + n}") as session:
                while not stop.is_set():
                    resp = await _get(session, https.url, **_basic(BOB, f"guess-{len(statuses)}"))
                    statuses.append(resp.status)

        flooders = [asyncio.create_task(flood(n)) for n in range(8)]
        try:
            while auth.passwords.kdf_runs < 8:  # the flood is on before the devices start
                await asyncio.sleep(0.05)
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, "dev-0001"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "dev-0001"),
                ]
            )
            async with coaps.client(device, timeout=10.0) as est:
                provisioned = await est.provision(subject)
            async with EstClient(
                https.url,
                trust=deployment.paths.ca_cert,
                user=ALICE,
                password=ALICE_PW,
                timeout=10.0,
            ) as est:
                chain = await est.enroll(key=generate_key(), subject="CN=during-flood")
        finally:
            stop.set()
            await asyncio.gather(*flooders)
        assert provisioned.certificate.subject == subject
        assert chain[0].subject.rfc4514_string() == "CN=during-flood"
        # The flood was real: wrong guesses were checked (401) or refused as busy (503).
        assert auth.passwords.kdf_runs >= 8 and 401 in statuses
        assert set(statuses) <= {401, 503}


async def test_event_loop_answers_while_password_checks_run(deployment, users) -> None:
    """With one worker and 20 checks queued (~1 s of scrypt), a cacerts request is answered
    while checks are still outstanding: the loop is not the one running them."""
    async with (
        running_coaps(deployment) as coaps,
        _https(
            coaps.ca,
            deployment.paths,
            users,
            auth_options={"limits": NO_LIMITS, "password_workers": 1, "password_backlog": 64},
        ) as https,
    ):
        auth = _auth(https)
        async with _session(deployment.paths.ca_cert, "127.0.0.2") as session:
            guesses = [
                asyncio.create_task(_get(session, https.url, **_basic(BOB, f"wrong-{i}")))
                for i in range(20)
            ]
            while auth.passwords.backlog < 10:
                await asyncio.sleep(0.01)
            async with session.get(f"{https.url}/cacerts") as resp:
                assert resp.status == 200
                await resp.read()
            outstanding = auth.passwords.backlog
            answers = await asyncio.gather(*guesses)
        assert outstanding > 0
        assert [r.status for r in answers] == [401] * 20


async def test_backlog_full_is_refused_503_with_retry_after(deployment, users) -> None:
    async with (
        running_coaps(deployment) as coaps,
        _https(
            coaps.ca,
            deployment.paths,
            users,
            auth_options={"limits": NO_LIMITS, "password_workers": 1, "password_backlog": 2},
        ) as https,
    ):
        auth = _auth(https)
        async with _session(deployment.paths.ca_cert, "127.0.0.2") as session:

            async def guess(i: int) -> tuple[int, str | None, str]:
                async with session.get(
                    f"{https.url}/csrattrs", headers=_basic(BOB, f"w{i}")
                ) as resp:
                    return resp.status, resp.headers.get("Retry-After"), await resp.text()

            answers = await asyncio.gather(*(guess(i) for i in range(12)))
        busy = [a for a in answers if a[0] == 503]
        assert busy and all(a[1] and int(a[1]) >= 1 for a in busy)
        assert all("retry later" in a[2] for a in busy)
        assert {a[0] for a in answers} == {401, 503}
        assert auth.passwords.busy_refusals == len(busy)
        # Busy refusals spend no failure tokens and the server still serves.
        assert auth.by_source.failures == len(answers) - len(busy)
        async with _session(deployment.paths.ca_cert) as session:
            assert (await _get(session, https.url, **_basic(BOB, BOB_PW))).status in (200, 204)


# ---- unknown names cost the same ------------------------------------------------------


async def test_unknown_and_known_names_each_cost_one_scrypt_and_answer_alike(
    users, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[bytes] = []
    real = users_module._scrypt

    def counting(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        runs.append(salt)
        return real(password, salt, n, r, p)

    monkeypatch.setattr(users_module, "_scrypt", counting)
    auth = HttpAuthenticator(users, limits=NO_LIMITS)
    try:
        reasons = []
        for name in (BOB, ALICE, "nobody"):  # file user, command-line user, no user
            header = _basic(name, "wrong")["Authorization"]
            outcome = await auth.authenticate(header, "GET", "/x", "127.0.0.1")
            reasons.append(outcome.reason)
        assert len(runs) == 3  # one scrypt run each, whoever stands behind the name
        hashed = [u for u in users if u.scrypt_hash]
        assert all(u.scrypt_hash for u in hashed)
        assert len(set(reasons)) == 1 and reasons[0] == "wrong user name or password"
        ok = await auth.authenticate(_basic(BOB, BOB_PW)["Authorization"], "GET", "/x", "::1")
        assert ok.user == BOB and len(runs) == 4

        # Digest: a name without a user gets the same answer as a wrong password.
        nonce = parse_challenges(auth.challenges())[0].params["nonce"]
        answers = []
        for name in (ALICE, "nobody"):
            ha1 = digest_ha1("SHA-256", name, auth.realm, "wrong")
            response = digest_response(
                "SHA-256",
                ha1,
                method="GET",
                uri="/x",
                nonce=nonce,
                nc="00000001",
                cnonce="c",
                qop="auth",
            )
            header = (
                f'Digest username="{name}", realm="{auth.realm}", uri="/x", '
                f'algorithm=SHA-256, nonce="{nonce}", nc=00000001, cnonce="c", qop=auth, '
                f'response="{response}"'
            )
            answers.append((await auth.authenticate(header, "GET", "/x", "127.0.0.1")).reason)
        assert answers == ["wrong user name or password"] * 2
    finally:
        auth.close()


# ---- failure limits -------------------------------------------------------------------


async def test_source_locked_out_after_failures_then_let_back(
    deployment, users, clock, caplog: pytest.LogCaptureFixture
) -> None:
    limits = AuthLimits(source_burst=3, source_per_second=1 / 3, user_burst=10**6)
    caplog.set_level(logging.WARNING, logger="estcoap.https.auth")
    options = {"limits": limits, "clock": clock}
    async with (
        running_coaps(deployment) as coaps,
        _https(coaps.ca, deployment.paths, users, auth_options=options) as https,
    ):
        auth = _auth(https)
        async with _session(deployment.paths.ca_cert, "127.0.0.2") as attacker:
            for i in range(3):
                assert (await _get(attacker, https.url, **_basic(BOB, f"w{i}"))).status == 401
            runs = auth.passwords.kdf_runs
            for i in range(5):
                async with attacker.get(
                    f"{https.url}/csrattrs", headers=_basic(BOB, f"again{i}")
                ) as resp:
                    assert resp.status == 429
                    wait = int(resp.headers["Retry-After"])
                    assert wait >= 1
                    assert "from this address" in await resp.text()
            # Refused before any password work; even the right password waits out the lock.
            assert auth.passwords.kdf_runs == runs
            assert (await _get(attacker, https.url, **_basic(BOB, BOB_PW))).status == 429
            # Another source is not affected.
            async with _session(deployment.paths.ca_cert, "127.0.0.9") as other:
                assert (await _get(other, https.url, **_basic(BOB, BOB_PW))).status in (200, 204)
            clock.advance(wait + 0.2)  # as told: then one token is back
            assert (await _get(attacker, https.url, **_basic(BOB, BOB_PW))).status in (200, 204)
        locked = [r for r in caplog.records if "locked out" in r.getMessage()]
        assert len(locked) == 1 and "127.0.0.2" in locked[0].getMessage()
        assert locked[0].levelno == logging.WARNING
        assert auth.by_source.lockouts == 1 and auth.by_source.refused == 6
        assert BOB_PW not in caplog.text


async def test_user_lockout_slows_guessers_but_spares_a_known_source(deployment, users) -> None:
    limits = AuthLimits(source_burst=10**6, user_burst=3, user_per_second=0.05)
    async with (
        running_coaps(deployment) as coaps,
        _https(coaps.ca, deployment.paths, users, auth_options={"limits": limits}) as https,
    ):
        auth = _auth(https)
        trust = deployment.paths.ca_cert
        # alice enrolls from 127.0.0.1 (Digest): that pair is now known good.
        async with EstClient(https.url, trust=trust, user=ALICE, password=ALICE_PW) as est:
            await est.enroll(key=generate_key(), subject="CN=before")
        # Guessers from several sources spend the user name's budget...
        for n in range(3):
            async with _session(trust, f"127.0.0.{2 + n}") as s:
                assert (await _get(s, https.url, **_basic(ALICE, "guess"))).status == 401
        async with _session(trust, "127.0.0.7") as s:
            async with s.get(f"{https.url}/csrattrs", headers=_basic(ALICE, "more")) as resp:
                assert resp.status == 429 and "for this user name" in await resp.text()
            # ... which also slows a new source with the right password (the trade-off) ...
            assert (await _get(s, https.url, **_basic(ALICE, ALICE_PW))).status == 429
        # ... but not alice's known source.
        async with EstClient(https.url, trust=trust, user=ALICE, password=ALICE_PW) as est:
            chain = await est.enroll(key=generate_key(), subject="CN=after")
        assert chain[0].subject.rfc4514_string() == "CN=after"
        assert auth.by_user.lockouts == 1


# ---- offered schemes --------------------------------------------------------------------


async def test_md5_digest_only_when_configured_and_then_first(deployment, users) -> None:
    trust = deployment.paths.ca_cert
    async with running_coaps(deployment) as coaps:
        async with _https(coaps.ca, deployment.paths, users) as https, _session(trust) as s:
            resp = await _get(s, https.url)
            offered = resp.headers.getall("WWW-Authenticate")
            assert [c.split()[0] for c in offered] == ["Digest", "Basic"]
            assert "algorithm=SHA-256" in offered[0] and "MD5" not in " ".join(offered)
            md5 = _digest_md5(offered[0].replace("SHA-256", "MD5"), "/.well-known/est/csrattrs")
            async with s.get(f"{https.url}/csrattrs", headers={"Authorization": md5}) as r:
                assert r.status == 401 and "not offered" in await r.text()

        libest = {"http_auth": ("digest-md5", "basic")}
        async with (
            _https(coaps.ca, deployment.paths, users, **libest) as https,
            _session(trust) as s,
        ):
            resp = await _get(s, https.url)
            offered = resp.headers.getall("WWW-Authenticate")
            assert [c.split()[0] for c in offered] == ["Digest", "Basic"]
            assert "algorithm=MD5" in offered[0]
            # A libEST-like client reads only the first challenge and answers it with MD5.
            md5 = _digest_md5(offered[0], "/.well-known/est/csrattrs")
            async with s.get(f"{https.url}/csrattrs", headers={"Authorization": md5}) as r:
                assert r.status in (200, 204)


def _digest_md5(challenge: str, uri: str) -> str:
    p = parse_challenges([challenge])[0].params
    ha1 = digest_ha1("MD5", ALICE, p["realm"], ALICE_PW)
    response = digest_response(
        "MD5",
        ha1,
        method="GET",
        uri=uri,
        nonce=p["nonce"],
        nc="00000001",
        cnonce="0a4f113b",
        qop="auth",
    )
    return (
        f'Digest username="{ALICE}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
        f'uri="{uri}", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b", '
        f'response="{response}", opaque="{p["opaque"]}"'
    )


# ---- TLS 1.2 cipher suites --------------------------------------------------------------


async def test_tls12_offers_only_aead_suites(deployment, users) -> None:
    require("openssl", "openssl s_client lists the offered TLS 1.2 suites")
    async with running_coaps(deployment) as coaps:
        async with _https(coaps.ca, deployment.paths, users) as https:
            connect = f"127.0.0.1:{https.port}"

            async def s_client(cipher: str) -> tuple[int, str]:
                proc = await asyncio.create_subprocess_exec(
                    "openssl",
                    "s_client",
                    "-connect",
                    connect,
                    "-tls1_2",
                    "-cipher",
                    cipher,
                    "-CAfile",
                    str(deployment.paths.ca_cert),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                out, _ = await asyncio.wait_for(proc.communicate(), 30)
                return proc.returncode or 0, out.decode(errors="replace")

            for cbc in ("AES128-SHA", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA256"):
                code, out = await s_client(cbc)
                assert code != 0, out
                assert "Cipher is (NONE)" in out or "handshake failure" in out
            code, out = await s_client("ECDHE+AESGCM:ECDHE+CHACHA20")
            assert code == 0 and "Verify return code: 0" in out
            assert "GCM" in out or "CHACHA20" in out


# ---- PoP and 401 ----------------------------------------------------------------------


async def test_certificate_only_server_never_sends_401_without_a_challenge(deployment) -> None:
    """No HTTP users: nothing a 401 could challenge for, so a missing client certificate
    gets 403 with the reason (HTTP requires WWW-Authenticate on every 401)."""
    async with running_coaps(deployment) as coaps:
        async with _https(coaps.ca, deployment.paths, []) as https:
            csr = build_csr(generate_key(), x509.Name.from_rfc4514_string("CN=anon"))
            async with _session(deployment.paths.ca_cert) as s:
                async with s.post(
                    f"{https.url}/simpleenroll",
                    data=b64.encode(csr),
                    headers={"Content-Type": "application/pkcs10"},
                ) as resp:
                    text = await resp.text()
                    assert resp.status == 403 and "WWW-Authenticate" not in resp.headers
                    assert "client certificate" in text
