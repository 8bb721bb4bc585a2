"""Where a CA directory keeps its files."""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .signer import PinSource, load_ca_key
from .store import absolute_location


@dataclass(frozen=True)
class CaPaths:
    dir: Path
    ca_cert: Path  # ca.pem: the self-signed CA certificate
    ca_key: Path  # ca.key: its private key (PKCS#8 PEM, mode 0600)
    server_cert: Path  # server.pem: the server certificate, then the CA certificate
    server_key: Path  # server.key: the server's private key (mode 0600)
    store: Path  # est.sqlite3: issued certificates and pending requests

    @classmethod
    def of(cls, ca_dir: str | Path) -> CaPaths:
        d = Path(ca_dir)
        return cls(
            dir=d,
            ca_cert=d / "ca.pem",
            ca_key=d / "ca.key",
            server_cert=d / "server.pem",
            server_key=d / "server.key",
            store=d / "est.sqlite3",
        )

    @property
    def ocsp_cert(self) -> Path:
        """ocsp.pem: the delegated OCSP responder's certificate (ca issue-ocsp), if any."""
        return self.dir / "ocsp.pem"

    @property
    def ocsp_key(self) -> Path:
        """ocsp.key: its private key (mode 0600)."""
        return self.dir / "ocsp.key"

    @property
    def ocsp_key_uri(self) -> Path:
        """ocsp.uri: the RFC 7512 URI of the responder's key in a PKCS#11 token (`ca
        issue-ocsp --key-uri`), instead of ocsp.key."""
        return self.dir / "ocsp.uri"

    @property
    def store_url(self) -> Path:
        """store.url: the CA's store when it is not est.sqlite3 here (`ca init --store URL`):
        one line, a postgresql:// URL or sqlite:PATH. Mode 0600: a URL may hold a password."""
        return self.dir / "store.url"

    def store_location(self) -> str | Path:
        """Where the CA's store is, as Store.open takes it: what store.url says (a relative
        sqlite: path is the CA directory's), else the directory's est.sqlite3. Refuses
        (ExposedFileError) a store.url others can read."""
        require_private(self.store_url)
        try:
            text = self.store_url.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return self.store
        if not text:
            raise ValueError(f"{self.store_url} is empty: write the store's URL in it")
        return absolute_location(text, base=self.dir)  # sqlite:NAME: a file in the CA dir

    @property
    def key_uri(self) -> Path:
        """key.uri: the RFC 7512 URI of the CA key in a PKCS#11 token, instead of ca.key."""
        return self.dir / "key.uri"

    def load_ca(self, pins: PinSource | None = None) -> tuple[x509.Certificate, PrivateKeyTypes]:
        """The CA certificate and its key, checked to belong together: the key from
        ca.key, or the token key.uri names (its PIN from pins: file, environment or
        prompt). Refuses (ExposedFileError) a directory whose private keys other users
        can read."""
        for secret in (self.ca_key, self.server_key):
            require_private(secret)
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = load_ca_key(self.dir, self.ca_key, cert, pins or PinSource())
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{exc.filename}: no CA here (run 'estcoap ca init {self.dir}' first)"
            ) from exc
        return cert, key


class ExposedFileError(ValueError):
    """A file holding secrets that other local users may read or write."""


def require_private(path: Path) -> None:
    """Refuse a secret file that its group or others may access, as ssh and step-ca do for
    keys: a widened mode is an operator's mistake to see and fix, and such a file may
    already have been read, so it is not silently narrowed. A missing file passes."""
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise ExposedFileError(
            f"{path} is accessible by other users (mode {mode:04o}); "
            f"run: chmod 600 {shlex.quote(str(path))}"
        )
