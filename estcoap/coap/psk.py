"""The EST-coaps front over PSK DTLS (certificate-less first enrollment, RFC 7030 s3.3.3).

The same resource tree as the certificate front (site.py), on aiocoap's tinydtls server
transport (DTLSSocket; TLS_PSK_WITH_AES_128_CCM_8, the PSK suite RFC 7925 makes
mandatory). tinydtls asks for a key by the identity the client sends; `psk_keys` answers
it at every handshake (None: no key, and the handshake fails), so keys added while the
server runs count at once. The identity that authenticated reaches the service as
Peer.psk_identity; which subject it may have is the service's policy, not this front's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiocoap
from aiocoap.numbers.constants import COAP_PORT

from ..codec.operations import EST_WELL_KNOWN
from ..observe.hooks import NO_HOOK, RequestHook
from ..pskengine import require_dtlssocket
from ..service import EstService
from .block1 import DEFAULT_BLOCK1_LIMITS, Block1Limits
from .peer import PskClaim
from .site import DEFAULT_MAX_BODY, build_site

log = logging.getLogger(__name__)

# identity (as sent, UTF-8) -> the key, or None when it has none (unknown, used up, expired)
PskLookup = Callable[[str], bytes | None]

# Associations kept at once, least recently active evicted first: each new source address
# gets tinydtls state before any cookie exchange, so this bounds what spoofed datagrams
# can make the server hold.
DEFAULT_MAX_ASSOCIATIONS = 1000


class _Credentials:
    """The lookup aiocoap's tinydtls server makes (find_dtls_psk), answered by psk_keys."""

    def __init__(self, psk_keys: PskLookup) -> None:
        self._psk_keys = psk_keys

    def find_dtls_psk(self, identity: bytes) -> tuple[bytes, PskClaim]:
        try:
            text = identity.decode("utf-8")
            key = self._psk_keys(text)
        except UnicodeDecodeError:
            raise KeyError(identity) from None
        except Exception:  # a store that cannot answer: no key, never a crashed handshake
            log.exception("PSK lookup failed")
            raise KeyError(identity) from None
        if key is None:
            log.info("PSK handshake refused: no usable key for identity %r", text)
            raise KeyError(identity)
        return key, PskClaim(text)


@dataclass
class CoapsPskServer:
    context: aiocoap.Context
    host: str
    port: int
    root: str = EST_WELL_KNOWN
    _pool: object = None  # the listening socket protocol, which holds the associations

    @property
    def associations(self) -> int:
        """DTLS associations held now (at most max_associations)."""
        return len(getattr(self._pool, "_connections", ()))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coaps://{host}:{self.port}{self.root}"

    async def close(self) -> None:
        await self.context.shutdown()


async def start_coaps_psk_server(
    service: EstService,
    bind: tuple[str, int],
    *,
    psk_keys: PskLookup,
    labels: tuple[str, ...] = (),
    short_root: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    block1_limits: Block1Limits = DEFAULT_BLOCK1_LIMITS,
    well_known: bool = True,
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
    request_hook: RequestHook = NO_HOOK,
) -> CoapsPskServer:
    """Serve `service` over EST-coaps with PSK DTLS on one address (port 0 picks one).
    tinydtls' server transport binds one address, not the any-address."""
    require_dtlssocket()
    from aiocoap.transports import tinydtls
    from aiocoap.transports import tinydtls_server as tds

    class _Association(tds._AddressDTLS):
        def _event(self, level, code):
            if (level, code) == (tinydtls.LEVEL_WARNING, tinydtls.CODE_CLOSE_NOTIFY):
                # The client is done (tinydtls reports its close_notify as a warning, which
                # aiocoap leaves unhandled and so would hold the association until evicted).
                # A server has no exchange of its own waiting on the peer: nothing to fail.
                self._retransmission_task.cancel()
                self._protocol._connections.pop(self._underlying_address.address, None)
                return
            super()._event(level, code)

    class _Socket(tds._DatagramServerSocketSimpleDTLS):
        _Address = _Association
        max_sockets = max_associations

        def datagram_received(self, data, sockaddr):
            # aiocoap never evicts (its _maybe_purge_sockets is not called): bound here.
            if sockaddr not in self._connections:
                self._maybe_purge_sockets()
            try:
                super().datagram_received(data, sockaddr)
            except Exception as exc:  # a datagram tinydtls chokes on must not stop others
                log.info("PSK DTLS datagram from %s dropped: %s", sockaddr[0], exc)

    class _Interface(tds.MessageInterfaceTinyDTLSServer):
        # aiocoap adds 1 to a given port for coaps (5683 -> 5684); take the port as given.
        _default_port = COAP_PORT
        _serversocket = _Socket

    site = build_site(
        service,
        labels=labels,
        short_root=short_root,
        max_body=max_body,
        block1_limits=block1_limits,
        well_known=well_known,
        hook=request_hook,  # metrics and request log, as on the certificate DTLS front
    )
    context = aiocoap.Context(serversite=site)
    interface: list[tds.MessageInterfaceTinyDTLSServer] = []

    async def create(mman):
        made = await _Interface.create_server(
            bind,
            mman,
            log=context.log,
            loop=context.loop,
            server_credentials=_Credentials(psk_keys),
        )
        interface.append(made)
        return made

    await context._append_tokenmanaged_messagemanaged_transport(create)
    pool = interface[0]._pool
    sockname = pool._transport.get_extra_info("sockname")
    root = EST_WELL_KNOWN if well_known else str(short_root)
    return CoapsPskServer(context, sockname[0], sockname[1], root, pool)
