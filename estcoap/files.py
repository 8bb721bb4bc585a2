"""Writing keys and certificates: secrets are mode 0600 from their first byte.

Outputs are checked before a request (a CA must not issue what cannot be written), and
what still fails to be written after issuance is saved elsewhere rather than lost.
Errors name the user's path, never the temporary file written beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class OutputError(OSError):
    """A file could not be (or would not be) written. str() is one line naming it."""


def private_key_pem(key) -> bytes:
    """Unencrypted PKCS#8 PEM (the files are protected by their mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificates_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def check_writable(path: str | Path) -> None:
    """Refuse a path we could not write, before anything is asked of a server.

    Writes go to a temporary file beside the target, renamed over it, so what counts is
    the directory: it must exist and take new files."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    parent = target.parent
    if not parent.exists():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: no permission to create files in {parent}")


def write_file(path: str | Path, data: bytes, *, secret: bool = False) -> None:
    """Replace path with data atomically (a temporary file beside it, renamed over it);
    owner-only (0600) when secret, from the first byte."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_secret(path: str | Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write data readable by the owner only. overwrite=True replaces atomically (a
    temporary file renamed over the target); False refuses an existing file."""
    if overwrite:
        write_file(path, data, secret=True)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def rescue(name: str | Path, data: bytes) -> Path:
    """Save data that must not be lost (an issued certificate, a key the server made)
    when its own path failed: a new owner-only file in the current directory, else in
    the temporary directory. Returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"estcoap-rescued-{stamp}-{os.getpid()}-{Path(name).name}"
    for directory in (Path.cwd(), Path(tempfile.gettempdir())):
        place = directory / base
        try:
            fd = os.open(place, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError:  # the disk is full, say: no half-written copy left behind
            with contextlib.suppress(OSError):
                place.unlink()
            continue
        return place.resolve()
    raise OutputError(f"could not save {name} anywhere (current and temporary directory)")
