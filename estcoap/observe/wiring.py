"""What `--metrics HOST:PORT` adds to a server process: one Metrics, the hooks it hands
the fronts and services, the readiness checks, and the listener (http.py).

The CLI (serve, gateway, proxy) makes one Operations, passes front(name) to each front
it starts, calls the watch_* method for each thing it built, then start(). Everything
here reads those objects through their public attributes only; no front or service
learns that it is observed beyond the hook it was handed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509

from .hooks import RequestHook
from .http import Check, OpsServer, in_thread, start_ops_server
from .metrics import Metrics


class Operations:
    def __init__(self) -> None:
        self.metrics = Metrics()
        self.checks: dict[str, Check] = {}

    def front(self, name: str) -> RequestHook:
        """The request hook of a front: coaps, https, gateway or proxy."""
        return self.metrics.front(name)

    def watch_ca(self, service: Any) -> None:
        """A LocalCA: issuance counts, the store's pending and revoked counts, the CA and
        server certificates' expiry; ready when the store takes a write and the CA key
        signs."""
        service.issuance_hook = self.metrics
        self.metrics.watch_store(service.store)
        self.metrics.watch_certificate("ca", service.ca_certificate.not_valid_after_utc)
        self.watch_certificate_file("server", service.paths.server_cert)
        self.checks["store"] = in_thread(service.store.check_writable)
        self.checks["ca_key"] = in_thread(service.check_key)

    def watch_certificate_file(self, name: str, path: str | Path) -> None:
        """The first certificate of a PEM file (a chain starts with its own)."""
        cert = x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
        self.metrics.watch_certificate(name, cert.not_valid_after_utc)

    def watch_coaps(self, server: Any) -> None:
        """A CoapsServer: its DTLS handshakes and live sessions, its block-wise transfers."""
        transport = server.transport
        transport.on_handshake = self.metrics.handshake
        self.metrics.watch_dtls_sessions(
            lambda: sum(1 for remote in list(transport.sessions.values()) if remote.established)
        )
        site = server.context.serversite
        self.metrics.watch_blockwise("block1", lambda: site.assembler.open_assemblies)
        self.metrics.watch_blockwise("block2", lambda: site.responses.held)

    def watch_https(self, server: Any) -> None:
        """An HttpsServer: its authentication failures and lockouts."""
        auth = server.front.auth
        if auth is not None:
            self.metrics.watch_http_auth(auth)

    def watch_upstream(self, upstream: Any) -> None:
        """The gateway's or proxy's Upstream: call latency and errors; ready while its
        latest call succeeded, or (none yet, or it failed) a cacerts now does."""
        upstream.hook = self.metrics

        async def reachable() -> None:
            if upstream.calls and upstream.last_failure is None:
                return
            try:
                await upstream.cacerts(None)
            except Exception as exc:
                raise RuntimeError(f"upstream unreachable: {exc}") from None

        self.checks["upstream"] = reachable

    async def start(self, host: str, port: int) -> OpsServer:
        return await start_ops_server(host, port, self.metrics, self.checks)
