"""`estcoap ca migrate-store`: copy every record of one CA store into another, empty one,
of either backend (SQLite to PostgreSQL when a CA grows to several instances, or back).

Ids and serials are kept, so a pending request's id that a device or an operator holds,
the audit trail's order and the revocation version all mean the same in the copy. The
copy is one transaction on the target: it is all there or not at all. The counts of both
stores are compared afterwards. The source is only read; servers writing to it meanwhile
would make the copy stale, so they are stopped first (docs/operations.md).
"""

from __future__ import annotations

from pathlib import Path

from .sql import StoreError
from .store import TABLES, Store

# Each table's columns, with the ids that other rows and the operators refer to, and the
# order that copies references before the rows that hold them (renewed_from: older ids).
COLUMNS: dict[str, tuple[str, str]] = {
    "pending": (
        "id, operation, label, csr_der, csr_sha256, subject, requester, created, state,"
        " decided, requester_id",
        "id",
    ),
    "issued": (
        "id, serial, subject, san, not_before, not_after, csr_sha256, requester, label,"
        " operation, kind, renewed_from, pending_id, cert_der, key_der, created",
        "id",
    ),
    "revoked": ("id, serial, reason, revoked_at, invalidity_date, revoked_by, label", "id"),
    "crl_number": ("scope, number", "scope"),
    "psk": ("identity, key, subject, uses_left, expires, created", "identity"),
    "audit": (
        "id, at, event, serial, request_id, subject, requested_by, decided_by, detail",
        "id",
    ),
}
assert tuple(COLUMNS) == TABLES


class MigrationError(StoreError):
    """A copy refused or found incomplete; the target holds nothing of it."""


def migrate_store(source: str | Path, target: str | Path) -> dict[str, int]:
    """Copy source into target (created if need be, refused unless empty); the number of
    rows copied per table."""
    with Store.open(source, create=False) as src:
        with Store.open(target, create=True) as dst:
            if src.url == dst.url:
                raise MigrationError("the source and the target are the same store")
            if not dst.is_empty():
                raise MigrationError(
                    f"the target {dst.url} holds records already; migrate-store fills only "
                    "an empty store"
                )
            copied = _copy(src, dst)
            for table, n in copied.items():
                now = _count(dst, table), _count(src, table)
                if now != (n, n):
                    raise MigrationError(
                        f"{table}: {n} rows copied, but the target has {now[0]} and the "
                        f"source {now[1]}: was a server writing to the source?"
                    )
    return copied


def _copy(src: Store, dst: Store) -> dict[str, int]:
    copied: dict[str, int] = {}
    with src._read() as read, dst._transaction() as write:
        for table in TABLES:
            columns, order = COLUMNS[table]
            rows = read.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()
            marks = ", ".join("?" for _ in columns.split(","))
            insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
            for row in rows:
                write.execute(insert, tuple(row))
            copied[table] = len(rows)
        dst._ids_copied(write, [t for t in TABLES if COLUMNS[t][1] == "id"])
    return copied


def _count(store: Store, table: str) -> int:
    with store._read() as cur:
        return int(cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
