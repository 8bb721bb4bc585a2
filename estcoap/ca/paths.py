"""Where a CA directory keeps its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
