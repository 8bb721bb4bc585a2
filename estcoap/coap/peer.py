"""The authenticated peer of a CoAP request, as the DTLS transport exposes it on the remote."""

from __future__ import annotations

from dataclasses import dataclass

from aiocoap import Message

from ..dtls import DtlsRemote
from ..service import Peer, Transport
from ..trust import ClientTrust


@dataclass(frozen=True)
class PskClaim:
    """What the tinydtls remote's authenticated_claims holds: the PSK identity used."""

    identity: str


def psk_identity_of(remote: object) -> str | None:
    """The PSK identity a tinydtls remote authenticated, else None."""
    for claim in getattr(remote, "authenticated_claims", None) or ():
        if isinstance(claim, PskClaim):
            return claim.identity
    return None


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
    psk_identity = psk_identity_of(remote)
    if psk_identity is not None:
        return Peer(
            transport=Transport.COAPS,
            psk_identity=psk_identity,
            address=str(getattr(remote, "hostinfo", "") or "") or None,
            tls_unique_unavailable="the PSK DTLS channel (tinydtls) exposes no tls-unique",
        )
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
