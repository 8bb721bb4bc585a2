"""The console's fences, over the real socket (no browser): nothing without a session, no
POST without the CSRF token, console and EST credentials each open their own door only,
sessions expire, failed sign-ins are throttled, plain HTTP only on loopback."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import CaPaths, Store
from estcoap.client import EstClient, EstClientError, EstPendingTimeout
from estcoap.console import PlainHttpRefused, start_console, users_path
from estcoap.console.sessions import Sessions
from estcoap.throttle import AuthLimits
from tests.console.console_procs import (
    CONSOLE_PASSWORD,
    CONSOLE_USER,
    EST_PASSWORD,
    EST_USER,
    Web,
    add_console_user,
    serve_with_console,
)
from tests.interop.gateway_procs import ESTCOAP, Pki, make_pki

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(name="pki")
def pki_fixture(tmp_path: Path) -> Pki:
    pki = make_pki(tmp_path)
    add_console_user(pki.ca_dir)
    return pki


def _pending_request(https_url: str, pki: Pki, subject: str) -> int:
    """An EST user's enrollment left waiting for a decision; its request id."""

    async def enroll() -> None:
        async with EstClient(
            https_url,
            trust=pki.ca_pem,
            user=EST_USER,
            password=EST_PASSWORD,
            max_pending_attempts=0,
        ) as est:
            with pytest.raises(EstPendingTimeout):
                await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject=subject)

    asyncio.run(enroll())
    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        (record,) = [r for r in store.pending_list("pending") if r.subject == subject]
    return record.id


def _state(pki: Pki, request_id: int) -> str:
    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        return store.pending_get(request_id).state


def _serve_https(pki: Pki):
    return serve_with_console(
        pki,
        "--https",
        "127.0.0.1:0",
        "--approval",
        "manual",
        "--user",
        f"{EST_USER}:{EST_PASSWORD}",
    )


def test_nothing_without_a_session(pki: Pki) -> None:
    with _serve_https(pki) as serve:
        request_id = _pending_request(serve.https, pki, "CN=waiting")
        with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
            serial = store.issued_list()[0].serial
        for cookie in (None, "forged-session-id"):
            web = Web(serve.console, pki.ca_pem)
            if cookie:
                web.jar.set_cookie(_cookie("__Host-estcoap-console", cookie))
            for path in (
                "/",
                "/pending",
                "/certificates",
                "/certificates?q=waiting",
                f"/certificates/{serial}",
                "/fleet",
            ):
                reply = web.get(path)
                assert reply.status == 303 and reply.headers["Location"] == "/login", path
                assert "waiting" not in reply.body
            for path in (
                f"/pending/{request_id}/approve",
                f"/pending/{request_id}/deny",
                f"/certificates/{serial}/revoke",
                "/logout",
            ):
                reply = web.post(path, {"csrf": "x", "reason": "keyCompromise"})
                assert reply.status == 403, path
        assert _state(pki, request_id) == "pending"
        with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
            assert store.revoked_list() == []
        # The sign-in page and the stylesheet are open; the sign-in itself wants its token.
        web = Web(serve.console, pki.ca_pem)
        assert web.get("/login").status == 200
        assert web.get("/static/console.css").status == 200
        assert (
            web.post("/login", {"user": CONSOLE_USER, "password": CONSOLE_PASSWORD}).status == 403
        )


def test_a_form_without_its_csrf_token_is_refused(pki: Pki) -> None:
    with _serve_https(pki) as serve:
        request_id = _pending_request(serve.https, pki, "CN=csrf-target")
        web = Web(serve.console, pki.ca_pem)
        signed_in = web.sign_in()
        assert signed_in.status == 303 and signed_in.headers["Location"] == "/pending"
        session_cookie = signed_in.headers["Set-Cookie"]
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "__Host-estcoap-console="):
            assert flag in session_cookie
        approve = f"/pending/{request_id}/approve"
        assert web.post(approve, {}).status == 403
        assert web.post(approve, {"csrf": "not-the-token"}).status == 403
        # Another session's token is not this one's.
        other = Web(serve.console, pki.ca_pem)
        other.sign_in()
        assert web.post(approve, {"csrf": other.csrf("/pending")}).status == 403
        assert _state(pki, request_id) == "pending"
        reply = web.post(approve, {"csrf": web.csrf("/pending")})
        assert reply.status == 303
        assert _state(pki, request_id) == "approved"
        with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
            (entry,) = [a for a in store.audit_list() if a.event == "approved"]
        assert entry.decided_by == f"console:{CONSOLE_USER}" and entry.request_id == request_id


def test_console_and_est_credentials_open_only_their_own_door(pki: Pki) -> None:
    with _serve_https(pki) as serve:

        async def est_as_console_user() -> EstClientError:
            async with EstClient(
                serve.https, trust=pki.ca_pem, user=CONSOLE_USER, password=CONSOLE_PASSWORD
            ) as est:
                with pytest.raises(EstClientError) as refused:
                    await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject="CN=x")
            return refused.value

        refused = asyncio.run(est_as_console_user())
        assert refused.status == "401", refused
        # The console serves no EST path, whoever asks.
        web = Web(serve.console, pki.ca_pem)
        web.sign_in()
        assert web.get("/.well-known/est/cacerts").status == 404
        # An EST user cannot sign in to the console.
        est_user = Web(serve.console, pki.ca_pem)
        reply = est_user.sign_in(EST_USER, EST_PASSWORD)
        assert reply.status == 401 and "Wrong user name or password" in reply.body
        assert "__Host-estcoap-console" not in est_user.cookies() or not any(
            c.value for c in est_user.jar if c.name == "__Host-estcoap-console"
        )
        assert est_user.get("/pending").status == 303


async def test_sessions_expire_when_idle_and_after_the_absolute_limit(pki: Pki) -> None:
    now = [1000.0]
    sessions = Sessions(idle=60, absolute=300, clock=lambda: now[0])
    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        server = await start_console(
            store,
            "127.0.0.1",
            0,
            users_file=users_path(pki.ca_dir),
            plain_http=True,
            sessions=sessions,
        )
        try:
            web = Web(server.url, None)
            assert (await asyncio.to_thread(web.sign_in)).status == 303
            assert (await asyncio.to_thread(web.get, "/pending")).status == 200
            now[0] += 61  # idle too long
            reply = await asyncio.to_thread(web.get, "/pending")
            assert reply.status == 303 and reply.headers["Location"] == "/login"
            assert (await asyncio.to_thread(web.sign_in)).status == 303
            for _ in range(7):  # active every 50 s: never idle, but past the absolute limit
                now[0] += 50
                last = await asyncio.to_thread(web.get, "/pending")
            assert last.status == 303 and last.headers["Location"] == "/login"
            assert len(sessions) == 0
        finally:
            await server.close()


async def test_failed_sign_ins_are_throttled(pki: Pki) -> None:
    limits = AuthLimits(source_burst=3, source_per_second=1 / 600, user_burst=50)
    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        server = await start_console(
            store, "127.0.0.1", 0, users_file=users_path(pki.ca_dir), plain_http=True, limits=limits
        )
        try:
            web = Web(server.url, None)
            for _ in range(3):
                assert (await asyncio.to_thread(web.sign_in, CONSOLE_USER, "wrong")).status == 401
            locked = await asyncio.to_thread(web.sign_in)  # the right password, too late
            assert locked.status == 429 and int(locked.headers["Retry-After"]) > 0
            assert (await asyncio.to_thread(web.get, "/pending")).status == 303
        finally:
            await server.close()


async def test_plain_http_only_on_loopback(pki: Pki, tmp_path: Path) -> None:
    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        with pytest.raises(PlainHttpRefused):
            await start_console(store, "0.0.0.0", 0, users_file=tmp_path / "u", plain_http=True)
    done = subprocess.run(
        [
            *ESTCOAP,
            "serve",
            "--ca",
            pki.ca_dir,
            "--https",
            "127.0.0.1:0",
            "--console",
            "0.0.0.0:0",
            "--console-plain-http",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "loopback" in line and "Traceback" not in done.stderr


def test_console_users_file(pki: Pki) -> None:
    path = users_path(pki.ca_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CONSOLE_PASSWORD not in path.read_text()
    run = [*ESTCOAP, "console", "user"]
    listed = subprocess.run([*run, "list", pki.ca_dir], capture_output=True, text=True, timeout=30)
    assert CONSOLE_USER in listed.stdout.split()
    short = subprocess.run(
        [*run, "add", pki.ca_dir, "bob"],
        input="short\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert short.returncode == 1 and "too short" in short.stderr
    gone = subprocess.run(
        [*run, "remove", pki.ca_dir, "nobody"], capture_output=True, text=True, timeout=30
    )
    assert gone.returncode == 1 and "no console user" in gone.stderr
    os.chmod(path, 0o644)
    exposed = subprocess.run([*run, "list", pki.ca_dir], capture_output=True, text=True, timeout=30)
    assert exposed.returncode == 1 and "chmod 600" in exposed.stderr


def _cookie(name: str, value: str):  # type: ignore[no-untyped-def]
    import http.cookiejar

    return http.cookiejar.Cookie(
        0,
        name,
        value,
        None,
        False,
        "127.0.0.1",
        False,
        False,
        "/",
        True,
        True,
        None,
        False,
        None,
        None,
        {},
    )


async def test_a_removed_user_is_signed_out_at_the_next_click(pki: Pki) -> None:
    with Store.open(CaPaths.of(pki.ca_dir).store, create=False) as store:
        server = await start_console(
            store, "127.0.0.1", 0, users_file=users_path(pki.ca_dir), plain_http=True
        )
        try:
            web = Web(server.url, None)
            assert (await asyncio.to_thread(web.sign_in)).status == 303
            assert (await asyncio.to_thread(web.get, "/fleet")).status == 200
            removed = await asyncio.to_thread(
                subprocess.run,
                [*ESTCOAP, "console", "user", "remove", pki.ca_dir, CONSOLE_USER],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert removed.returncode == 0, removed.stderr
            reply = await asyncio.to_thread(web.get, "/fleet")
            assert reply.status == 303 and reply.headers["Location"] == "/login"
        finally:
            await server.close()
