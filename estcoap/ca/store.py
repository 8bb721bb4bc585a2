"""The CA's records in SQLite: every issued certificate and every pending request.

One connection per Store, guarded by a lock so the event loop and worker threads
can share it. Writes run in BEGIN IMMEDIATE transactions, so several processes
on the same file serialise on SQLite's lock (busy_timeout waits for it). A
certificate row is written and committed in one transaction; if anything fails
before the commit nothing is kept, and the caller must not hand the
certificate out.

Durability: the journal is a WAL. With synchronous=NORMAL (the default) a commit is
atomic and survives the process being killed at any point, since the WAL is written
before the commit returns; only an operating-system crash or power loss can undo the
last commits (those after the latest WAL sync), and never leaves a half-written row.
Such a lost row is a certificate the CA handed out but no longer lists: its holder
cannot re-enroll with it (the CA refuses certificates missing from its records) and
must enroll again with its original credentials. synchronous=FULL (durable=True)
closes that window with an fsync per commit, ~0.2 ms of CPU and ~0.4 ms of waiting
per issued certificate on the reference machine (docs/performance.md).

Secrecy: the store can hold server-generated private keys (a manually approved
serverkeygen, until LocalCA forgets them), so the database and its -wal and -shm files
are mode 0600: the database is created so before SQLite opens it, SQLite gives its
-wal and -shm the database's mode, and Store.open refuses files others can access.
Forgotten keys are overwritten, not just unlinked from the b-tree (secure_delete),
and the WAL that still holds them is checkpointed and truncated.

Schema: MIGRATIONS is the ordered list of steps; step i takes a store from version i
to i + 1, so a store written by any earlier estcoap opens and upgrades in place.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..codec.operations import Operation
from . import audit
from .audit import SCHEMA_AUDIT, AuditRecord
from .paths import ExposedFileError, require_private
from .psk_table import SCHEMA_PSK, PskTable, consume_use

BUSY_TIMEOUT_MS = 15000

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


class StoreError(Exception):
    """A store problem worth a one-line message."""


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
    """An SQLite CA store. Open with Store.open(path) (create=True makes a new one)."""

    def __init__(self, connection: sqlite3.Connection, path: Path, durable: bool = False) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.path = path
        self.durable = durable  # every commit fsynced (synchronous=FULL)

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, durable: bool = False) -> Store:
        """durable=True fsyncs every commit (see the module docstring for the trade-off)."""
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(f"no CA store at {path} (run 'estcoap ca init' first)")
        _create_private(path)
        try:
            for file in _store_files(path):
                require_private(file)
        except ExposedFileError as exc:
            raise StoreError(str(exc)) from exc
        db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: an issued certificate is on disk before anyone sees it. NORMAL: it is
            # in the WAL (safe from a killed process); the OS syncs it at checkpoints.
            db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            db.execute("PRAGMA foreign_keys = ON")
            # Deleted content (a forgotten key) is overwritten with zeros, not left in
            # free space of the page.
            db.execute("PRAGMA secure_delete = ON")
            store = cls(db, path, durable)
            store._migrate()
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"{path}: not a usable CA store: {exc}") from exc
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _migrate(self) -> None:
        with self._transaction() as cur:
            (version,) = cur.execute("PRAGMA user_version").fetchone()
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema version {version} is newer than this "
                    f"estcoap supports ({SCHEMA_VERSION})"
                )
            for step in MIGRATIONS[version:]:
                for statement in _statements(step):
                    cur.execute(statement)
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

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
                    # Checked in the write transaction: two renewals of one certificate
                    # racing (even from two processes) cannot both be recorded.
                    successor = _successor(cur, renewed_from)
                    if successor is not None:
                        raise AlreadyRenewed(successor)
                cur.execute(
                    "INSERT INTO issued (serial, subject, san, not_before, not_after, csr_sha256,"
                    " requester, label, operation, kind, renewed_from, pending_id, cert_der,"
                    " key_der, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                self._verify_row(cur, serial)
                if psk_identity is not None:
                    consume_use(cur, psk_identity)
                word = row[8]
                audit.write(
                    cur,
                    "issued",
                    serial=serial,
                    request_id=pending_id,
                    subject=row[1],
                    requested_by=requester,
                    decided_by=requester
                    if word == "init"
                    else audit.approver_of(cur, pending_id)
                    if pending_id is not None
                    else audit.AUTO,
                    detail=f"{word} {kind}",
                )
        except sqlite3.IntegrityError as exc:
            if "issued.serial" in str(exc):
                raise SerialCollision(f"serial {serial} is already in use") from exc
            if "issued.pending_id" in str(exc):
                raise StoreError(f"request {pending_id} has a certificate already") from exc
            raise StoreError(f"could not record certificate {serial}: {exc}") from exc
        return _issued(row)  # what the committed row holds (read back by _verify_row)

    def _verify_row(self, cur: sqlite3.Cursor, serial: str) -> None:
        """Read the row back inside the transaction: the DER stored must parse."""
        (der,) = cur.execute("SELECT cert_der FROM issued WHERE serial = ?", (serial,)).fetchone()
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
        with self._lock:
            return _successor(self._db.cursor(), serial)

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
            self.scrub_wal()
        return erased

    def kept_keys(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM issued WHERE key_der IS NOT NULL")
            return int(row.fetchone()[0])

    def scrub_wal(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes, so that page
        versions it still holds (a forgotten key) leave the disk. False when a reader in
        another connection kept the WAL busy; the next call tries again."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    def issued_list(self) -> list[IssuedRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_ISSUED_COLUMNS} FROM issued ORDER BY id").fetchall()
        return [_issued(r) for r in rows]

    # ---- the console's queries (estcoap.console) --------------------------------

    def issued_search(self, text: str, limit: int = 100) -> list[IssuedRecord]:
        """Certificates whose subject or requester contains text (any case), or whose
        serial (hex) starts with it; newest first, at most limit."""
        inside = f"%{_like_literal(text.strip())}%"
        prefix = f"{_like_literal(text.strip().lower().removeprefix('0x'))}%"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE subject LIKE ? ESCAPE '\\'"
                " OR requester LIKE ? ESCAPE '\\' OR serial LIKE ? ESCAPE '\\'"
                " ORDER BY id DESC LIMIT ?",
                (inside, inside, prefix, limit),
            ).fetchall()
        return [_issued(r) for r in rows]

    def issued_since(self, moment: dt.datetime) -> list[IssuedRecord]:
        """Certificates recorded at or after moment, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE created >= ? ORDER BY id",
                (_iso(moment),),
            ).fetchall()
        return [_issued(r) for r in rows]

    def expiring_between(self, start: dt.datetime, end: dt.datetime) -> list[IssuedRecord]:
        """Unrevoked certificates whose notAfter falls in [start, end), soonest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE not_after >= ? AND not_after < ?"
                " AND serial NOT IN (SELECT serial FROM revoked) ORDER BY not_after",
                (_iso(start), _iso(end)),
            ).fetchall()
        return [_issued(r) for r in rows]

    def _one_issued(self, where: str, args: tuple[object, ...]) -> IssuedRecord | None:
        with self._lock:
            row = self._db.execute(
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
        with self._lock:
            row = self._db.execute(
                f"SELECT {_REVOKED_COLUMNS} FROM revoked WHERE serial = ?", (_serial_key(serial),)
            ).fetchone()
        return _revocation(row) if row else None

    def revoked_list(self, label: str | None = None) -> list[RevocationRecord]:
        """The revoked certificates, oldest revocation first: all of them (label None), or
        those issued under one label."""
        select = f"SELECT {_REVOKED_COLUMNS} FROM revoked"
        with self._lock:
            if label is None:
                rows = self._db.execute(f"{select} ORDER BY id").fetchall()
            else:
                rows = self._db.execute(
                    f"{select} WHERE label = ? ORDER BY id", (label,)
                ).fetchall()
        return [_revocation(r) for r in rows]

    def revoked_serials(self) -> set[int]:
        """Every revoked serial, for O(1) lookups in memory (LocalCA.revocation_of)."""
        with self._lock:
            rows = self._db.execute("SELECT serial FROM revoked").fetchall()
        return {int(serial, 16) for (serial,) in rows}

    def revoked_serials_after(self, version: int) -> tuple[int, set[int]]:
        """The serials revoked since revocation_version() was `version` (-1 or 0: all),
        and the version they bring it to: a cache catches up by what is new only."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, serial FROM revoked WHERE id > ? ORDER BY id", (version,)
            ).fetchall()
        return (rows[-1][0] if rows else version), {int(serial, 16) for _, serial in rows}

    def revocation_version(self) -> int:
        """A number that grows with every revocation (0: none yet), also one made by another
        process: a cache of revocations is current while this has not changed. One index
        lookup, cheap enough to ask before each use of the cache."""
        with self._lock:
            (version,) = self._db.execute("SELECT max(id) FROM revoked").fetchone()
        return int(version or 0)

    def next_crl_number(self, label: str | None = None) -> int:
        """The number for the next CRL of a scope (None: the CA's complete CRL; a label:
        that label's), committed before it is used, so no two CRLs of a scope share one
        even when several processes sign them."""
        scope = "" if label is None else label
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO crl_number (scope, number) VALUES (?, 1)"
                " ON CONFLICT (scope) DO UPDATE SET number = number + 1",
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
        with self._lock:
            row = self._db.execute(
                f"SELECT {_PENDING_COLUMNS} FROM pending WHERE id = ?", (request_id,)
            ).fetchone()
        if row is None:
            raise UnknownRequest(f"no request with id {request_id}")
        return _pending(row)

    def pending_list(self, state: str | None = None) -> list[PendingRecord]:
        with self._lock:
            if state is None:
                rows = self._db.execute(
                    f"SELECT {_PENDING_COLUMNS} FROM pending ORDER BY id"
                ).fetchall()
            else:
                rows = self._db.execute(
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
        with self._lock:
            return audit.read(self._db, since)

    def pending_counts(self) -> dict[str, int]:
        """Requests by state (metrics; an indexed count)."""
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM pending GROUP BY state")
            return {state: int(n) for state, n in rows.fetchall()}

    def revoked_counts(self) -> dict[str, int]:
        """Revoked certificates by reason (metrics)."""
        with self._lock:
            rows = self._db.execute("SELECT reason, count(*) FROM revoked GROUP BY reason")
            return {reason: int(n) for reason, n in rows.fetchall()}

    def check_writable(self) -> None:
        """Raise StoreError if the store cannot record anything now (readiness). Its files
        must be writable: with the WAL, SQLite finds a read-only database only at a
        checkpoint, long after it accepted writes. Then a write that changes nothing (the
        schema version, set to itself) is committed: the write lock can be had."""
        for path in (*_store_files(self.path), self.path.parent):
            if path.exists() and not os.access(path, os.W_OK):
                raise StoreError(f"{path} is read-only")
        try:
            with self._transaction() as cur:
                (version,) = cur.execute("PRAGMA user_version").fetchone()
                cur.execute(f"PRAGMA user_version = {int(version)}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write: {exc}") from exc


_ISSUED_COLUMNS = (
    "serial, subject, san, not_before, not_after, csr_sha256, requester, label, operation,"
    " kind, renewed_from, pending_id, cert_der, key_der, created"
)
_PENDING_COLUMNS = (
    "id, operation, label, csr_der, csr_sha256, subject, requester, created, state, decided,"
    " requester_id"
)
_REVOKED_COLUMNS = "serial, reason, revoked_at, invalidity_date, revoked_by, label"


def _successor(cur: sqlite3.Cursor, serial: str) -> IssuedRecord | None:
    row = cur.execute(
        f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE renewed_from = ? ORDER BY id DESC LIMIT 1",
        (serial,),
    ).fetchone()
    return _issued(row) if row else None


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration step (no step puts ';' inside a string)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _store_files(path: Path) -> tuple[Path, Path, Path]:
    return path, Path(f"{path}-wal"), Path(f"{path}-shm")


def _create_private(path: Path) -> None:
    """Create an empty database file with mode 0600 unless one is there: SQLite creates
    -wal and -shm with the database file's mode, so all three start private."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the CA store {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # exact, whatever the umask
    finally:
        os.close(fd)


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
