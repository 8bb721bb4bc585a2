"""Where a CA directory keeps its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


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

    def load_ca(self) -> tuple[x509.Certificate, PrivateKeyTypes]:
        """The CA certificate and its key, checked to belong together."""
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{exc.filename}: no CA here (run 'estcoap ca init {self.dir}' first)"
            ) from exc
        if key.public_key() != cert.public_key():
            raise ValueError(f"{self.ca_key} does not belong to {self.ca_cert}")
        return cert, key
