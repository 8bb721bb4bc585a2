"""The aiocoap remote of one DTLS association: what resources see as `request.remote`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiocoap import interfaces
from aiocoap.numbers.constants import MAX_REGULAR_BLOCK_SIZE_EXP
from aiocoap.util import hostportjoin
from cryptography import x509

from .association import DtlsAssociation, State


class DtlsRemote(interfaces.EndpointAddress):
    """One object per association, compared by identity.

    `peer_certificates` (verified chain, leaf first) and `tls_unique` (RFC 5929) are what
    authorization and proof-of-possession checks read.
    """

    scheme = "coaps"
    is_multicast = False
    is_multicast_locally = False
    # A plain class attribute shadowing the base class property: aiocoap's blockwise
    # code assigns to it per remote.
    maximum_block_size_exp: int = MAX_REGULAR_BLOCK_SIZE_EXP

    def __init__(
        self,
        association: DtlsAssociation,
        peer: tuple,
        local_hostinfo: Callable[[], str],
        sendto: Callable[[bytes], None],
    ) -> None:
        self.association = association
        self.peer = peer
        # aiocoap formats every request's repr (it names the render task after it).
        self._hostinfo = hostportjoin(peer[0], peer[1])
        self._local_hostinfo = local_hostinfo
        self._sendto = sendto
        self.created = self.last_activity = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        # What a front built from this association for its services (estcoap.coap.peer
        # keeps its Peer here); opaque to the DTLS layer.
        self.front_peer: Any = None

    # -- what resources read ------------------------------------------------------------

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        return self.association.peer_certificates

    @property
    def tls_unique(self) -> bytes | None:
        return self.association.tls_unique

    @property
    def authenticated_claims(self) -> tuple[x509.Certificate, ...]:
        return self.association.peer_certificates[:1]

    # -- EndpointAddress ----------------------------------------------------------------

    @property
    def hostinfo(self) -> str:
        return self._hostinfo

    @property
    def hostinfo_local(self) -> str:
        return self._local_hostinfo()

    @property
    def uri_base(self) -> str:
        return "coaps://" + self.hostinfo

    @property
    def uri_base_local(self) -> str:
        return "coaps://" + self.hostinfo_local

    @property
    def blockwise_key(self) -> object:
        # blocks only combine within one association (same peer, same credentials)
        return self

    @property
    def established(self) -> bool:
        return self.association.state is State.ESTABLISHED

    def flush(self) -> None:
        for datagram in self.association.datagrams_to_send():
            self._sendto(datagram)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def __repr__(self) -> str:
        return f"<DtlsRemote {self._hostinfo} {self.association.state.value}>"
