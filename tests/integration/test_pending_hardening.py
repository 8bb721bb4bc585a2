"""Manual approval and the store under attack, over real sockets on loopback: a replayed
serverkeygen CSR, a flood of pending requests, a renewed certificate renewing again, and
`estcoap serve` with its store files private (and refusing them when they are not)."""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import CaPaths, LocalCA, Store
from estcoap.client import EstClient, EstClientError
from estcoap.codec import b64
from estcoap.https import start_https_server, user_from_arg
from tests.integration.coaps_fixtures import make_deployment, running_coaps, write_identity
from tests.integration.https_fixtures import raw_session

PKCS10 = {"Content-Type": "application/pkcs10"}
USERS = {"alice": "alice's secret", "mallory": "mallory's secret"}


def _basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    return {**PKCS10, "Authorization": f"Basic {token}"}


def _csr(subject: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string(subject)
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.DER)


@contextlib.asynccontextmanager
async def manual_https(ca_dir: Path, **ca_options: object) -> AsyncIterator[tuple[str, LocalCA]]:
    ca = LocalCA.open(ca_dir, approval="manual", retry_after=1, **ca_options)  # type: ignore[arg-type]
    paths = CaPaths.of(ca_dir)
    server = await start_https_server(
        ca,
        "127.0.0.1",
        0,
        cert_chain=paths.server_cert,
        key=paths.server_key,
        users=[user_from_arg(f"{u}:{p}") for u, p in USERS.items()],
    )
    try:
        yield server.url, ca
    finally:
        await server.close()
        ca.close()


def _approve_all(ca_dir: Path) -> None:
    with Store.open(CaPaths.of(ca_dir).store, create=False) as operator:
        for record in operator.pending_list("pending"):
            operator.approve(record.id)


async def test_a_replayed_serverkeygen_csr_gets_another_users_key_never(ca_dir: Path) -> None:
    csr = b64.encode(_csr("CN=alice-device"))
    async with manual_https(ca_dir) as (url, ca), raw_session(ca.paths) as session:
        keygen = f"{url}/serverkeygen"
        async with session.post(keygen, data=csr, headers=_basic("alice")) as r:
            assert r.status == 202
        async with session.post(keygen, data=csr, headers=_basic("mallory")) as r:
            assert r.status == 403
        _approve_all(ca_dir)
        async with session.post(keygen, data=csr, headers=_basic("mallory")) as r:
            refused_body = await r.read()
            assert r.status == 403
            assert r.content_type == "text/plain"
            assert b"PRIVATE" not in refused_body and b"multipart" not in refused_body
            assert "another requester" in refused_body.decode()
        async with session.post(keygen, data=csr, headers=_basic("alice")) as r:
            assert r.status == 200
            assert r.content_type == "multipart/mixed"
            await r.read()
        # Mallory tried twice: still only alice's request was ever queued.
        assert [p.requester for p in ca.store.pending_list()] == ["user:alice"]


async def test_a_pending_flood_from_one_user_is_capped(ca_dir: Path) -> None:
    async with manual_https(ca_dir, max_pending_per_requester=5) as (url, ca):
        async with raw_session(ca.paths) as session:
            statuses = []
            for i in range(25):
                body = b64.encode(_csr(f"CN=flood-{i}"))
                async with session.post(
                    f"{url}/simpleenroll", data=body, headers=_basic("mallory")
                ) as r:
                    statuses.append(r.status)
                    diagnostic = await r.text()
            assert statuses == [202] * 5 + [403] * 20
            assert "at most 5" in diagnostic
            # alice is not locked out by mallory's flood.
            body = b64.encode(_csr("CN=alice-1"))
            async with session.post(f"{url}/simpleenroll", data=body, headers=_basic("alice")) as r:
                assert r.status == 202
        assert len(ca.store.pending_list()) == 6


async def test_a_renewed_certificate_cannot_renew_again_over_coaps(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    device = deployment.device("dev-renew")
    async with running_coaps(deployment) as run:
        key = ec.generate_private_key(ec.SECP256R1())
        async with run.client(device) as est:
            (first, *_) = await est.enroll(key=key, subject=device.certificate.subject)
        operational = write_identity(deployment.root, "op1", first, key)
        async with run.client(operational) as est:
            renewed = (await est.reenroll())[0]
            # Its answer lost, the device asks again (a re-signed CSR, the same key).
            assert await est.reenroll() == [renewed]
            with pytest.raises(EstClientError) as refused:  # a rekey from the old certificate
                await est.reenroll(key=ec.generate_private_key(ec.SECP256R1()))
        assert refused.value.status == "4.03"
        assert f"already renewed by serial {renewed.serial_number:x}" in str(refused.value)
        newest = write_identity(deployment.root, "op2", renewed, key)
        async with run.client(newest) as est:
            assert (await est.reenroll())[0].subject == first.subject


# ---- `estcoap serve` and the files of its store ----------------------------------------


def _serve(ca_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "estcoap.cli",
            "serve",
            "--ca",
            str(ca_dir),
            "--https",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The most permissive umask: the store's modes must not depend on it.
        preexec_fn=lambda: os.umask(0),
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_serve_keeps_every_store_file_private(ca_dir: Path) -> None:
    server = _serve(ca_dir, "--approval", "manual", "--users-file", str(_users_file(ca_dir)))
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "serving EST over HTTPS on " in line, server.stderr.read() if server.stderr else ""
        url = line.split(" on ", 1)[1].strip()
        paths = CaPaths.of(ca_dir)
        async with EstClient(
            url, trust=paths.ca_cert, user="alice", password=USERS["alice"], max_pending_attempts=0
        ) as est:
            with pytest.raises(EstClientError, match="still pending"):
                await est.serverkeygen(subject="CN=waiting")
        files = [paths.store, Path(f"{paths.store}-wal"), Path(f"{paths.store}-shm")]
        assert all(f.exists() for f in files)
        assert [_mode(f) for f in files] == [0o600, 0o600, 0o600]
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _users_file(ca_dir: Path) -> Path:
    path = ca_dir.parent / "users"
    done = subprocess.run(
        [sys.executable, "-m", "estcoap.cli", "users", "add", str(path), "alice"],
        input=USERS["alice"] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize("which", ["est.sqlite3", "ca.key"])
def test_serve_refuses_secrets_others_can_read(ca_dir: Path, which: str) -> None:
    exposed = ca_dir / which
    exposed.chmod(0o644)
    server = _serve(ca_dir)
    out, err = server.communicate(timeout=60)
    assert server.returncode == 1
    assert err.strip() == (
        f"estcoap serve: {exposed} is accessible by other users (mode 0644); "
        f"run: chmod 600 {exposed}"
    )
    assert "serving" not in out
    assert _mode(exposed) == 0o644


async def test_serve_applies_its_pending_cap(ca_dir: Path) -> None:
    server = _serve(
        ca_dir,
        "--approval",
        "manual",
        "--users-file",
        str(_users_file(ca_dir)),
        "--max-pending-per-requester",
        "2",
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split(" on ", 1)[1].strip()
        async with EstClient(
            url,
            trust=CaPaths.of(ca_dir).ca_cert,
            user="alice",
            password=USERS["alice"],
            max_pending_attempts=0,
        ) as est:
            for i in range(2):
                with pytest.raises(EstClientError, match="still pending"):
                    await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject=f"CN={i}")
            with pytest.raises(EstClientError) as refused:
                await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject="CN=2")
        assert refused.value.status == "403"
        assert "at most 2" in str(refused.value)
    finally:
        server.terminate()
        server.communicate(timeout=30)


@pytest.mark.parametrize("option", ["--max-pending-per-requester", "--max-pending"])
def test_serve_refuses_a_cap_of_zero(ca_dir: Path, option: str) -> None:
    server = _serve(ca_dir, option, "0")
    out, err = server.communicate(timeout=60)
    assert server.returncode == 2  # a wrong command line (estcoap.cli's exit rule)
    assert err.strip() == (
        f"estcoap serve: argument {option}: expected a positive integer, got '0' "
        "(see 'estcoap serve --help')"
    )
    assert "serving" not in out
