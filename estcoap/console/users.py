"""The console's users: a file of its own in the CA directory (console-users, mode 0600).

They are not EST users: an HTTP user of the https front cannot sign in here, and a
console user's password opens no EST endpoint. One line per user, `NAME scrypt$N$r$p$SALT$HASH`
(SALT and HASH base64). scrypt is memory-hard, in the standard library, and takes ~40 ms
per check, so checks run off the event loop (ConsoleServer uses a thread).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "console-users"
# N=2^14, r=8, p=1: ~16 MiB and ~40 ms per check (RFC 7914's interactive-login figure).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ConsoleUsersError(ValueError):
    """A users file that cannot be read as one, or a name or password refused."""


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    password_hash: str


def users_path(ca_dir: str | Path) -> Path:
    return Path(ca_dir) / FILE_NAME


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: str, password: str) -> bool:
    """One scrypt run; False for a wrong password or a hash this module did not write."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(actual, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


@functools.cache
def _dummy() -> str:
    """Checked for a name that has no user, so an unknown name costs what a known one does."""
    return hash_password(secrets.token_urlsafe(16))


def check(user: ConsoleUser | None, password: str) -> bool:
    """True when password is user's; None (no such user) costs one scrypt run and fails."""
    if user is None:
        verify_password(_dummy(), password)
        return False
    return verify_password(user.password_hash, password)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n + 2**20, dklen=32
    )


def load(path: Path) -> dict[str, ConsoleUser]:
    """The users of a file ({} when there is none yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    users: dict[str, ConsoleUser] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2 or not NAME.match(fields[0]) or not fields[1].startswith("scrypt$"):
            raise ConsoleUsersError(f"{path}:{number}: expected NAME scrypt$...")
        users[fields[0]] = ConsoleUser(fields[0], fields[1])
    return users


def save(path: Path, users: dict[str, ConsoleUser]) -> None:
    """Write the file whole (mode 0600 from its creation), then move it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for user in sorted(users.values(), key=lambda u: u.name):
            fh.write(f"{user.name} {user.password_hash}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConsoleUsersError(
            f"a console user name is 1-64 letters, digits, '.', '_' or '-', got {name!r}"
        )
    return name


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConsoleUsersError(f"the password is too short (at least {MIN_PASSWORD} characters)")
    return password
