"""`estcoap ca migrate-store DIR SOURCE TARGET` (issue 17): every record of a CA's SQLite
store reaches PostgreSQL with its ids and serials, the CA then uses the copy, and a target
that holds anything is refused untouched."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from test_ca_support import enroll_request, make_csr, name, new_ca, user_peer

from estcoap.ca import CaPaths, Store
from estcoap.ca.store import TABLES
from estcoap.ca.store_migrate import COLUMNS, MigrationError, migrate_store
from estcoap.cli import main
from estcoap.service import Certificates, EnrollRequest, Pending

PSK = bytes(range(16))


async def _a_store_with_every_kind_of_record(tmp_path: Path) -> tuple[Path, EnrollRequest]:
    """A CA on SQLite with issued, pending (approved, denied, waiting), revoked, a CRL
    number, a PSK and the audit trail of it all; and the request still waiting."""
    ca = new_ca(tmp_path, approval="manual")
    try:
        requests = [enroll_request(make_csr(subject=name(f"d{i}")), user_peer()) for i in range(3)]
        for request in requests:
            await ca.enroll(request)
        first, second, _ = ca.store.pending_list()
        ca.store.approve(first.id, decided_by="cli:olga")
        ca.store.deny(second.id, decided_by="cli:olga")
        issued = await ca.enroll(requests[0])
        ca.store.revoke(
            issued.certificates[0].serial_number,
            reason=x509.ReasonFlags.superseded,
            invalidity_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            revoked_by="cli:olga",
        )
        ca.store.next_crl_number()
        ca.store.psk_add("boot-1", PSK, subject="CN=boot-1", uses=3)
    finally:
        ca.close()
    return tmp_path / "ca", requests[2]


def _rows(location: str | Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    with Store.open(location, create=False) as store, store._read() as cur:
        return {
            table: [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in cur.execute(
                    f"SELECT {COLUMNS[table][0]} FROM {table} ORDER BY {COLUMNS[table][1]}"
                ).fetchall()
            ]
            for table in TABLES
        }


async def test_every_record_is_copied_with_its_ids(tmp_path: Path, pg_url: str) -> None:
    ca_dir, waiting = await _a_store_with_every_kind_of_record(tmp_path)
    source = f"sqlite:{CaPaths.of(ca_dir).store}"
    before = _rows(source)
    assert all(before[table] for table in TABLES)  # something of every kind to copy

    counts = migrate_store(source, pg_url)

    assert counts == {table: len(rows) for table, rows in before.items()}
    assert _rows(pg_url) == before
    with Store.open(pg_url, create=False) as copy:  # new rows get ids above the copied ones
        newest = max(r[0] for r in before["pending"])
        record = copy.submit_pending(
            operation="enroll",
            label=None,
            csr_der=b"0",
            csr_sha256="ff",
            subject="CN=new",
            requester="user:x",
        )
        assert record.id == newest + 1


async def test_the_cli_copies_and_the_ca_then_uses_the_copy(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir, waiting = await _a_store_with_every_kind_of_record(tmp_path)
    paths = CaPaths.of(ca_dir)
    source = f"sqlite:{paths.store}"
    assert main(["ca", "migrate-store", str(ca_dir), source, pg_url]) == 0
    out = capsys.readouterr().out
    assert "copied" in out and "3 pending" in out
    assert paths.store_location() == pg_url
    assert paths.store_url.stat().st_mode & 0o077 == 0

    ca = new_ca(tmp_path, approval="manual")  # opens what store.url names
    try:
        assert ca.store.url == pg_url
        assert await ca.enroll(waiting) == Pending(ca.retry_after)  # the same request id
        assert main(["pending", "approve", str(ca_dir), "3"]) == 0
        answer = await ca.enroll(waiting)
        assert isinstance(answer, Certificates)
        serial = format(answer.certificates[0].serial_number, "x")
    finally:
        ca.close()
    capsys.readouterr()
    assert main(["ca", "list", str(ca_dir)]) == 0
    assert serial in capsys.readouterr().out


async def test_a_target_with_records_is_refused_untouched(tmp_path: Path, pg_url: str) -> None:
    ca_dir, waiting = await _a_store_with_every_kind_of_record(tmp_path)
    source = f"sqlite:{CaPaths.of(ca_dir).store}"
    with Store.open(pg_url) as target:
        target.psk_add("other", PSK, subject="CN=other")
    before = _rows(pg_url)
    with pytest.raises(MigrationError, match="holds records already"):
        migrate_store(source, pg_url)
    assert _rows(pg_url) == before
    assert main(["ca", "migrate-store", str(ca_dir), source, pg_url]) == 1
    assert not CaPaths.of(ca_dir).store_url.exists()  # still on its SQLite file
