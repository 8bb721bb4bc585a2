"""The CA's records: every issued certificate, pending request, revocation, PSK and
audit row, behind one interface with two backends chosen by URL (Store.open):

* `sqlite:PATH` (or a plain path; the CA directory's est.sqlite3 by default):
  store_sqlite.py, one file, one process or several on one host;
* `postgresql://...`: store_pg.py, one database that several hosts share.

Store holds the SQL both backends run (written with ? placeholders; the PostgreSQL
backend translates them) and each backend supplies connections, transactions, the
schema version and the locks. Only ca/ knows SQL.

A certificate row is written and committed in one transaction; if anything fails
before the commit nothing is kept, and the caller must not hand the certificate out.
Every check-then-write (a pending request's caps, a renewal's predecessor, a decision,
a revocation) runs in a write transaction that holds the backend's lock for it
(_serialise): SQLite's BEGIN IMMEDIATE serialises all writers, PostgreSQL takes a
transaction-scoped advisory lock named after what is checked. Nothing is cached in the
process: an approval or a revocation made through another instance is read at once.

Schema: MIGRATIONS is the ordered list of steps; step i takes a store from version i
to i + 1, so a store written by any earlier estcoap opens and upgrades in place. The
steps are SQLite's SQL; the PostgreSQL backend rewrites the few words the dialects spell
differently (store_pg.pg_ddl).
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..codec.operations import Operation
from . import audit
from .audit import SCHEMA_AUDIT, AuditRecord
from .psk_table import SCHEMA_PSK, PskTable, consume_use
from .sql import Cursor, IntegrityViolation, StoreError

# The words the operation columns hold (the schemas' CHECKs list them), by the operation
# a LocalCA serves; 'init' marks a certificate the CA made itself (ca init, issue-ra).
# The store takes either an Operation or a word; its records carry the word.
OPERATION_WORDS: dict[Operation, str] = {
    Operation.SIMPLEENROLL: "enroll",
    Operation.SIMPLEREENROLL: "reenroll",
    Operation.SERVERKEYGEN: "serverkeygen",
}
_OPERATIONS = {word: operation for operation, word in OPERATION_WORDS.items()}

# Version 1: the first schema (estcoap before issue 11). Kept verbatim: it is how
# every store began, and the tests build a version-1 store from it.
SCHEMA_V1 = """
CREATE TABLE pending (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    operation   TEXT NOT NULL CHECK (operation IN ('enroll', 'reenroll', 'serverkeygen')),
    label       TEXT NOT NULL,              -- '' for the default CA
    csr_der     BLOB NOT NULL,
    csr_sha256  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    requester   TEXT NOT NULL,
    created     TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'approved', 'denied')),
    decided     TEXT,
    UNIQUE (operation, label, csr_sha256)
);
CREATE TABLE issued (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    serial       TEXT NOT NULL UNIQUE,      -- lowercase hex
    subject      TEXT NOT NULL,
    san          TEXT NOT NULL,
    not_before   TEXT NOT NULL,
    not_after    TEXT NOT NULL,
    csr_sha256   TEXT,                      -- NULL when not issued from a CSR (ca init)
    requester    TEXT NOT NULL,
    label        TEXT NOT NULL,
    operation    TEXT NOT NULL
                 CHECK (operation IN ('init', 'enroll', 'reenroll', 'serverkeygen')),
    kind         TEXT NOT NULL CHECK (kind IN ('new', 'renew', 'rekey')),
    renewed_from TEXT REFERENCES issued (serial),
    pending_id   INTEGER UNIQUE REFERENCES pending (id),  -- one certificate per approval
    cert_der     BLOB NOT NULL,
    -- a server-generated key, kept only for a manually approved serverkeygen so that
    -- the device's repeated request gets the same key and certificate
    key_der      BLOB,
    created      TEXT NOT NULL
);
CREATE INDEX issued_pending ON issued (pending_id);
"""

# Version 2: pending requests remember who may see their answer, and the lookups that
# the pending caps, the renewal rule and forgetting kept keys make are indexed.
SCHEMA_V2 = """
-- A stable identity of the requester (LocalCA.requester_id); NULL in rows from
-- version 1, which are matched by their requester text instead.
ALTER TABLE pending ADD COLUMN requester_id TEXT;
CREATE INDEX pending_by_requester ON pending (requester_id, state);
CREATE INDEX pending_by_state ON pending (state);
CREATE INDEX issued_successor ON issued (renewed_from);
CREATE INDEX issued_kept_keys ON issued (created) WHERE key_der IS NOT NULL;
"""

# Version 3: revocation (issue 14). A revoked certificate is one row, never removed (no
# certificateHold, so nothing is ever un-revoked); its id orders revocations, so the
# largest id is a version number that grows with each one (Store.revocation_version).
# crl_number holds the last CRL number used per CRL scope: '' for the CA's complete CRL,
# a label's name for that label's CRL (RFC 5280 s5.2.3: increasing per scope).
SCHEMA_V3 = """
CREATE TABLE revoked (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    serial          TEXT NOT NULL UNIQUE REFERENCES issued (serial),
    reason          TEXT NOT NULL,              -- RFC 5280 name: keyCompromise, ...
    revoked_at      TEXT NOT NULL,
    invalidity_date TEXT,
    revoked_by      TEXT NOT NULL,
    label           TEXT NOT NULL               -- the certificate's label, '' for the default
);
CREATE INDEX revoked_by_label ON revoked (label);
CREATE TABLE crl_number (
    scope   TEXT PRIMARY KEY,
    number  INTEGER NOT NULL
);
"""

# Version 4: pre-shared keys for certificate-less enrollment (psk_table.py, issue 15).
# Version 5: the audit trail (audit.py, issue 16), filled from what the store holds.
MIGRATIONS: tuple[str, ...] = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_PSK, SCHEMA_AUDIT)
SCHEMA_VERSION = len(MIGRATIONS)

# Every table, in an order that copies without breaking a reference (migrate_store).
TABLES = ("pending", "issued", "revoked", "crl_number", "psk", "audit")


def redact(url: str) -> str:
    """The URL without its password (to print and log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_server_url(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


def absolute_location(location: str | Path, base: Path | None = None) -> str:
    """The location to write into a CA directory's store.url: a relative SQLite path made
    absolute (against base, else the working directory), so that it names the same file
    whichever directory a command later runs in."""
    if is_server_url(location):
        return str(location)
    path = sqlite_path(location)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return f"sqlite:{path.resolve()}"


def sqlite_path(location: str | Path) -> Path:
    """The file a `sqlite:PATH` location (or a plain path) names."""
    text = str(location)
    if text.startswith("sqlite://"):
        return Path(text.removeprefix("sqlite://"))
    return Path(text.removeprefix("sqlite:"))


class UnknownRequest(StoreError):
    pass


class SerialCollision(StoreError):
    """The serial is taken already; sign again with a new one."""


class QueueFull(StoreError):
    """A new pending request over a cap (per requester or in total); nothing was queued."""


class AlreadyRenewed(StoreError):
    """The certificate being renewed has a successor already (LocalCA's renewal rule)."""

    def __init__(self, successor: IssuedRecord) -> None:
        super().__init__(f"already renewed by serial {successor.serial}")
        self.successor = successor


@dataclass(frozen=True)
class PendingRecord:
    id: int
    operation: str
    label: str | None
    csr_der: bytes
    csr_sha256: str
    subject: str
    requester: str
    created: str
    state: str
    decided: str | None
    requester_id: str | None  # None in rows from schema version 1


class UnknownCertificate(StoreError):
    """No certificate with this serial in the store; nothing was changed."""


class AlreadyRevoked(StoreError):
    """The certificate is revoked already; nothing was changed."""

    def __init__(self, record: RevocationRecord) -> None:
        super().__init__(
            f"certificate {record.serial} is already revoked ({record.reason}, "
            f"{record.revoked_at} by {record.revoked_by})"
        )
        self.record = record


class RevocationRefused(StoreError):
    """A revocation this CA does not make (a reason not for end entities, a date in the
    future); nothing was changed."""


# The RFC 5280 s5.3.1 reasons an end-entity certificate of this CA may be revoked for.
# Not cACompromise or aACompromise (this CA's certificates are end entities, not CAs or
# attribute authorities), not certificateHold (a hold is lifted with removeFromCRL, which
# needs delta CRLs; this CA never un-revokes), not removeFromCRL (delta CRLs only).
END_ENTITY_REASONS: tuple[x509.ReasonFlags, ...] = (
    x509.ReasonFlags.unspecified,
    x509.ReasonFlags.key_compromise,
    x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation,
    x509.ReasonFlags.privilege_withdrawn,
)


@dataclass(frozen=True)
class RevocationRecord:
    serial: str  # lower-case hex, as issued.serial
    reason: str  # RFC 5280 name (x509.ReasonFlags value): keyCompromise, ...
    revoked_at: str  # ISO 8601, UTC
    invalidity_date: str | None  # ISO 8601, UTC: when the key is known or thought bad
    revoked_by: str  # who revoked it: "cli:USER", ...
    label: str | None  # the certificate's CA label; None for the default

    @property
    def reason_flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags(self.reason)

    @property
    def revocation_time(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.revoked_at)

    @property
    def invalidity_time(self) -> dt.datetime | None:
        if self.invalidity_date is None:
            return None
        return dt.datetime.fromisoformat(self.invalidity_date)


@dataclass(frozen=True)
class IssuedRecord:
    serial: str
    subject: str
    san: str
    not_before: str
    not_after: str
    csr_sha256: str | None
    requester: str
    label: str | None
    operation: str
    kind: str
    renewed_from: str | None
    pending_id: int | None
    cert_der: bytes
    key_der: bytes | None
    created: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_der)

    @property
    def est_operation(self) -> Operation | None:
        """The operation that issued it; None for the CA's own certificates ('init')."""
        return _OPERATIONS.get(self.operation)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def describe_san(cert: x509.Certificate) -> str:
    """The SAN as readable text for the record (the DER keeps the exact value)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    parts = []
    for name in san:
        if isinstance(name, x509.OtherName):
            parts.append(f"otherName:{name.type_id.dotted_string}")
        else:
            parts.append(f"{type(name).__name__}:{name.value}")
    return ", ".join(parts)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _label_key(label: str | None) -> str:
    return label or ""


def _operation_word(operation: Operation | str) -> str:
    return OPERATION_WORDS[operation] if isinstance(operation, Operation) else operation


class Store(PskTable):
    """A CA store. Open one with Store.open(location): a postgresql:// URL, `sqlite:PATH`
    or a path (create=True makes a new one). The backends (SqliteStore, PgStore) supply
    the hooks below; everything else is shared."""

    path: Path | None  # the SQLite file; None for a database server
    durable: bool  # every commit is on disk before it returns (LocalCA then uses a thread)
    url: str  # where it is, as Store.open takes it, without any password (safe to print)
    _like = "LIKE"  # the case-insensitive LIKE (SQLite's LIKE is; PostgreSQL's ILIKE)

    @classmethod
    def open(cls, location: str | Path, *, create: bool = True, durable: bool = False) -> Store:
        """location: a postgresql:// (or postgres://) URL, `sqlite:PATH`, or a path to an
        SQLite file. durable=True fsyncs every SQLite commit (store_sqlite.py explains);
        a PostgreSQL commit is durable as the server is configured (synchronous_commit)."""
        if is_server_url(location):
            from .store_pg import PgStore

            return PgStore.connect(str(location), create=create)
        from .store_sqlite import SqliteStore

        return SqliteStore.connect(sqlite_path(location), create=create, durable=durable)

    # ---- what a backend supplies --------------------------------------------

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> AbstractContextManager[Cursor]:
        """A write transaction: committed when the block ends, rolled back when it raises.
        Driver errors leave it as IntegrityViolation or StoreError."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads (each statement sees what is committed when it runs)."""
        raise NotImplementedError

    def _serialise(self, cur: Cursor, what: str) -> None:
        """Hold, until the transaction ends, the lock that makes the checks this
        transaction does about `what` and its writes one step for every instance."""

    @property
    def schema_version(self) -> int:
        raise NotImplementedError

    def scrub_deleted(self) -> bool:
        """Make the backend overwrite what was just deleted or nulled (a forgotten key);
        False when it could not now (the next call tries again)."""
        return True

    def check_writable(self) -> None:
        """Raise StoreError if the store cannot record anything now (readiness)."""
        raise NotImplementedError

    def _migrate_steps(self, cur: Cursor, version: int) -> None:
        """Run MIGRATIONS[version:] in the caller's transaction (backends translate)."""
        for step in MIGRATIONS[version:]:
            for statement in statements(step):
                cur.execute(self._ddl(statement))

    def _ids_copied(self, cur: Cursor, tables: list[str]) -> None:
        """Rows with their ids were written into these tables (store_migrate): the next
        id given must be above them. SQLite's AUTOINCREMENT sees to it itself."""

    def _ddl(self, statement: str) -> str:
        """A migration statement (SQLite's SQL) in the backend's dialect."""
        return statement

    def is_empty(self) -> bool:
        """No record in any table (a new store; `ca init` and migrate-store want one)."""
        with self._read() as cur:
            return all(
                cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0 for table in TABLES
            )

    # ---- issued certificates ------------------------------------------------

    def record_issued(
        self,
        cert: x509.Certificate,
        *,
        requester: str,
        operation: Operation | str,
        label: str | None = None,
        csr_sha256: str | None = None,
        kind: str = "new",
        renewed_from: str | None = None,
        pending_id: int | None = None,
        key_der: bytes | None = None,
        psk_identity: str | None = None,
    ) -> IssuedRecord:
        """Record a freshly signed certificate and commit, all or nothing; given a
        psk_identity, one use of that PSK is spent in the same transaction (PskExhausted
        when none is left: nothing recorded).

        Raises SerialCollision when the serial is taken, StoreError when the
        approval behind pending_id has a certificate already.
        """
        serial = serial_hex(cert.serial_number)
        label_key = _label_key(label)
        row = (
            serial,
            cert.subject.rfc4514_string(),
            describe_san(cert),
            cert.not_valid_before_utc.isoformat(),
            cert.not_valid_after_utc.isoformat(),
            csr_sha256,
            requester,
            label_key,
            _operation_word(operation),
            kind,
            renewed_from,
            pending_id,
            cert.public_bytes(Encoding.DER),
            key_der,
            _now(),
        )
        try:
            with self._transaction() as cur:
                if renewed_from is not None:
                    # Checked in the write transaction, under the renewal's lock: two
                    # renewals of one certificate racing (even from two instances)
                    # cannot both be recorded.
                    self._serialise(cur, f"renew:{renewed_from}")
                    successor = _successor(cur, renewed_from)
                    if successor is not None:
                        raise AlreadyRenewed(successor)
                word = row[8]
                decided_by = (
                    requester
                    if word == "init"
                    else audit.approver_of(cur, pending_id)
                    if pending_id is not None
                    else audit.AUTO
                )
                trail = audit.values(
                    "issued",
                    serial=serial,
                    request_id=pending_id,
                    subject=row[1],
                    requested_by=requester,
                    decided_by=decided_by,
                    detail=f"{word} {kind}",
                )
                self._verify_row(cur, self._insert_issued(cur, row, trail))
                if psk_identity is not None:
                    consume_use(cur, psk_identity)
        except IntegrityViolation as exc:
            if exc.constraint == "issued.serial":
                raise SerialCollision(f"serial {serial} is already in use") from exc
            if exc.constraint == "issued.pending_id":
                raise StoreError(f"request {pending_id} has a certificate already") from exc
            raise StoreError(f"could not record certificate {serial}: {exc}") from exc
        return _issued(row)  # what the committed row holds (read back by RETURNING)

    def _insert_issued(
        self, cur: Cursor, row: tuple[object, ...], trail: tuple[object, ...]
    ) -> bytes:
        """Insert a certificate's row (row: _ISSUED_COLUMNS' values) and its audit row
        (trail: audit.values) in the caller's transaction; the DER as stored (RETURNING).
        A backend whose statements each cost a round trip sends both as one."""
        (stored,) = cur.execute(INSERT_ISSUED, row).fetchone()
        cur.execute(audit.INSERT, trail)
        return bytes(stored)

    def _verify_row(self, cur: Cursor, der: bytes) -> None:
        """The row read back inside the transaction (INSERT ... RETURNING gives what it
        holds): the DER stored must parse, or nothing is committed."""
        x509.load_der_x509_certificate(der)

    def find_issued(self, serial: str | int) -> IssuedRecord | None:
        key = serial_hex(serial) if isinstance(serial, int) else serial.lower()
        return self._one_issued("serial = ?", (key,))

    def latest_issued_to(self, subject: str) -> IssuedRecord | None:
        """The newest certificate issued to this subject (RFC 4514 text), for RA re-enrollment."""
        return self._one_issued("subject = ? ORDER BY id DESC LIMIT 1", (subject,))

    def issued_for_pending(self, pending_id: int) -> IssuedRecord | None:
        return self._one_issued("pending_id = ?", (pending_id,))

    def successor_of(self, serial: str) -> IssuedRecord | None:
        """The certificate that renewed this one (the newest, should there be several
        in a store from before the renewal rule), or None."""
        with self._read() as cur:
            return _successor(cur, serial)

    def forget_keys(self, issued_before: dt.datetime) -> int:
        """Erase the kept server-generated keys of certificates issued before the given
        time, then scrub them from the WAL; returns how many were erased."""
        cutoff = issued_before.astimezone(dt.UTC).isoformat(timespec="seconds")
        with self._transaction() as cur:
            cur.execute(
                "UPDATE issued SET key_der = NULL WHERE key_der IS NOT NULL AND created <= ?",
                (cutoff,),
            )
            erased = cur.rowcount
        if erased:
            self.scrub_deleted()
        return erased

    def kept_keys(self) -> int:
        with self._read() as cur:
            row = cur.execute("SELECT count(*) FROM issued WHERE key_der IS NOT NULL")
            return int(row.fetchone()[0])

    def issued_list(self) -> list[IssuedRecord]:
        with self._read() as cur:
            rows = cur.execute(f"SELECT {_ISSUED_COLUMNS} FROM issued ORDER BY id").fetchall()
        return [_issued(r) for r in rows]

    # ---- the console's queries (estcoap.console) --------------------------------

    def issued_search(self, text: str, limit: int = 100) -> list[IssuedRecord]:
        """Certificates whose subject or requester contains text (any case), or whose
        serial (hex) starts with it; newest first, at most limit."""
        inside = f"%{_like_literal(text.strip())}%"
        prefix = f"{_like_literal(text.strip().lower().removeprefix('0x'))}%"
        like = self._like
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE subject {like} ? ESCAPE '\\'"
                f" OR requester {like} ? ESCAPE '\\' OR serial LIKE ? ESCAPE '\\'"
                " ORDER BY id DESC LIMIT ?",
                (inside, inside, prefix, limit),
            ).fetchall()
        return [_issued(r) for r in rows]

    def issued_since(self, moment: dt.datetime) -> list[IssuedRecord]:
        """Certificates recorded at or after moment, oldest first."""
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE created >= ? ORDER BY id",
                (_iso(moment),),
            ).fetchall()
        return [_issued(r) for r in rows]

    def expiring_between(self, start: dt.datetime, end: dt.datetime) -> list[IssuedRecord]:
        """Unrevoked certificates whose notAfter falls in [start, end), soonest first."""
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE not_after >= ? AND not_after < ?"
                " AND serial NOT IN (SELECT serial FROM revoked) ORDER BY not_after",
                (_iso(start), _iso(end)),
            ).fetchall()
        return [_issued(r) for r in rows]

    def _one_issued(self, where: str, args: tuple[object, ...]) -> IssuedRecord | None:
        with self._read() as cur:
            row = cur.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE {where}", args
            ).fetchone()
        return _issued(row) if row else None

    # ---- revocation -----------------------------------------------------------

    def revoke(
        self,
        serial: str | int,
        *,
        reason: x509.ReasonFlags,
        invalidity_date: dt.datetime | None,
        revoked_by: str,
    ) -> RevocationRecord:
        """Revoke an issued certificate and commit. Raises UnknownCertificate,
        AlreadyRevoked or RevocationRefused (see END_ENTITY_REASONS); then nothing changed.
        invalidity_date: when the key became (or may have become) unfit; not in the future."""
        key = _serial_key(serial)
        if reason not in END_ENTITY_REASONS:
            raise RevocationRefused(
                f"reason {reason.value} is not one this CA revokes end-entity certificates "
                f"for (one of: {', '.join(r.value for r in END_ENTITY_REASONS)})"
            )
        now = dt.datetime.now(dt.UTC)
        invalid: str | None = None
        if invalidity_date is not None:
            if invalidity_date.tzinfo is None:
                invalidity_date = invalidity_date.replace(tzinfo=dt.UTC)
            if invalidity_date > now + dt.timedelta(minutes=5):  # some clock skew
                raise RevocationRefused("the invalidity date is in the future")
            invalid = invalidity_date.astimezone(dt.UTC).isoformat(timespec="seconds")
        with self._transaction() as cur:
            # One revocation at a time in every instance: the ids (revocation_version)
            # then become visible in the order they were taken, so a cache that has seen
            # id n has seen every id below it.
            self._serialise(cur, "revoke")
            issued = cur.execute("SELECT label FROM issued WHERE serial = ?", (key,)).fetchone()
            if issued is None:
                raise UnknownCertificate(f"no certificate with serial {key} in this CA's store")
            row = cur.execute(
                f"SELECT {_REVOKED_COLUMNS} FROM revoked WHERE serial = ?", (key,)
            ).fetchone()
            if row is not None:
                raise AlreadyRevoked(_revocation(row))
            values = (key, reason.value, _iso(now), invalid, revoked_by, issued[0])
            cur.execute(
                "INSERT INTO revoked (serial, reason, revoked_at, invalidity_date, revoked_by,"
                " label) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
            (subject,) = cur.execute(
                "SELECT subject FROM issued WHERE serial = ?", (key,)
            ).fetchone()
            audit.write(
                cur,
                "revoked",
                serial=key,
                subject=subject,
                requested_by=revoked_by,
                decided_by=revoked_by,
                detail=reason.value,
            )
        return _revocation(values)

    def revocation_of(self, serial: str | int) -> RevocationRecord | None:
        with self._read() as cur:
            row = cur.execute(
                f"SELECT {_REVOKED_COLUMNS} FROM revoked WHERE serial = ?", (_serial_key(serial),)
            ).fetchone()
        return _revocation(row) if row else None

    def revoked_list(self, label: str | None = None) -> list[RevocationRecord]:
        """The revoked certificates, oldest revocation first: all of them (label None), or
        those issued under one label."""
        select = f"SELECT {_REVOKED_COLUMNS} FROM revoked"
        with self._read() as cur:
            if label is None:
                rows = cur.execute(f"{select} ORDER BY id").fetchall()
            else:
                rows = cur.execute(f"{select} WHERE label = ? ORDER BY id", (label,)).fetchall()
        return [_revocation(r) for r in rows]

    def revoked_serials(self) -> set[int]:
        """Every revoked serial, for O(1) lookups in memory (LocalCA.revocation_of)."""
        with self._read() as cur:
            rows = cur.execute("SELECT serial FROM revoked").fetchall()
        return {int(serial, 16) for (serial,) in rows}

    def revoked_serials_after(self, version: int) -> tuple[int, set[int]]:
        """The serials revoked since revocation_version() was `version` (-1 or 0: all),
        and the version they bring it to: a cache catches up by what is new only."""
        with self._read() as cur:
            rows = cur.execute(
                "SELECT id, serial FROM revoked WHERE id > ? ORDER BY id", (version,)
            ).fetchall()
        return (rows[-1][0] if rows else version), {int(serial, 16) for _, serial in rows}

    def revocation_version(self) -> int:
        """A number that grows with every revocation (0: none yet), also one made by another
        process: a cache of revocations is current while this has not changed. One index
        lookup, cheap enough to ask before each use of the cache."""
        with self._read() as cur:
            (version,) = cur.execute("SELECT max(id) FROM revoked").fetchone()
        return int(version or 0)

    def next_crl_number(self, label: str | None = None) -> int:
        """The number for the next CRL of a scope (None: the CA's complete CRL; a label:
        that label's), committed before it is used, so no two CRLs of a scope share one
        even when several processes sign them."""
        scope = "" if label is None else label
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO crl_number (scope, number) VALUES (?, 1)"
                " ON CONFLICT (scope) DO UPDATE SET number = crl_number.number + 1",
                (scope,),
            )
            (number,) = cur.execute(
                "SELECT number FROM crl_number WHERE scope = ?", (scope,)
            ).fetchone()
        return int(number)

    # ---- pending requests ---------------------------------------------------

    def submit_pending(
        self,
        *,
        operation: Operation | str,
        label: str | None,
        csr_der: bytes,
        csr_sha256: str,
        subject: str,
        requester: str,
        requester_id: str | None = None,
        max_per_requester: int | None = None,
        max_total: int | None = None,
    ) -> PendingRecord:
        """The request's record: the existing one (whoever made it: the caller checks
        that), else a new 'pending' one. A new record over max_per_requester undecided
        requests of requester_id, or over max_total undecided requests in all, raises
        QueueFull instead."""
        key = (_operation_word(operation), _label_key(label), csr_sha256)
        select = (
            f"SELECT {_PENDING_COLUMNS} FROM pending"
            " WHERE operation = ? AND label = ? AND csr_sha256 = ?"
        )
        with self._transaction() as cur:
            self._serialise(cur, "pending")  # the caps count what this may add to
            row = cur.execute(select, key).fetchone()
            if row is not None:
                return _pending(row)
            if max_per_requester is not None:
                (mine,) = cur.execute(
                    "SELECT count(*) FROM pending WHERE requester_id = ? AND state = 'pending'",
                    (requester_id,),
                ).fetchone()
                if mine >= max_per_requester:
                    raise QueueFull(
                        f"{mine} requests of this requester already wait for a decision"
                        f" (at most {max_per_requester})"
                    )
            if max_total is not None:
                (waiting,) = cur.execute(
                    "SELECT count(*) FROM pending WHERE state = 'pending'"
                ).fetchone()
                if waiting >= max_total:
                    raise QueueFull(
                        f"the CA's queue of requests waiting for a decision is full"
                        f" ({waiting}, at most {max_total})"
                    )
            cur.execute(
                "INSERT INTO pending (operation, label, csr_der, csr_sha256, subject,"
                " requester, requester_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key[:2], csr_der, csr_sha256, subject, requester, requester_id, _now()),
            )
            row = cur.execute(select, key).fetchone()
        return _pending(row)

    def pending_get(self, request_id: int) -> PendingRecord:
        with self._read() as cur:
            row = cur.execute(
                f"SELECT {_PENDING_COLUMNS} FROM pending WHERE id = ?", (request_id,)
            ).fetchone()
        if row is None:
            raise UnknownRequest(f"no request with id {request_id}")
        return _pending(row)

    def pending_list(self, state: str | None = None) -> list[PendingRecord]:
        with self._read() as cur:
            if state is None:
                rows = cur.execute(f"SELECT {_PENDING_COLUMNS} FROM pending ORDER BY id").fetchall()
            else:
                rows = cur.execute(
                    f"SELECT {_PENDING_COLUMNS} FROM pending WHERE state = ? ORDER BY id", (state,)
                ).fetchall()
        return [_pending(r) for r in rows]

    def approve(self, request_id: int, decided_by: str = audit.UNRECORDED) -> PendingRecord:
        """decided_by: who approved (the audit trail; the CLI gives cli:$USER)."""
        return self._decide(request_id, "approved", decided_by)

    def deny(self, request_id: int, decided_by: str = audit.UNRECORDED) -> PendingRecord:
        return self._decide(request_id, "denied", decided_by)

    def _decide(self, request_id: int, state: str, decided_by: str) -> PendingRecord:
        with self._transaction() as cur:
            self._serialise(cur, f"decide:{request_id}")
            row = cur.execute(
                "SELECT state, subject, requester, operation FROM pending WHERE id = ?",
                (request_id,),
            ).fetchone()
            if row is None:
                raise UnknownRequest(f"no request with id {request_id}")
            if row[0] != "pending":
                raise StoreError(f"request {request_id} is already {row[0]}")
            cur.execute(
                "UPDATE pending SET state = ?, decided = ? WHERE id = ?",
                (state, _now(), request_id),
            )
            audit.write(
                cur,
                state,
                request_id=request_id,
                subject=row[1],
                requested_by=row[2],
                decided_by=decided_by,
                detail=row[3],
            )
        return self.pending_get(request_id)

    # ---- audit trail and operations -------------------------------------------

    def audit_list(self, since: dt.datetime | None = None) -> list[AuditRecord]:
        """Every issuance, revocation, approval and denial, oldest first (audit.py)."""
        with self._read() as cur:
            return audit.read(cur, since)

    def pending_counts(self) -> dict[str, int]:
        """Requests by state (metrics; an indexed count)."""
        with self._read() as cur:
            rows = cur.execute("SELECT state, count(*) FROM pending GROUP BY state")
            return {state: int(n) for state, n in rows.fetchall()}

    def revoked_counts(self) -> dict[str, int]:
        """Revoked certificates by reason (metrics)."""
        with self._read() as cur:
            rows = cur.execute("SELECT reason, count(*) FROM revoked GROUP BY reason")
            return {reason: int(n) for reason, n in rows.fetchall()}


_ISSUED_COLUMNS = (
    "serial, subject, san, not_before, not_after, csr_sha256, requester, label, operation,"
    " kind, renewed_from, pending_id, cert_der, key_der, created"
)
INSERT_ISSUED = (
    f"INSERT INTO issued ({_ISSUED_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING cert_der"
)
_PENDING_COLUMNS = (
    "id, operation, label, csr_der, csr_sha256, subject, requester, created, state, decided,"
    " requester_id"
)
_REVOKED_COLUMNS = "serial, reason, revoked_at, invalidity_date, revoked_by, label"


def _successor(cur: Cursor, serial: str) -> IssuedRecord | None:
    row = cur.execute(
        f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE renewed_from = ? ORDER BY id DESC LIMIT 1",
        (serial,),
    ).fetchone()
    return _issued(row) if row else None


def statements(script: str) -> list[str]:
    """The SQL statements of a migration step (no step puts ';' inside a string)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _issued(row: tuple) -> IssuedRecord:
    values = list(row)
    values[7] = values[7] or None  # label '' -> None
    return IssuedRecord(*values)


def _revocation(row: tuple) -> RevocationRecord:
    values = list(row)
    values[5] = values[5] or None  # label '' -> None
    return RevocationRecord(*values)


def _serial_key(serial: str | int) -> str:
    """The store's spelling of a serial: lower-case hex without leading zeros."""
    if isinstance(serial, int):
        return serial_hex(serial)
    return serial.strip().lower().removeprefix("0x").lstrip("0") or "0"


def _like_literal(text: str) -> str:
    """text matched literally by LIKE ... ESCAPE '\\' (its % and _ are not wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _pending(row: tuple) -> PendingRecord:
    values = list(row)
    values[2] = values[2] or None
    return PendingRecord(*values)
