"""Revocation records in the CA store (issue 14): revoke, look up, version, CRL numbers,
and the upgrade in place of a store written before revocation existed."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509

from estcoap.ca import CaPaths, Store
from estcoap.ca.store import (
    SCHEMA_VERSION,
    AlreadyRevoked,
    IntegrityViolation,
    RevocationRefused,
    UnknownCertificate,
)

DATA = Path(__file__).resolve().parents[1] / "data"
KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def table(store: Store, name: str) -> list[tuple]:  # type: ignore[type-arg]
    with store._read() as cur:
        return [tuple(row) for row in cur.execute(f"SELECT * FROM {name}").fetchall()]


@pytest.fixture
def store(store_ca_dir: Path):
    """The store of a new CA, once on SQLite and once on PostgreSQL (conftest.store_url)."""
    with Store.open(CaPaths.of(store_ca_dir).store_location(), create=False) as opened:
        yield opened


def server_serial(store: Store) -> str:
    return store.issued_list()[0].serial


def test_revoke_records_who_when_why(store: Store) -> None:
    serial = server_serial(store)
    assert store.revocation_of(serial) is None
    assert store.revocation_version() == 0
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    record = store.revoke(
        serial, reason=KEY_COMPROMISE, invalidity_date=when, revoked_by="cli:alice"
    )
    assert record.serial == serial
    assert record.reason == "keyCompromise"
    assert record.reason_flag is KEY_COMPROMISE
    assert record.invalidity_date == "2024-05-01T12:00:00+00:00"
    assert record.revoked_by == "cli:alice"
    assert record.label is None
    assert abs(record.revocation_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert store.revocation_of(serial) == record
    assert store.revocation_of(int(serial, 16)) == record
    assert store.revocation_of(serial.upper()) == record
    assert store.revoked_list() == [record]
    assert store.revoked_serials() == {int(serial, 16)}
    assert store.revocation_version() == 1


def test_unknown_and_already_revoked_change_nothing(store: Store) -> None:
    serial = server_serial(store)
    with pytest.raises(UnknownCertificate, match="no certificate with serial abc"):
        store.revoke("abc", reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t")
    assert table(store, "revoked") == []
    first = store.revoke(
        serial, reason=x509.ReasonFlags.superseded, invalidity_date=None, revoked_by="t"
    )
    before = table(store, "revoked")
    with pytest.raises(AlreadyRevoked, match="already revoked") as refused:
        store.revoke(serial, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="u")
    assert refused.value.record == first
    assert table(store, "revoked") == before
    assert store.revocation_version() == 1


@pytest.mark.parametrize(
    "reason",
    [
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.aa_compromise,
        x509.ReasonFlags.certificate_hold,
        x509.ReasonFlags.remove_from_crl,
    ],
)
def test_reasons_not_for_end_entities_are_refused(store: Store, reason: x509.ReasonFlags) -> None:
    with pytest.raises(RevocationRefused, match=reason.value):
        store.revoke(server_serial(store), reason=reason, invalidity_date=None, revoked_by="t")
    assert table(store, "revoked") == []


def test_invalidity_date_in_the_future_is_refused(store: Store) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with pytest.raises(RevocationRefused, match="future"):
        store.revoke(
            server_serial(store), reason=KEY_COMPROMISE, invalidity_date=later, revoked_by="t"
        )
    assert table(store, "revoked") == []


def test_version_is_seen_by_another_connection(store: Store) -> None:
    """`ca revoke` runs in another process: a second connection stands for it."""
    with Store.open(store.url, create=False) as other:
        assert other.revocation_version() == 0
        store.revoke(
            server_serial(store), reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t"
        )
        assert other.revocation_version() == 1
        assert other.revoked_serials() == {int(server_serial(store), 16)}


def test_revoked_serials_after_a_version(store: Store, store_ca_dir: Path) -> None:
    from estcoap.ca.ra import issue_ra

    serials = [int(server_serial(store), 16)]
    serials += [issue_ra(store_ca_dir, name=f"ra-{i}").certificate.serial_number for i in range(2)]
    assert store.revoked_serials_after(-1) == (-1, set())
    for serial in serials:
        store.revoke(serial, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t")
    assert store.revoked_serials_after(0) == (3, set(serials))
    assert store.revoked_serials_after(1) == (3, set(serials[1:]))
    assert store.revoked_serials_after(3) == (3, set())
    assert store.revoked_serials() == set(serials)


def test_crl_numbers_increase_per_scope_across_connections(store: Store) -> None:
    assert [store.next_crl_number() for _ in range(3)] == [1, 2, 3]
    assert store.next_crl_number("tenant-a") == 1
    with Store.open(store.url, create=False) as other:
        assert other.next_crl_number() == 4
    assert store.next_crl_number() == 5


def fixture_copy(tmp_path: Path) -> Path:
    path = tmp_path / "est.sqlite3"
    shutil.copyfile(DATA / "store-v2.sqlite3", path)
    path.chmod(0o600)
    return path


def test_a_store_of_the_previous_release_upgrades_in_place(tmp_path: Path) -> None:
    path = fixture_copy(tmp_path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (2,)
    before = raw.execute("SELECT * FROM issued ORDER BY id").fetchall()
    pending = raw.execute("SELECT * FROM pending").fetchall()
    raw.close()
    assert len(before) == 5 and len(pending) == 1

    with Store.open(path, create=False) as store:
        assert store.schema_version == SCHEMA_VERSION >= 3  # 3: revocation
        assert store._db.execute("SELECT * FROM issued ORDER BY id").fetchall() == before
        assert store._db.execute("SELECT * FROM pending").fetchall() == pending
        ca = x509.load_pem_x509_certificate((DATA / "store-v2-ca.pem").read_bytes())
        for record in store.issued_list():
            assert record.certificate.issuer == ca.subject
        tenant = next(r for r in store.issued_list() if r.label == "tenant-a")
        device = next(r for r in store.issued_list() if r.subject == "CN=fixture-device-1")
        store.revoke(tenant.serial, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t")
        store.revoke(
            device.serial, reason=x509.ReasonFlags.superseded, invalidity_date=None, revoked_by="t"
        )
        assert [r.serial for r in store.revoked_list("tenant-a")] == [tenant.serial]
        assert {r.serial for r in store.revoked_list()} == {tenant.serial, device.serial}
        assert store.next_crl_number() == 1
    # Opened again: already at the current version, the revocations kept.
    with Store.open(path, create=False) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.revocation_version() == 2


def test_the_revoked_serial_must_be_an_issued_one(store: Store) -> None:
    """The foreign key holds even for a row written by hand."""
    with pytest.raises(IntegrityViolation), store._transaction() as cur:
        cur.execute(
            "INSERT INTO revoked (serial, reason, revoked_at, revoked_by, label)"
            " VALUES ('dead', 'unspecified', 'now', 't', '')"
        )
    assert table(store, "revoked") == []
