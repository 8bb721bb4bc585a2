"""--keys-dir: the fleet's IDevIDs (and the LDevIDs a run obtained), kept across runs.

Making a key and an IDevID costs the simulator more CPU than the device's EST exchange
costs it, and a renewal storm needs the certificates a previous run obtained. So a
directory holds them, one small PEM file per device (private key first, then the
certificate chain), mode 0600 in 0700 directories, under a thousand-file folder per
thousand devices:

    DIR/maker.pem               the maker that signed the IDevIDs (checked on every run)
    DIR/tag                     the serial prefix: device i is sim-<tag>-<i:06d>
    DIR/idevid/012/012345.pem   device 12345's IDevID key and certificate
    DIR/ldevid/012/012345.pem   the certificate EST issued it last, and its key

A device's file is read when the device starts, and made then if missing: a second run
over the same directory generates nothing. Files are written whole under a temporary
name and renamed, so processes of one run (each with its own devices) and a run that
was interrupted leave no half-written file.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..idevid import DeviceMaker

PER_FOLDER = 1000


class KeysDirError(Exception):
    """The directory cannot be used (another maker's IDevIDs, unreadable, ...): one line."""


@dataclass(frozen=True)
class Credential:
    serial: str
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey


def serial_of(tag: str, index: int) -> str:
    return f"sim-{tag}-{index:06d}"


class KeysDir:
    def __init__(self, root: str | Path, maker: DeviceMaker | None) -> None:
        self.root = Path(root)
        self.maker = maker
        self.generated = 0
        self.loaded = 0
        self.saved = 0
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.tag = self._tag()
            if maker is not None:
                self._check_maker(maker)
        except OSError as exc:
            raise KeysDirError(f"--keys-dir {self.root}: {exc.strerror or exc}") from None

    def _tag(self) -> str:
        path = self.root / "tag"
        if not path.exists():
            _write_new(path, secrets.token_hex(3).encode() + b"\n", mode=0o644)
        tag = path.read_text().strip()
        if not tag.isalnum():
            raise KeysDirError(f"--keys-dir {self.root}: {path.name} is not a serial prefix")
        return tag

    def _check_maker(self, maker: DeviceMaker) -> None:
        pem = maker.certificate.public_bytes(serialization.Encoding.PEM)
        path = self.root / "maker.pem"
        if not path.exists():
            _write_new(path, pem, mode=0o644)
        if path.read_bytes() != pem:
            raise KeysDirError(
                f"--keys-dir {self.root} holds IDevIDs of another maker (its maker.pem "
                "differs from --maker-cert): use another directory"
            )

    def _path(self, kind: str, index: int) -> Path:
        return self.root / kind / f"{index // PER_FOLDER:03d}" / f"{index:06d}.pem"

    def has_idevid(self, index: int) -> bool:
        return self._path("idevid", index).exists()

    def idevid(self, index: int) -> Credential:
        """Device `index`'s IDevID, made (and kept) the first time it is asked for."""
        serial = serial_of(self.tag, index)
        path = self._path("idevid", index)
        found = self._read(path, serial)
        if found is not None:
            self.loaded += 1
            return found
        if self.maker is None:
            raise KeysDirError(f"--keys-dir {self.root}: no IDevID for device {index}")
        cert, key = self.maker.issue_idevid(serial)
        self._write(path, [cert], key)
        self.generated += 1
        return Credential(serial, [cert], key)

    def ldevid(self, index: int) -> Credential | None:
        """The certificate (and key) device `index` obtained in an earlier run, if any."""
        found = self._read(self._path("ldevid", index), serial_of(self.tag, index))
        if found is not None:
            self.loaded += 1
        return found

    def save_ldevid(self, index: int, held: Credential) -> None:
        """Keep what device `index` obtained, for a renewal storm in a later run."""
        if not isinstance(held.key, ec.EllipticCurvePrivateKey):
            return  # the simulator's devices make P-256 keys; another kind is not kept
        self._write(self._path("ldevid", index), list(held.chain), held.key)
        self.saved += 1

    def counters(self) -> dict[str, int]:
        return {"generated": self.generated, "loaded": self.loaded, "saved": self.saved}

    @staticmethod
    def _read(path: Path, serial: str) -> Credential | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            key = serialization.load_pem_private_key(data, password=None)
            chain = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise KeysDirError(f"{path}: not a key and certificate (PEM)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeysDirError(f"{path}: not an EC key")
        return Credential(serial, chain, key)

    @staticmethod
    def _write(path: Path, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(path, pem, mode=0o600, replace=True)


def _write_new(path: Path, data: bytes, *, mode: int, replace: bool = False) -> None:
    """Whole or not at all: a private temporary name, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if replace:
        os.replace(tmp, path)
    else:  # the first writer wins (another process may have made it meanwhile)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        os.unlink(tmp)
