"""Writing keys and certificates: secrets are mode 0600 from their first byte."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def private_key_pem(key) -> bytes:  # type: ignore[no-untyped-def]
    """Unencrypted PKCS#8 PEM (the files are protected by their mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificates_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def write_secret(path: str | Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write data readable by the owner only. overwrite=True replaces atomically (a
    temporary file renamed over the target); False refuses an existing file."""
    path = Path(path)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if overwrite else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if overwrite:
        os.replace(target, path)
