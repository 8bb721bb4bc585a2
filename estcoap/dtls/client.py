"""aiocoap client transport: coaps:// requests over certificate DTLS 1.2.

One association per server endpoint (host, port), made on the first request and reused;
the handshake happens inside determine_remote(), so a refusal or a timeout surfaces as
the request's exception.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiocoap
from aiocoap import error as coap_error
from aiocoap import interfaces
from aiocoap.message import Message
from aiocoap.messagemanager import MessageManager
from aiocoap.numbers import COAPS_PORT
from aiocoap.tokenmanager import TokenManager
from aiocoap.util import hostportjoin, hostportsplit

from .association import (
    ApplicationData,
    Closed,
    DtlsAssociation,
    Event,
    HandshakeComplete,
    check_server_name,
)
from .config import DtlsClientConfig
from .contexts import client_context
from .errors import ConnectionClosed, DtlsError, HandshakeTimeout
from .remote import DtlsRemote

log = logging.getLogger("estcoap.dtls.client")


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, remote: ClientRemote) -> None:
        self.remote = remote

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.remote.owner._received(self.remote, data)
        except Exception:
            log.exception("dropping datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: keep retransmitting until the timeout (ICMP
        # may be transient or forged), but remember it for the timeout's message.
        log.debug("socket error towards %s: %s", self.remote.peer, exc)
        if isinstance(exc, ConnectionRefusedError):
            self.remote.refused = True


class ClientRemote(DtlsRemote):
    def __init__(
        self, owner: DtlsClientTransport, host: str, port: int, association: DtlsAssociation
    ) -> None:
        super().__init__(association, (host, port), self._local, self._send_datagram)
        self.owner = owner
        self.udp: asyncio.DatagramTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.heard = False  # a datagram came back: something DTLS listens there
        self.refused = False  # the peer's host said "port unreachable"

    @property
    def hostinfo(self) -> str:
        host, port = self.peer
        return hostportjoin(host, None if port == COAPS_PORT else port)

    def _local(self) -> str:
        if self.udp is None:
            return ""
        host, port = self.udp.get_extra_info("sockname")[:2]
        return hostportjoin(host, port)

    def _send_datagram(self, data: bytes) -> None:
        if self.udp is not None and not self.udp.is_closing():
            self.udp.sendto(data)


def _timeout_message(remote: ClientRemote, seconds: float) -> str:
    """Say what to check: a silent peer is most often a server not running or a wrong port."""
    where = hostportjoin(*remote.peer)
    if remote.heard:
        return f"DTLS handshake with {where} did not complete within {seconds:g} s"
    refused = " (port unreachable)" if remote.refused else ""
    return (
        f"no DTLS answer from {where} within {seconds:g} s{refused}: "
        "is the server running and the port right?"
    )


class DtlsClientTransport(interfaces.MessageInterface):
    def __init__(self, mman: interfaces.MessageManager, config: DtlsClientConfig) -> None:
        self._mman = mman
        self.config = config
        self._loop = asyncio.get_running_loop()
        self._ctx = client_context(config, check_server_name)
        self.pool: dict[tuple[str, int], ClientRemote] = {}
        self._shut_down = False

    # -- association management ---------------------------------------------------------

    async def _connect(self, host: str, port: int) -> ClientRemote:
        name = self.config.server_name or host
        association = DtlsAssociation.connect(
            self._ctx,
            name,
            datagram_limit=self.config.datagram_limit,
            compact=self.config.compact_sessions,
        )
        remote = ClientRemote(self, host, port, association)
        self.pool[(host, port)] = remote
        try:
            remote.udp, _ = await self._loop.create_datagram_endpoint(
                lambda: _Socket(remote), remote_addr=(host, port)
            )
            self._process(remote, [])
            await asyncio.wait_for(asyncio.shield(remote.ready), self.config.handshake_timeout)
        except TimeoutError:
            error = HandshakeTimeout(_timeout_message(remote, self.config.handshake_timeout))
            self._drop(remote, error)
            raise error from None
        except BaseException as exc:
            self._drop(remote, exc if isinstance(exc, DtlsError) else ConnectionClosed(str(exc)))
            raise
        return remote

    def _received(self, remote: ClientRemote, data: bytes) -> None:
        remote.last_activity = time.monotonic()
        remote.heard = True
        self._process(remote, remote.association.receive_datagram(data))

    def _process(self, remote: ClientRemote, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, HandshakeComplete):
                if not remote.ready.done():
                    remote.ready.set_result(None)
            elif isinstance(event, ApplicationData):
                try:
                    message = Message.decode(event.data, remote)
                except coap_error.UnparsableMessage:
                    log.info("unparsable CoAP message from %s", remote.peer)
                    continue
                self._mman.dispatch_message(message)
            elif isinstance(event, Closed):
                self._drop(remote, event.error or ConnectionClosed("server sent close_notify"))
        remote.flush()
        remote.cancel_timer()
        delay = remote.association.timeout()
        if delay is not None and self.pool.get(remote.peer) is remote:
            remote.timer = self._loop.call_later(delay, self._on_timer, remote)

    def _on_timer(self, remote: ClientRemote) -> None:
        remote.timer = None
        self._process(remote, remote.association.handle_timeout())

    def _drop(self, remote: ClientRemote, reason: BaseException) -> None:
        if self.pool.get(remote.peer) is remote:
            del self.pool[remote.peer]
        remote.cancel_timer()
        if not remote.ready.done():
            remote.ready.set_exception(reason)
            remote.ready.exception()  # retrieved: _connect re-raises it
        elif remote.association.tls_unique is not None and not self._shut_down:
            self._mman.dispatch_error(reason, remote)
        if remote.association.error is None and isinstance(reason, DtlsError):
            remote.association.abort(reason)
        remote.flush()
        if remote.udp is not None:
            remote.udp.close()

    # -- MessageInterface ---------------------------------------------------------------

    async def determine_remote(self, message: Message) -> ClientRemote | None:
        if message.requested_scheme != "coaps":
            return None
        if self._shut_down:
            raise coap_error.LibraryShutdown()
        if message.unresolved_remote:
            host, port = hostportsplit(message.unresolved_remote)
        elif message.opt.uri_host:
            host, port = message.opt.uri_host, message.opt.uri_port
        else:
            raise ValueError("coaps:// request without a host")
        port = port or COAPS_PORT
        remote = self.pool.get((host, port))
        if remote is None:
            return await self._connect(host, port)
        await asyncio.shield(remote.ready)  # a handshake another request started
        return remote

    async def recognize_remote(self, remote: object) -> bool:
        return (
            isinstance(remote, ClientRemote)
            and self.pool.get(remote.peer) is remote
            and remote.established
        )

    def send(self, message: Message) -> None:
        remote = message.remote
        assert isinstance(remote, ClientRemote)
        try:
            remote.association.send(message.encode())
        except DtlsError as exc:
            self._drop(remote, exc)
            return
        remote.last_activity = time.monotonic()
        remote.flush()

    async def shutdown(self) -> None:
        self._shut_down = True
        for remote in list(self.pool.values()):
            remote.association.close()
            self._drop(remote, ConnectionClosed("client shutting down"))


async def attach_client(context: aiocoap.Context, config: DtlsClientConfig) -> DtlsClientTransport:
    """Put the certificate transport first in `context`, so it claims every coaps:// request
    (ahead of aiocoap's PSK-only tinydtls transport when DTLSSocket is installed)."""
    tman = TokenManager(context)
    mman = MessageManager(tman)
    transport = DtlsClientTransport(mman, config)
    mman.message_interface = transport
    tman.token_interface = mman
    context.request_interfaces.insert(0, tman)
    return transport


async def create_client_context(config: DtlsClientConfig) -> aiocoap.Context:
    """A client Context whose coaps:// requests go through certificate DTLS; other
    schemes use aiocoap's default client transports."""
    context = await aiocoap.Context.create_client_context()
    await attach_client(context, config)
    return context
