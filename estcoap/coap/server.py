"""Start the EST-coaps front: the resource tree on the certificate DTLS transport."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiocoap
from cryptography import x509

from ..codec.operations import EST_WELL_KNOWN
from ..dtls import DtlsServerConfig, DtlsServerTransport, create_server_context
from ..dtls.config import load_certificates, load_private_key
from ..observe.hooks import NO_HOOK, RequestHook
from ..service import EstService
from .block1 import DEFAULT_BLOCK1_LIMITS, Block1Limits
from .site import DEFAULT_MAX_BODY, build_site


@dataclass
class CoapsServer:
    context: aiocoap.Context
    transport: DtlsServerTransport
    root: str = EST_WELL_KNOWN

    @property
    def port(self) -> int:
        return self.transport.bound_addresses[0][1]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        """One URL per bound address (port 0 resolved)."""
        urls = []
        for address in self.transport.bound_addresses:
            host, port = address[:2]
            host = f"[{host}]" if ":" in host else host
            urls.append(f"coaps://{host}:{port}{self.root}")
        return urls

    async def close(self) -> None:
        await self.context.shutdown()


async def start_coaps_server(
    service: EstService,
    binds: Sequence[tuple[str, int]],
    *,
    cert_chain: str | Path,
    key: str | Path,
    trust_anchors: Sequence[x509.Certificate] | None = None,
    labels: Sequence[str] = (),
    short_root: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    block1_limits: Block1Limits = DEFAULT_BLOCK1_LIMITS,
    well_known: bool = True,
    require_client_certificate: bool = True,
    request_hook: RequestHook = NO_HOOK,
    **dtls_options: object,
) -> CoapsServer:
    """Serve `service` over EST-coaps on each bind address (port 0 picks a free one).

    trust_anchors verify device certificates at the DTLS layer: the device makers'
    IDevID CAs plus the issuing CA, so certificates it issued can re-enroll. They default
    to the service's client_trust.anchors. request_hook hears of every request answered;
    the transport reports handshakes to its on_handshake (dtls/server.py).
    """
    if trust_anchors is None:
        trust_anchors = service.client_trust.anchors
    site = build_site(
        service,
        labels=labels,
        short_root=short_root,
        max_body=max_body,
        block1_limits=block1_limits,
        well_known=well_known,
        hook=request_hook,
    )
    config = DtlsServerConfig(
        certificate_chain=load_certificates(cert_chain),
        private_key=load_private_key(key),
        trust_anchors=list(trust_anchors),
        require_client_certificate=require_client_certificate,
        **dtls_options,  # type: ignore[arg-type]
    )
    context, transport = await create_server_context(site, binds, config)
    return CoapsServer(context, transport, EST_WELL_KNOWN if well_known else str(short_root))
