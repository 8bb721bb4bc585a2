"""The audit trail in the CA store: every issuance, revocation, approval and denial, with
who asked, who decided and when (`estcoap ca audit DIR`, docs/operations.md).

A row is written in the same transaction as what it records (Store.record_issued,
revoke, approve, deny), so the trail has an entry for every committed act and none for an
act that was rolled back. Rows are never changed or removed.

who asked: the requester as the CA saw it (cert:SUBJECT, user:NAME, psk:IDENTITY) or,
for a revocation, the operator. who decided: "auto" for an issuance the policy allowed
without a person (--approval auto), the operator who approved the request behind a
manually approved one, the operator for a revocation, approval or denial (the CLI
writes cli:$USER), the requester itself for a certificate the CA made at `ca init`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .sql import Cursor

EVENTS = ("issued", "revoked", "approved", "denied")
AUTO = "auto"
# What a store upgraded from before the audit trail says about decisions it never recorded.
UNRECORDED = "unrecorded"

# The store migration that adds the table (appended to store.MIGRATIONS), and fills it
# from what an older store already holds: its issuances, decisions and revocations, with
# "unrecorded" where it never kept who decided.
SCHEMA_AUDIT = f"""
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,         -- ISO 8601 UTC, seconds
    event        TEXT NOT NULL CHECK (event IN ('issued', 'revoked', 'approved', 'denied')),
    serial       TEXT,                  -- the certificate (issued, revoked)
    request_id   INTEGER,               -- the pending request (approved, denied, issued)
    subject      TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    decided_by   TEXT NOT NULL,
    detail       TEXT NOT NULL          -- operation and kind; the revocation reason
);
CREATE INDEX audit_by_time ON audit (at);
INSERT INTO audit (at, event, request_id, subject, requested_by, decided_by, detail)
    SELECT decided, state, id, subject, requester, '{UNRECORDED}', operation FROM pending
    WHERE state IN ('approved', 'denied') AND decided IS NOT NULL;
INSERT INTO audit (at, event, serial, request_id, subject, requested_by, decided_by, detail)
    SELECT created, 'issued', serial, pending_id, subject, requester,
        CASE WHEN operation = 'init' THEN requester
             WHEN pending_id IS NULL THEN '{AUTO}' ELSE '{UNRECORDED}' END,
        operation || ' ' || kind
    FROM issued;
INSERT INTO audit (at, event, serial, subject, requested_by, decided_by, detail)
    SELECT r.revoked_at, 'revoked', r.serial, i.subject, r.revoked_by, r.revoked_by, r.reason
    FROM revoked AS r JOIN issued AS i ON i.serial = r.serial;
"""


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: str
    event: str
    serial: str | None
    request_id: int | None
    subject: str
    requested_by: str
    decided_by: str
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at,
            "event": self.event,
            "serial": self.serial,
            "request_id": self.request_id,
            "subject": self.subject,
            "requested_by": self.requested_by,
            "decided_by": self.decided_by,
            "detail": self.detail,
        }


_COLUMNS = "id, at, event, serial, request_id, subject, requested_by, decided_by, detail"


def write(
    cur: Cursor,
    event: str,
    *,
    subject: str,
    requested_by: str,
    decided_by: str,
    detail: str = "",
    serial: str | None = None,
    request_id: int | None = None,
) -> None:
    """One row, in the caller's transaction."""
    cur.execute(
        INSERT,
        values(
            event,
            subject=subject,
            requested_by=requested_by,
            decided_by=decided_by,
            detail=detail,
            serial=serial,
            request_id=request_id,
        ),
    )


INSERT = (
    "INSERT INTO audit (at, event, serial, request_id, subject, requested_by, decided_by,"
    " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def values(
    event: str,
    *,
    subject: str,
    requested_by: str,
    decided_by: str,
    detail: str = "",
    serial: str | None = None,
    request_id: int | None = None,
) -> tuple[object, ...]:
    """The parameters of INSERT for one row (a store may send it with other statements)."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    return (_now(), event, serial, request_id, subject, requested_by, decided_by, detail)


def approver_of(cur: Cursor, request_id: int) -> str:
    """Who approved a pending request (the decider of a manual approval's issuance)."""
    row = cur.execute(
        "SELECT decided_by FROM audit WHERE request_id = ? AND event = 'approved'"
        " ORDER BY id DESC LIMIT 1",
        (request_id,),
    ).fetchone()
    return str(row[0]) if row else UNRECORDED


def read(cur: Cursor, since: dt.datetime | None = None) -> list[AuditRecord]:
    """The trail, oldest first; since: only rows at or after that moment."""
    if since is None:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY at, id").fetchall()
    else:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM audit WHERE at >= ? ORDER BY at, id",
            (since.astimezone(dt.UTC).isoformat(timespec="seconds"),),
        ).fetchall()
    return [AuditRecord(*row) for row in rows]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
