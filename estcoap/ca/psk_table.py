"""Pre-shared keys for certificate-less first enrollment (RFC 7030 s3.3.3), in the CA store.

Each key is bound to a PSK identity (what the device sends in the DTLS handshake), to
the subject the device may enroll as, to a number of uses (one certificate each; a
one-time bootstrap key by default) and optionally to an expiry. A use is consumed in
the same transaction that records the certificate it paid for (consume_use, called by
Store.record_issued), so a crash never burns a use without a certificate and two
racing requests cannot both spend a one-time key.

The DTLS front asks for a key by identity at each handshake (usable_key): no cache, so
`estcoap psk add` on a running server takes effect at once; the lookup is one indexed
read. The keys never leave the store except to the handshake: listings show no key.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from .sql import Cursor, IntegrityViolation

# The store migration that adds the table (appended to store.MIGRATIONS).
SCHEMA_PSK = """
CREATE TABLE psk (
    identity  TEXT PRIMARY KEY,         -- the PSK identity the device sends
    key       BLOB NOT NULL,
    subject   TEXT NOT NULL,            -- RFC 4514: the only subject it may enroll as
    uses_left INTEGER NOT NULL CHECK (uses_left >= 0),
    expires   TEXT,                     -- ISO 8601 UTC; NULL: never
    created   TEXT NOT NULL
);
"""

# tinydtls takes identities and keys of up to 32 bytes by default (DTLS_PSK_MAX_*_LEN);
# RFC 4279 allows longer, but a key the engine cannot use must be refused when added.
MAX_IDENTITY_BYTES = 32
MAX_KEY_BYTES = 32
MIN_KEY_BYTES = 16  # 128 bits: a key an attacker can't search offline from one handshake


class PskError(Exception):
    """A PSK that cannot be added, used or found; str() is one line."""


class PskExhausted(PskError):
    """The PSK has no use left, expired or was removed: no certificate for it."""


@dataclass(frozen=True)
class PskRecord:
    identity: str
    subject: str
    uses_left: int
    expires: str | None
    created: str

    def usable(self, now: dt.datetime | None = None) -> bool:
        return self.uses_left > 0 and not self.expired(now)

    def expired(self, now: dt.datetime | None = None) -> bool:
        if self.expires is None:
            return False
        return dt.datetime.fromisoformat(self.expires) <= (now or dt.datetime.now(dt.UTC))

    def state(self) -> str:
        if self.expired():
            return "expired"
        return "usable" if self.uses_left else "used up"


def check_identity(identity: str) -> bytes:
    """The identity as sent on the wire (UTF-8), refusing what no handshake can carry."""
    raw = identity.encode("utf-8")
    if not raw or len(raw) > MAX_IDENTITY_BYTES:
        raise PskError(f"a PSK identity is 1 to {MAX_IDENTITY_BYTES} bytes of UTF-8")
    if any(ch < 0x20 or ch == 0x7F for ch in raw):
        raise PskError("a PSK identity must not hold control characters")
    return raw


def check_key(key: bytes) -> bytes:
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise PskError(f"a PSK is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes ({len(key)} given)")
    return key


class _Locked(Protocol):
    def _transaction(self) -> AbstractContextManager[Cursor]: ...

    def _read(self) -> AbstractContextManager[Cursor]: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


_COLUMNS = "identity, subject, uses_left, expires, created"


class PskTable:
    """The Store's PSK methods (Store inherits them; the SQL stays in ca/)."""

    def psk_add(
        self: _Locked,
        identity: str,
        key: bytes,
        *,
        subject: str,
        uses: int = 1,
        expires: dt.datetime | None = None,
    ) -> PskRecord:
        check_identity(identity)
        check_key(key)
        if uses < 1:
            raise PskError("a PSK needs at least one use")
        row = (identity, subject, uses, _iso(expires) if expires else None, _iso(_now()))
        try:
            with self._transaction() as cur:
                cur.execute(
                    "INSERT INTO psk (identity, key, subject, uses_left, expires, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (identity, key, *row[1:]),
                )
        except IntegrityViolation:
            raise PskError(f"PSK identity {identity!r} exists already; remove it first") from None
        return PskRecord(*row)

    def psk_remove(self: _Locked, identity: str) -> bool:
        with self._transaction() as cur:
            return cur.execute("DELETE FROM psk WHERE identity = ?", (identity,)).rowcount > 0

    def psk_list(self: _Locked) -> list[PskRecord]:
        with self._read() as cur:
            rows = cur.execute(f"SELECT {_COLUMNS} FROM psk ORDER BY identity").fetchall()
        return [PskRecord(*row) for row in rows]

    def psk_get(self: _Locked, identity: str) -> PskRecord | None:
        with self._read() as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS} FROM psk WHERE identity = ?", (identity,)
            ).fetchone()
        return PskRecord(*row) if row else None

    def psk_usable_key(self: _Locked, identity: str) -> bytes | None:
        """The key of a PSK with a use left and not expired, else None (the handshake then
        fails: tinydtls finds no key for the identity)."""
        with self._read() as cur:
            row = cur.execute(
                "SELECT key FROM psk WHERE identity = ? AND uses_left > 0"
                " AND (expires IS NULL OR expires > ?)",
                (identity, _iso(_now())),
            ).fetchone()
        return bytes(row[0]) if row else None


def consume_use(cur: Cursor, identity: str) -> None:
    """Spend one use of a PSK inside the caller's write transaction (the one recording
    the certificate): PskExhausted, and so a rollback, when none is left."""
    spent = cur.execute(
        "UPDATE psk SET uses_left = uses_left - 1 WHERE identity = ? AND uses_left > 0"
        " AND (expires IS NULL OR expires > ?)",
        (identity, _iso(_now())),
    ).rowcount
    if not spent:
        raise PskExhausted(
            f"PSK identity {identity!r} has no use left, expired or was removed; "
            "no certificate was issued"
        )
