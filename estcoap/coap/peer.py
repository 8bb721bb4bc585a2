"""The authenticated peer of a CoAP request, as the DTLS transport exposes it on the remote."""

from __future__ import annotations

from aiocoap import Message

from ..dtls import DtlsRemote
from ..service import Peer, Transport
from ..trust import ClientTrust


def peer_of(request: Message, trust: ClientTrust) -> Peer:
    """The request's Peer; a chain the DTLS handshake verified is noted in `trust` (the
    service's), so the service's trust check need not verify its signatures again."""
    remote = request.remote
    if isinstance(remote, DtlsRemote):
        # One association has one verified chain and one tls-unique for its whole life
        # (no renegotiation), so its Peer is built, and its chain noted, once.
        cached = remote.front_peer
        if cached is None or cached.tls_unique != remote.tls_unique:
            cached = remote.front_peer = _peer(remote, trust)
        return cached
    return _peer(remote, trust)


def _peer(remote: object, trust: ClientTrust) -> Peer:
    certificates = tuple(getattr(remote, "peer_certificates", ()) or ())
    if isinstance(remote, DtlsRemote) and certificates:
        # OpenSSL verified this chain in the handshake.
        trust.note_verified_chain(certificates)
    tls_unique = getattr(remote, "tls_unique", None)
    return Peer(
        transport=Transport.COAPS,
        certificates=certificates,
        tls_unique=tls_unique,
        address=str(getattr(remote, "hostinfo", "") or "") or None,
        tls_unique_unavailable=None if tls_unique else "the CoAP channel is not DTLS-protected",
    )
