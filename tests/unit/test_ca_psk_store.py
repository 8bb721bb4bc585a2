"""PSKs in the CA store (issue 15): bound to a subject, a number of uses and an expiry; a
use is spent only with the certificate it pays for, in the same transaction, so a failed
recording burns nothing and two racing requests cannot both spend a one-time key; a store
of the previous schema version upgrades in place."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import CaPaths, Store
from estcoap.ca.psk_table import SCHEMA_PSK, PskError, PskExhausted
from estcoap.ca.store import MIGRATIONS, SCHEMA_VERSION, SerialCollision

DATA = Path(__file__).resolve().parents[1] / "data"
KEY = bytes(range(16))


@pytest.fixture
def store_path(store_ca_dir: Path) -> str | Path:
    """The store of a new CA, once on SQLite and once on PostgreSQL (conftest.store_url)."""
    return CaPaths.of(store_ca_dir).store_location()


@pytest.fixture
def store(store_path: str | Path):
    with Store.open(store_path, create=False) as opened:
        yield opened


def a_certificate(cn: str = "dev-1") -> x509.Certificate:
    """A certificate with a fresh serial: the store records what it is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def record(store: Store, cert: x509.Certificate, identity: str) -> None:
    store.record_issued(
        cert, requester=f"psk:{identity}", operation="enroll", psk_identity=identity
    )


def test_add_list_remove_and_the_key_is_never_listed(store: Store) -> None:
    added = store.psk_add("dev-1", KEY, subject="CN=dev-1", uses=2)
    assert (added.identity, added.subject, added.uses_left, added.expires) == (
        "dev-1",
        "CN=dev-1",
        2,
        None,
    )
    assert store.psk_list() == [added]
    assert KEY not in repr(store.psk_list()).encode()
    assert store.psk_usable_key("dev-1") == KEY
    with pytest.raises(PskError, match="exists already"):
        store.psk_add("dev-1", KEY, subject="CN=dev-1")
    assert store.psk_remove("dev-1") is True
    assert store.psk_remove("dev-1") is False
    assert store.psk_usable_key("dev-1") is None


@pytest.mark.parametrize(
    "identity, key, why",
    [
        ("", KEY, "1 to 32 bytes"),
        ("x" * 33, KEY, "1 to 32 bytes"),
        ("dev\n1", KEY, "control characters"),
        ("dev-1", b"short", "16 to 32 bytes"),
        ("dev-1", bytes(33), "16 to 32 bytes"),
    ],
)
def test_what_no_handshake_can_use_is_refused(
    store: Store, identity: str, key: bytes, why: str
) -> None:
    with pytest.raises(PskError, match=why):
        store.psk_add(identity, key, subject="CN=x")
    assert store.psk_list() == []


def test_an_expired_key_gives_no_key_to_the_handshake(store: Store) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    store.psk_add("old", KEY, subject="CN=old", expires=past)
    assert store.psk_usable_key("old") is None
    assert store.psk_get("old").state() == "expired"  # type: ignore[union-attr]


def test_a_use_is_spent_with_the_certificate_and_not_without(store: Store) -> None:
    store.psk_add("dev-1", KEY, subject="CN=dev-1")
    cert = a_certificate()
    taken = store.issued_list()[0].certificate  # a serial the store has: recording fails
    with pytest.raises(SerialCollision):
        record(store, taken, "dev-1")
    assert store.psk_get("dev-1").uses_left == 1  # type: ignore[union-attr]  # nothing burnt

    record(store, cert, "dev-1")
    assert store.psk_get("dev-1").uses_left == 0  # type: ignore[union-attr]
    assert store.psk_usable_key("dev-1") is None
    assert store.find_issued(cert.serial_number).requester == "psk:dev-1"  # type: ignore[union-attr]


def test_a_spent_key_records_no_certificate(store: Store) -> None:
    store.psk_add("dev-1", KEY, subject="CN=dev-1")
    cert = a_certificate()
    with store._transaction() as cur:
        cur.execute("UPDATE psk SET uses_left = 0")
    with pytest.raises(PskExhausted, match="no use left"):
        record(store, cert, "dev-1")
    assert store.find_issued(cert.serial_number) is None


def test_two_processes_racing_spend_a_one_time_key_once(
    store_path: str | Path, store: Store
) -> None:
    """Two connections (as two serve processes would have) record a certificate each for
    the same one-time key at the same moment: one is recorded, the other refused."""
    store.psk_add("dev-1", KEY, subject="CN=dev-1")
    before = len(store.issued_list())
    certs = [a_certificate(), a_certificate()]
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def race(cert: x509.Certificate) -> None:
        with Store.open(store_path, create=False) as own:
            start.wait()
            try:
                record(own, cert, "dev-1")
                outcomes.append("issued")
            except PskExhausted:
                outcomes.append("refused")

    threads = [threading.Thread(target=race, args=(c,)) for c in certs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["issued", "refused"]
    assert len(store.issued_list()) == before + 1
    assert store.psk_get("dev-1").uses_left == 0  # type: ignore[union-attr]


def test_a_store_of_the_previous_version_upgrades_in_place(tmp_path: Path) -> None:
    """A store as the release before PSKs wrote it (version 2 fixture, migrated with the
    steps before the PSK one) opens, gains the PSK table and keeps its rows."""
    psk_step = MIGRATIONS.index(SCHEMA_PSK)
    path = tmp_path / "est.sqlite3"
    shutil.copyfile(DATA / "store-v2.sqlite3", path)
    path.chmod(0o600)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (2,)
    for step in MIGRATIONS[2:psk_step]:
        raw.executescript(step)
    raw.execute(f"PRAGMA user_version = {psk_step}")
    raw.commit()
    before = raw.execute("SELECT * FROM issued ORDER BY id").fetchall()
    raw.close()

    with Store.open(path, create=False) as store:
        assert store.schema_version == SCHEMA_VERSION > psk_step
        assert store._db.execute("SELECT * FROM issued ORDER BY id").fetchall() == before
        store.psk_add("dev-1", KEY, subject="CN=dev-1")
    with Store.open(path, create=False) as store:  # already current: nothing re-run
        assert store.schema_version == SCHEMA_VERSION
        assert [r.identity for r in store.psk_list()] == ["dev-1"]
