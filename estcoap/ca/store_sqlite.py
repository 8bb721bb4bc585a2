"""The CA store in one SQLite file (`sqlite:PATH`; the CA directory's est.sqlite3 unless
the directory names another store, paths.py).

One connection per store, guarded by a lock so the event loop and worker threads can
share it. Writes run in BEGIN IMMEDIATE transactions, so several processes on the same
file serialise on SQLite's lock (busy_timeout waits for it): every write transaction is
already one step for all of them, so _serialise has nothing to add.

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
-wal and -shm the database's mode, and connect refuses files others can access.
Forgotten keys are overwritten, not just unlinked from the b-tree (secure_delete),
and the WAL that still holds them is checkpointed and truncated (scrub_deleted).

Schema version: PRAGMA user_version.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .paths import ExposedFileError, require_private
from .sql import IntegrityViolation, StoreError
from .store import SCHEMA_VERSION, Store

BUSY_TIMEOUT_MS = 15000


class SqliteStore(Store):
    """An SQLite CA store; open it with Store.open (a path or `sqlite:PATH`)."""

    def __init__(self, connection: sqlite3.Connection, path: Path, durable: bool = False) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self.path = path
        self._file = path  # the path, typed as never None
        self.url = f"sqlite:{path}"
        self.durable = durable  # every commit fsynced (synchronous=FULL)

    @classmethod
    def connect(cls, path: Path, *, create: bool = True, durable: bool = False) -> SqliteStore:
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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except sqlite3.IntegrityError as exc:
                cur.execute("ROLLBACK")
                raise IntegrityViolation(str(exc), _constraint(exc)) from exc
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._db.cursor()
            try:
                yield cur
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
            self._migrate_steps(cur, version)
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def scrub_deleted(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes, so that page
        versions it still holds (a forgotten key) leave the disk. False when a reader in
        another connection kept the WAL busy; the next call tries again."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    def check_writable(self) -> None:
        """Its files must be writable: with the WAL, SQLite finds a read-only database
        only at a checkpoint, long after it accepted writes. Then a write that changes
        nothing (the schema version, set to itself) is committed: the write lock can be
        had."""
        for path in (*_store_files(self._file), self._file.parent):
            if path.exists() and not os.access(path, os.W_OK):
                raise StoreError(f"{path} is read-only")
        try:
            with self._transaction() as cur:
                (version,) = cur.execute("PRAGMA user_version").fetchone()
                cur.execute(f"PRAGMA user_version = {int(version)}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write: {exc}") from exc


def _constraint(exc: sqlite3.IntegrityError) -> str:
    """'UNIQUE constraint failed: issued.serial' -> 'issued.serial'."""
    text = str(exc)
    head, _, what = text.partition("UNIQUE constraint failed: ")
    return what if what and "," not in what else text


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
