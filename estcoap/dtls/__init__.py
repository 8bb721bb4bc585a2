"""Certificate DTLS 1.2 for aiocoap (RFC 9148 transport). Knows nothing of EST.

* association: sans-IO DTLS association (datagrams in/out, timers, events)
* server / client: aiocoap transports on top of it
* remotes expose `peer_certificates` (verified chain, leaf first) and `tls_unique`
"""

from .association import DtlsAssociation
from .client import DtlsClientTransport, attach_client, create_client_context
from .config import DtlsClientConfig, DtlsServerConfig
from .errors import (
    ConnectionClosed,
    DtlsError,
    HandshakeFailed,
    HandshakeTimeout,
    PeerNameMismatch,
)
from .remote import DtlsRemote
from .server import DtlsServerTransport, create_server_context, start_server

__all__ = [
    "ConnectionClosed",
    "DtlsAssociation",
    "DtlsClientConfig",
    "DtlsClientTransport",
    "DtlsError",
    "DtlsRemote",
    "DtlsServerConfig",
    "DtlsServerTransport",
    "HandshakeFailed",
    "HandshakeTimeout",
    "PeerNameMismatch",
    "attach_client",
    "create_client_context",
    "create_server_context",
    "start_server",
]
