"""The authenticated peer of a CoAP request, as the DTLS transport exposes it on the remote."""

from __future__ import annotations

from aiocoap import Message

from ..service import Peer, Transport


def peer_of(request: Message) -> Peer:
    remote = request.remote
    certificates = tuple(getattr(remote, "peer_certificates", ()) or ())
    tls_unique = getattr(remote, "tls_unique", None)
    return Peer(
        transport=Transport.COAPS,
        certificates=certificates,
        tls_unique=tls_unique,
        address=str(getattr(remote, "hostinfo", "") or "") or None,
        tls_unique_unavailable=None if tls_unique else "the CoAP channel is not DTLS-protected",
    )
