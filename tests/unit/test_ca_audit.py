"""The audit trail in the CA store (issue 16): every issuance, revocation, approval and
denial with who asked, who decided and when; written with the act, in its transaction;
a store of the previous schema version upgrades in place, its history carried over."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import CaPaths, Store
from estcoap.ca.audit import SCHEMA_AUDIT, UNRECORDED
from estcoap.ca.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    IntegrityViolation,
    StoreError,
    statements,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def certificate(cn: str) -> x509.Certificate:
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


@pytest.fixture
def store(store_ca_dir: Path):
    """The store of a new CA, once on SQLite and once on PostgreSQL (conftest.store_url)."""
    with Store.open(CaPaths.of(store_ca_dir).store_location(), create=False) as opened:
        yield opened


def pending(store: Store, cn: str) -> int:
    return store.submit_pending(
        operation="enroll",
        label=None,
        csr_der=b"csr",
        csr_sha256=cn,
        subject=f"CN={cn}",
        requester=f"cert:CN={cn}-idevid",
        requester_id=cn,
    ).id


def test_every_act_is_recorded_with_who_asked_and_who_decided(store: Store) -> None:
    (init,) = store.audit_list()
    assert (init.event, init.requested_by, init.decided_by) == ("issued", "ca init", "ca init")

    auto = store.record_issued(certificate("auto"), requester="cert:CN=a", operation="enroll")
    approved, denied = pending(store, "manual"), pending(store, "refused")
    store.approve(approved, decided_by="cli:olga")
    store.deny(denied, decided_by="cli:piet")
    manual = store.record_issued(
        certificate("manual"),
        requester="cert:CN=manual-idevid",
        operation="enroll",
        pending_id=approved,
    )
    store.revoke(
        auto.serial,
        reason=x509.ReasonFlags.key_compromise,
        invalidity_date=None,
        revoked_by="cli:olga",
    )

    trail = [
        (r.event, r.serial, r.request_id, r.subject, r.requested_by, r.decided_by, r.detail)
        for r in store.audit_list()[1:]
    ]
    assert trail == [
        ("issued", auto.serial, None, "CN=auto", "cert:CN=a", "auto", "enroll new"),
        ("approved", None, approved, "CN=manual", "cert:CN=manual-idevid", "cli:olga", "enroll"),
        ("denied", None, denied, "CN=refused", "cert:CN=refused-idevid", "cli:piet", "enroll"),
        # the issuance behind a manual approval was decided by who approved it
        (
            "issued",
            manual.serial,
            approved,
            "CN=manual",
            "cert:CN=manual-idevid",
            "cli:olga",
            "enroll new",
        ),
        ("revoked", auto.serial, None, "CN=auto", "cli:olga", "cli:olga", "keyCompromise"),
    ]
    for record in store.audit_list():
        moment = dt.datetime.fromisoformat(record.at)
        assert abs(dt.datetime.now(dt.UTC) - moment) < dt.timedelta(minutes=5)
    assert store.audit_list(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == []
    assert len(store.audit_list(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))) == 6


def test_an_act_that_fails_leaves_no_audit_row(store: Store) -> None:
    request = pending(store, "once")
    store.approve(request, decided_by="cli:olga")
    with pytest.raises(StoreError, match="already approved"):
        store.deny(request, decided_by="cli:piet")
    cert = certificate("twice")
    store.record_issued(cert, requester="cert:CN=t", operation="enroll")
    with pytest.raises(StoreError):
        store.record_issued(cert, requester="cert:CN=t", operation="enroll")  # same serial
    events = [r.event for r in store.audit_list()]
    assert events == ["issued", "approved", "issued"]


def test_the_trail_cannot_hold_an_unknown_event(store: Store) -> None:
    with pytest.raises(IntegrityViolation), store._transaction() as cur:
        cur.execute(
            "INSERT INTO audit (at, event, subject, requested_by, decided_by, detail)"
            " VALUES ('now', 'deleted', '', '', '', '')"
        )


def test_a_store_of_the_previous_version_upgrades_with_its_history(tmp_path: Path) -> None:
    """A version-4 store (before the audit trail), with a revocation and a decided request,
    made from the version-2 fixture by the migrations of that time."""
    assert MIGRATIONS[-1] is SCHEMA_AUDIT and SCHEMA_VERSION == len(MIGRATIONS)
    path = tmp_path / "est.sqlite3"
    shutil.copyfile(DATA / "store-v2.sqlite3", path)
    path.chmod(0o600)
    raw = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[2:-1]:
        for statement in statements(step):
            raw.execute(statement)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    serial, subject = raw.execute(
        "SELECT serial, subject FROM issued WHERE operation = 'enroll' ORDER BY id LIMIT 1"
    ).fetchone()
    raw.execute(
        "INSERT INTO revoked (serial, reason, revoked_at, revoked_by, label) VALUES"
        " (?, 'superseded', '2025-01-02T03:04:05+00:00', 'cli:olga', '')",
        (serial,),
    )
    raw.execute("UPDATE pending SET state = 'denied', decided = '2025-01-01T00:00:00+00:00'")
    issued = raw.execute("SELECT count(*) FROM issued").fetchone()[0]
    raw.close()

    with Store.open(path, create=False) as store:
        assert store.schema_version == SCHEMA_VERSION
        trail = store.audit_list()
    assert [r.event for r in trail].count("issued") == issued == 5
    revoked = next(r for r in trail if r.event == "revoked")
    assert (revoked.serial, revoked.subject, revoked.decided_by) == (serial, subject, "cli:olga")
    assert revoked.at == "2025-01-02T03:04:05+00:00" and revoked.detail == "superseded"
    denied = next(r for r in trail if r.event == "denied")
    assert denied.decided_by == UNRECORDED  # the older store never kept who decided
    kinds = {r.detail.split()[0]: r.decided_by for r in trail if r.event == "issued"}
    assert kinds["enroll"] == "auto"
    with Store.open(path, create=False) as store:  # opened again: nothing added twice
        assert store.audit_list() == trail
