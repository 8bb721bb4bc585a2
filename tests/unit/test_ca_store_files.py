"""The store on disk: private file modes, refusing exposed files, upgrading old stores,
and erasing kept server-generated keys from the database file and its WAL."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from test_ca_support import enroll_request, make_csr, name, new_ca, user_peer

from estcoap.ca import CaPaths, LocalCA, Store, StoreError, init_ca
from estcoap.ca.paths import ExposedFileError
from estcoap.ca.store import SCHEMA_V1, SCHEMA_VERSION
from estcoap.service import Forbidden, KeyAndCertificate, Pending


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _store_files(store_path):
    return [
        store_path,
        store_path.with_name(store_path.name + "-wal"),
        store_path.with_name(store_path.name + "-shm"),
    ]


@pytest.fixture
def open_umask():
    """The most permissive umask a user could have: modes must not depend on it."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_store_files_are_created_private_whatever_the_umask(tmp_path, open_umask):
    path = tmp_path / "est.sqlite3"
    with Store.open(path) as store:
        store.submit_pending(
            operation="enroll",
            label=None,
            csr_der=b"0",
            csr_sha256="a",
            subject="CN=x",
            requester="user:x",
        )
        # While open in WAL mode, all three files exist: SQLite gives -wal and -shm
        # the database file's mode.
        files = _store_files(path)
        assert all(f.exists() for f in files)
        assert [_mode(f) for f in files] == [0o600, 0o600, 0o600]


def test_init_ca_writes_every_secret_private(tmp_path, open_umask):
    paths = init_ca(tmp_path / "ca", ["localhost"])
    assert _mode(paths.ca_key) == _mode(paths.server_key) == _mode(paths.store) == 0o600
    # LocalCA opens it: the WAL it creates is private too.
    ca = LocalCA.open(paths.dir)
    try:
        assert [_mode(f) for f in _store_files(paths.store) if f.exists()] == [0o600] * 3
    finally:
        ca.close()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_store_file_others_can_read_is_refused(tmp_path, suffix):
    paths = init_ca(tmp_path / "ca", ["localhost"])
    exposed = paths.store.with_name(paths.store.name + suffix)
    exposed.touch(exist_ok=True)
    exposed.chmod(0o644)
    with pytest.raises(StoreError) as refused:
        Store.open(paths.store)
    message = str(refused.value)
    assert message == (
        f"{exposed} is accessible by other users (mode 0644); run: chmod 600 {exposed}"
    )
    assert _mode(exposed) == 0o644  # nothing is changed behind the operator's back
    # LocalCA says the same as a ValueError, which `serve` prints as one line.
    with pytest.raises(ValueError, match="chmod 600"):
        LocalCA.open(paths.dir)
    exposed.chmod(0o600)
    LocalCA.open(paths.dir).close()


@pytest.mark.parametrize("key", ["ca_key", "server_key"])
def test_a_ca_key_others_can_read_is_refused(tmp_path, key):
    paths = init_ca(tmp_path / "ca", ["localhost"])
    getattr(paths, key).chmod(0o640)  # group-readable is exposed too
    with pytest.raises(ExposedFileError, match=f"{getattr(paths, key).name} is accessible"):
        LocalCA.open(paths.dir)


# ---- upgrading a store written before schema version 2 -----------------------------


def _v1_store(path) -> None:
    """A store as estcoap wrote it at schema version 1 (the SQL of that release)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA_V1.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    return db


async def test_a_version_1_store_opens_and_upgrades_in_place(tmp_path):
    paths = CaPaths.of(tmp_path / "ca")
    init_ca(paths.dir, ["localhost"])
    paths.store.unlink()  # replaced by one that estcoap's schema version 1 wrote
    for leftover in _store_files(paths.store)[1:]:
        leftover.unlink(missing_ok=True)

    waiting = make_csr(subject=name("from-v1"))
    db = _v1_store(paths.store)
    db.execute(
        "INSERT INTO pending (operation, label, csr_der, csr_sha256, subject, requester, created)"
        " VALUES ('enroll', '', ?, ?, 'CN=from-v1', 'user:carol', '2024-01-01T00:00:00+00:00')",
        (waiting.der, waiting.sha256),
    )
    db.close()

    ca = LocalCA.open(paths.dir, approval="manual")
    try:
        assert ca.store.schema_version == SCHEMA_VERSION  # every migration since ran
        (record,) = ca.store.pending_list()
        assert (record.requester, record.requester_id) == ("user:carol", None)
        # A version-1 record is matched by its requester text: carol keeps her request...
        assert isinstance(await ca.enroll(enroll_request(waiting, user_peer("carol"))), Pending)
        # ...and nobody else gets it.
        with pytest.raises(Forbidden, match="another requester"):
            await ca.enroll(enroll_request(waiting, user_peer("dave")))
        # New records carry the stable identity.
        await ca.enroll(enroll_request(make_csr(subject=name("new")), user_peer("carol")))
        assert ca.store.pending_list()[-1].requester_id == "user:carol"
    finally:
        ca.close()
    with Store.open(paths.store, create=False) as again:
        assert again.schema_version == SCHEMA_VERSION


# ---- a kept server-generated key leaves the disk ---------------------------------------


def _on_disk(store_path) -> bytes:
    return b"".join(f.read_bytes() for f in _store_files(store_path) if f.exists())


def _secret_parts(answer: KeyAndCertificate) -> list[bytes]:
    key = serialization.load_der_private_key(answer.private_key, None)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    return [answer.private_key, scalar]


async def _approved_serverkeygen(ca: LocalCA, subject: str):
    request = enroll_request(make_csr(subject=name(subject)), user_peer("alice"))
    assert isinstance(await ca.serverkeygen(request), Pending)
    (record,) = [r for r in ca.store.pending_list() if r.subject == f"CN={subject}"]
    with Store.open(ca.paths.store, create=False) as operator:
        operator.approve(record.id)
    answer = await ca.serverkeygen(request)
    assert isinstance(answer, KeyAndCertificate)
    return request, answer


async def test_a_kept_key_is_erased_from_the_file_and_the_wal(tmp_path):
    ca = new_ca(tmp_path, approval="manual", key_retention=300)
    try:
        request, answer = await _approved_serverkeygen(ca, "kept")
        secrets = _secret_parts(answer)
        assert ca.store.kept_keys() == 1
        assert any(s in _on_disk(ca.paths.store) for s in secrets)  # the scan can see it
        assert await ca.serverkeygen(request) == answer  # within retention: same answer

        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=301)
        assert ca.store.forget_keys(later - dt.timedelta(seconds=300)) == 1
        assert ca.store.kept_keys() == 0
        assert ca.store.scrub_deleted()
        disk = _on_disk(ca.paths.store)
        assert not any(s in disk for s in secrets)

        with pytest.raises(Forbidden, match="delivered and is no longer kept"):
            await ca.serverkeygen(request)
    finally:
        ca.close()


async def test_zero_retention_keeps_the_key_only_for_the_first_answer(tmp_path):
    ca = new_ca(tmp_path, approval="manual", key_retention=0)
    try:
        request, answer = await _approved_serverkeygen(ca, "once")
        assert ca.store.kept_keys() == 0
        ca.store.scrub_deleted()
        disk = _on_disk(ca.paths.store)
        assert not any(s in disk for s in _secret_parts(answer))
        # The repeat is a clear refusal, never a 5.00.
        with pytest.raises(Forbidden, match="send a new CSR"):
            await ca.serverkeygen(request)
    finally:
        ca.close()


async def test_expired_keys_are_erased_when_the_next_request_comes(tmp_path):
    ca = new_ca(tmp_path, approval="manual", key_retention=300)
    try:
        await _approved_serverkeygen(ca, "first")
        assert ca.store.kept_keys() == 1
        ca.key_retention = 0  # as if its retention had run out
        await ca.serverkeygen(enroll_request(make_csr(subject=name("next")), user_peer()))
        assert ca.store.kept_keys() == 0
    finally:
        ca.close()
