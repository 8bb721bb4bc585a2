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
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 15000

_SCHEMA = """
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


class StoreError(Exception):
    """A store problem worth a one-line message."""


class UnknownRequest(StoreError):
    pass


class SerialCollision(StoreError):
    """The serial is taken already; sign again with a new one."""


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


class Store:
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
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
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
        operation: str,
        label: str | None = None,
        csr_sha256: str | None = None,
        kind: str = "new",
        renewed_from: str | None = None,
        pending_id: int | None = None,
        key_der: bytes | None = None,
    ) -> IssuedRecord:
        """Record a freshly signed certificate and commit, all or nothing.

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
            operation,
            kind,
            renewed_from,
            pending_id,
            cert.public_bytes(Encoding.DER),
            key_der,
            _now(),
        )
        try:
            with self._transaction() as cur:
                cur.execute(
                    "INSERT INTO issued (serial, subject, san, not_before, not_after, csr_sha256,"
                    " requester, label, operation, kind, renewed_from, pending_id, cert_der,"
                    " key_der, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                self._verify_row(cur, serial)
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

    def issued_list(self) -> list[IssuedRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_ISSUED_COLUMNS} FROM issued ORDER BY id").fetchall()
        return [_issued(r) for r in rows]

    def _one_issued(self, where: str, args: tuple[object, ...]) -> IssuedRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ISSUED_COLUMNS} FROM issued WHERE {where}", args
            ).fetchone()
        return _issued(row) if row else None

    # ---- pending requests ---------------------------------------------------

    def submit_pending(
        self,
        *,
        operation: str,
        label: str | None,
        csr_der: bytes,
        csr_sha256: str,
        subject: str,
        requester: str,
    ) -> PendingRecord:
        """The request's record: created as 'pending' on first sight, else the existing one."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO pending (operation, label, csr_der, csr_sha256, subject,"
                " requester, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (operation, _label_key(label), csr_der, csr_sha256, subject, requester, _now()),
            )
            row = cur.execute(
                f"SELECT {_PENDING_COLUMNS} FROM pending"
                " WHERE operation = ? AND label = ? AND csr_sha256 = ?",
                (operation, _label_key(label), csr_sha256),
            ).fetchone()
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

    def approve(self, request_id: int) -> PendingRecord:
        return self._decide(request_id, "approved")

    def deny(self, request_id: int) -> PendingRecord:
        return self._decide(request_id, "denied")

    def _decide(self, request_id: int, state: str) -> PendingRecord:
        with self._transaction() as cur:
            row = cur.execute("SELECT state FROM pending WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise UnknownRequest(f"no request with id {request_id}")
            if row[0] != "pending":
                raise StoreError(f"request {request_id} is already {row[0]}")
            cur.execute(
                "UPDATE pending SET state = ?, decided = ? WHERE id = ?",
                (state, _now(), request_id),
            )
        return self.pending_get(request_id)


_ISSUED_COLUMNS = (
    "serial, subject, san, not_before, not_after, csr_sha256, requester, label, operation,"
    " kind, renewed_from, pending_id, cert_der, key_der, created"
)
_PENDING_COLUMNS = (
    "id, operation, label, csr_der, csr_sha256, subject, requester, created, state, decided"
)


def _issued(row: tuple) -> IssuedRecord:  # type: ignore[type-arg]
    values = list(row)
    values[7] = values[7] or None  # label '' -> None
    return IssuedRecord(*values)


def _pending(row: tuple) -> PendingRecord:  # type: ignore[type-arg]
    values = list(row)
    values[2] = values[2] or None
    return PendingRecord(*values)
