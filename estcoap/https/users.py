"""HTTP users for Basic and Digest authentication, and the users file.

Users file: one user per line, `#` starts a comment line:

    NAME:scrypt$N$r$p$SALT$HASH:REALM:HA1-MD5:HA1-SHA-256

SALT and HASH are base64. Basic is checked against the scrypt hash. Digest
needs H(user:realm:password), so the file also stores HA1 for both Digest
algorithms for REALM (the server's realm, "estcoap"); HA1 is password-equivalent
for Digest, so keep the file private (it is written mode 0600). Lines whose
realm differs from the server's support Basic only. Create entries with
`estcoap users add FILE NAME`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..codec.authheaders import digest_ha1

REALM = "estcoap"
_SCRYPT = (2**14, 8, 1)


class UsersFileError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    # Exactly one of password (given on the command line) or scrypt_hash (from a file).
    password: str | None = None
    scrypt_hash: str | None = None
    realm: str = REALM
    ha1: tuple[tuple[str, str], ...] = ()  # (algorithm, HA1 hex)

    def check_password(self, password: str, *, dummy_hash: str) -> bool:
        """One scrypt run whoever the user is (slow: call it off the event loop).

        A command-line user has no hash, so it runs scrypt against dummy_hash (see
        dummy_scrypt_hash) and compares in clear: every check costs the same, so timing
        does not tell which kind of user, or whether a user, stands behind a name.
        """
        if self.scrypt_hash is not None:
            return scrypt_verify(self.scrypt_hash, password)
        scrypt_verify(dummy_hash, password)
        assert self.password is not None
        return hmac.compare_digest(self.password.encode(), password.encode())

    def digest_ha1(self, algorithm: str, realm: str) -> str | None:
        """H(user:realm:password) for this algorithm, or None when unknown."""
        if self.password is not None:
            return digest_ha1(algorithm, self.name, realm, self.password)
        if realm != self.realm:
            return None
        return dict(self.ha1).get(algorithm.upper())


def user_from_arg(text: str) -> User:
    """A user from `NAME:PASSWORD`."""
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise UsersFileError(f"expected NAME:PASSWORD, got {text!r}")
    return User(name=name, password=password)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )


def scrypt_hash(password: str) -> str:
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join(
        [
            "scrypt",
            str(n),
            str(r),
            str(p),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def dummy_scrypt_hash(like: str | None = None) -> str:
    """A hash no password matches, with the parameters of `like` (a stored hash) or ours.

    Checking a name that has no user against it costs one scrypt run, as a real check does.
    """
    n, r, p = _SCRYPT
    if like is not None:
        fields = like.split("$")
        if len(fields) == 6 and all(f.isdigit() for f in fields[1:4]):
            n, r, p = (int(f) for f in fields[1:4])
    salt, digest = secrets.token_bytes(16), secrets.token_bytes(32)
    return "$".join(
        [
            "scrypt",
            str(n),
            str(r),
            str(p),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def scrypt_verify(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


def format_user_line(name: str, password: str, realm: str = REALM) -> str:
    if not name or ":" in name:
        raise UsersFileError("a user name must be non-empty and contain no ':'")
    return ":".join(
        [
            name,
            scrypt_hash(password),
            realm,
            digest_ha1("MD5", name, realm, password),
            digest_ha1("SHA-256", name, realm, password),
        ]
    )


def parse_users_file(path: str | Path) -> list[User]:
    users: list[User] = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 5 or not fields[1].startswith("scrypt$"):
            raise UsersFileError(
                f"{path}:{number}: expected NAME:scrypt$...:REALM:HA1-MD5:HA1-SHA-256"
            )
        name, hashed, realm, md5, sha256 = fields
        users.append(
            User(
                name=name, scrypt_hash=hashed, realm=realm, ha1=(("MD5", md5), ("SHA-256", sha256))
            )
        )
    return users


def add_user(path: str | Path, name: str, password: str, realm: str = REALM) -> None:
    """Add or replace NAME in the users file, creating it mode 0600."""
    path = Path(path)
    line = format_user_line(name, password, realm)
    kept: list[str] = []
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.split(":", 1)[0] != name:
                kept.append(raw)
    kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(kept) + "\n")
    os.replace(tmp, path)
