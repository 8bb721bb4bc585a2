"""aiocoap server transport for coaps:// over certificate DTLS 1.2.

One UDP socket per listen address. A ClientHello without a valid cookie gets a stateless
HelloVerifyRequest; only a returning ClientHello with a valid cookie creates a session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Sequence

import aiocoap
from aiocoap import error as coap_error
from aiocoap import interfaces
from aiocoap.message import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import ACK, CON, NON, RST, Type
from aiocoap.tokenmanager import TokenManager
from aiocoap.util import hostportjoin
from cryptography import x509
from OpenSSL import SSL

from .association import (
    ApplicationData,
    Closed,
    DtlsAssociation,
    Event,
    HandshakeComplete,
    State,
)
from .config import DtlsServerConfig
from .contexts import server_context
from .cookie import CookieJar
from .errors import ConnectionClosed, DtlsError, HandshakeFailed, HandshakeTimeout
from .message_manager import BatchedExpiryMessageManager
from .records import HANDSHAKE, hello_verify_request, parse_client_hello, scan_records
from .remote import DtlsRemote

log = logging.getLogger("estcoap.dtls.server")

SessionKey = tuple["_Endpoint", tuple]

# Why a handshake failed, in a few words a metric can take as a label (a bounded set):
# the transport's on_handshake(completed, reason) hears one of these.
HANDSHAKE_FAILURE_REASONS = ("timeout", "bad_certificate", "untrusted", "cookie", "alert", "other")


def handshake_failure_reason(error: BaseException | None) -> str:
    """The HANDSHAKE_FAILURE_REASONS word for a failed handshake's error (OpenSSL's text)."""
    if isinstance(error, HandshakeTimeout):
        return "timeout"
    text = str(error).lower()
    if "cookie" in text:
        return "cookie"
    if "unknown ca" in text or "unable to get" in text or "verify failed" in text:
        return "untrusted"
    if "certificate" in text:  # no certificate, bad or unsupported certificate, expired
        return "bad_certificate"
    if "alert" in text:
        return "alert"
    return "other"


def _no_report(completed: bool, reason: str) -> None:
    return None


# True in a worker process (estcoap.workers): each listening socket joins its port's
# SO_REUSEPORT group, and Linux hands a peer's datagrams to one socket by the peer's address
# and port, so an association's records all reach the worker that holds it.
reuse_port = False


class _Endpoint(asyncio.DatagramProtocol):
    """One listening UDP socket; hands datagrams to the transport."""

    def __init__(self, server: DtlsServerTransport) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.hostinfo = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("sockname")[:2]
        self.hostinfo = hostportjoin(host, port)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.server._datagram(self, data, addr)
        except Exception as exc:  # a bad datagram must never take the listener down
            _log_failure("dropping datagram from %s", addr, exc)

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error: %s", exc)

    def sendto(self, data: bytes, addr: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class ServerRemote(DtlsRemote):
    def __init__(
        self, endpoint: _Endpoint, peer: tuple, association: DtlsAssociation, client_random: bytes
    ) -> None:
        super().__init__(
            association, peer, lambda: endpoint.hostinfo, lambda data: endpoint.sendto(data, peer)
        )
        self.endpoint = endpoint
        self.client_random = client_random


class DtlsServerTransport(interfaces.MessageInterface):
    def __init__(
        self,
        mman: BatchedExpiryMessageManager,
        config: DtlsServerConfig,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._mman = mman
        self.config = config
        self._loop = loop
        self._cookies = CookieJar()
        self._ctx = server_context(config, self._cookie_matches)
        self.sessions: dict[SessionKey, ServerRemote] = {}
        self._endpoints: list[_Endpoint] = []
        self._sweeper: asyncio.Task | None = None
        self.hello_verify_requests_sent = 0
        self.refused_handshakes = 0
        self.handshakes_completed = 0
        # Hears each handshake's end: (True, "") or (False, a HANDSHAKE_FAILURE_REASONS word).
        self.on_handshake: Callable[[bool, str], None] = _no_report
        self._closing = False
        self.accepting = True  # False once stop_accepting(): new ClientHellos are ignored

    @staticmethod
    def _cookie_matches(conn: SSL.Connection, cookie: bytes) -> bool:
        return cookie == conn.get_app_data()

    @classmethod
    async def create(
        cls,
        mman: BatchedExpiryMessageManager,
        binds: Sequence[tuple[str, int]],
        config: DtlsServerConfig,
    ) -> DtlsServerTransport:
        loop = asyncio.get_running_loop()
        self = cls(mman, config, loop)
        try:
            for host, port in binds:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                udp, endpoint = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self),
                    local_addr=(host, port),
                    family=family,
                    reuse_port=reuse_port or None,
                )
                endpoint.connection_made(udp)  # asyncio calls it later; we need it now
                self._endpoints.append(endpoint)
        except BaseException:
            await self.shutdown()
            raise
        self._sweeper = loop.create_task(self._sweep(), name="DTLS session sweeper")
        return self

    @property
    def bound_addresses(self) -> list[tuple[str, int]]:
        return [
            tuple(e.transport.get_extra_info("sockname")[:2])
            for e in self._endpoints
            if e.transport is not None
        ]

    # -- datagram path ------------------------------------------------------------------

    def _datagram(self, endpoint: _Endpoint, data: bytes, peer: tuple) -> None:
        records = scan_records(data)
        if not records:
            return
        remote = self.sessions.get((endpoint, peer))
        first = records[0]
        # only an epoch-0 handshake record can start a ClientHello
        hello = parse_client_hello(first[0]) if first[1] == HANDSHAKE and first[3] == 0 else None
        if hello is not None and not (
            remote is not None
            and remote.association.state is State.HANDSHAKING
            and remote.client_random == hello.random
        ):
            self._new_hello(endpoint, peer, data, hello, remote)
            return
        if remote is None:
            return  # no association: stale or spoofed traffic
        remote.last_activity = time.monotonic()
        self._process(remote, remote.association.receive_datagram(data, records))

    def _new_hello(self, endpoint, peer, data, hello, old: ServerRemote | None) -> None:
        if not self.accepting:
            return  # draining: the client's retransmissions time out, and it tries again later
        if not self._cookies.verify(peer, hello.random, hello.cookie):
            cookie = self._cookies.make(peer, hello.random)
            endpoint.sendto(hello_verify_request(hello, cookie), peer)
            self.hello_verify_requests_sent += 1
            return
        # The peer proved it owns its address: a new handshake replaces the old
        # association from the same address and port (RFC 6347 s4.2.8).
        if old is not None:
            self._drop(old, ConnectionClosed("replaced by a new handshake from the same address"))
        if len(self.sessions) >= self.config.max_sessions:
            self.refused_handshakes += 1
            self.on_handshake(False, "other")
            log.warning(
                "session table full (%d); ignoring ClientHello from %s", len(self.sessions), peer
            )
            return
        try:
            association, events = DtlsAssociation.accept(
                self._ctx,
                data,
                hello.cookie,
                datagram_limit=self.config.datagram_limit,
                compact=self.config.compact_sessions,
            )
        except HandshakeFailed as exc:
            self.refused_handshakes += 1
            self.on_handshake(False, handshake_failure_reason(exc))
            log.info("ClientHello from %s refused: %s", peer, exc)
            return
        remote = ServerRemote(endpoint, peer, association, hello.random)
        self.sessions[(endpoint, peer)] = remote
        self._process(remote, events)

    def _process(self, remote: ServerRemote, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ApplicationData):
                self._deliver(remote, event.data)
            elif isinstance(event, HandshakeComplete):
                self.handshakes_completed += 1
                self.on_handshake(True, "")
                log.debug("handshake with %s complete (%s)", remote.peer, remote.association.cipher)
            elif isinstance(event, Closed):
                if event.error is not None and remote.association.tls_unique is None:
                    self.refused_handshakes += 1
                    self.on_handshake(False, handshake_failure_reason(event.error))
                    log.info("handshake with %s failed: %s", remote.peer, event.error)
                self._drop(remote, event.error or ConnectionClosed("peer sent close_notify"))
        remote.flush()
        self._schedule(remote)

    def _deliver(self, remote: ServerRemote, data: bytes) -> None:
        try:
            message = Message.decode(data, remote)
        except (coap_error.UnparsableMessage, UnicodeDecodeError) as exc:
            # aiocoap decodes string options (Uri-Path, Uri-Query, ...) as UTF-8 and lets
            # the UnicodeDecodeError out: catch it here, or the request goes unanswered.
            log.info("undecodable CoAP message from %s: %s", remote.peer, exc)
            answer = undecodable_answer(data, exc, self._mman._next_message_id)
            if answer is not None:
                answer.remote = remote
                self.send(answer)
            return
        self._mman.dispatch_message(message)

    def _schedule(self, remote: ServerRemote) -> None:
        remote.cancel_timer()
        delay = remote.association.timeout()
        if delay is not None and self.sessions.get((remote.endpoint, remote.peer)) is remote:
            remote.timer = self._loop.call_later(delay, self._on_timer, remote)

    def _on_timer(self, remote: ServerRemote) -> None:
        remote.timer = None
        try:
            self._process(remote, remote.association.handle_timeout())
        except Exception as exc:
            _log_failure("DTLS timer for %s", remote.peer, exc)

    def _drop(self, remote: ServerRemote, reason: DtlsError) -> None:
        key = (remote.endpoint, remote.peer)
        if self.sessions.get(key) is remote:
            del self.sessions[key]
        remote.cancel_timer()
        if remote.association.state is not State.CLOSED:
            remote.association.abort(reason)
        remote.flush()  # a pending fatal alert or close_notify
        if remote.association.tls_unique is not None and not self._closing:  # was established
            self._mman.dispatch_error(reason, remote)
        self._mman.forget_remote(remote)  # its requests can never be repeated now

    def _close(self, remote: ServerRemote, reason: DtlsError) -> None:
        """Orderly end: close_notify to the peer, then forget the session."""
        remote.association.close()
        self._drop(remote, reason)

    async def _sweep(self) -> None:
        cfg = self.config
        period = max(0.05, min(1.0, cfg.handshake_timeout / 4, cfg.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for remote in list(self.sessions.values()):
                state = remote.association.state
                if state is State.HANDSHAKING and now - remote.created > cfg.handshake_timeout:
                    self.on_handshake(False, "timeout")
                    self._drop(remote, HandshakeTimeout("handshake did not complete in time"))
                elif state is State.ESTABLISHED and now - remote.last_activity > cfg.idle_timeout:
                    self._close(remote, ConnectionClosed("idle timeout"))

    # -- MessageInterface ---------------------------------------------------------------

    def send(self, message: Message) -> None:
        remote = message.remote
        if not isinstance(remote, ServerRemote) or not remote.established:
            log.info("not sending to %r: no established association", remote)
            return
        remote.last_activity = time.monotonic()
        try:
            remote.association.send(message.encode())
        except DtlsError as exc:
            self._drop(remote, exc)
            return
        remote.flush()

    async def determine_remote(self, message: Message) -> None:
        return None  # a server answers; it does not dial out

    async def recognize_remote(self, remote: object) -> bool:
        return (
            isinstance(remote, ServerRemote)
            and self.sessions.get((remote.endpoint, remote.peer)) is remote
        )

    def stop_accepting(self) -> None:
        """Start no new handshake; established sessions go on until shutdown()."""
        self.accepting = False

    @property
    def handshakes_in_progress(self) -> int:
        """Handshakes started and not yet done: a request is likely to follow each."""
        return sum(r.association.state is State.HANDSHAKING for r in self.sessions.values())

    def set_trust_anchors(self, anchors: Sequence[x509.Certificate]) -> None:
        """Verify the client certificates of new handshakes against these (a reload). An
        established association keeps the context it was made with, so it is not dropped."""
        self.config = dataclasses.replace(self.config, trust_anchors=list(anchors))
        self._ctx = server_context(self.config, self._cookie_matches)

    async def shutdown(self) -> None:
        """close_notify to every session, then close the sockets."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for remote in list(self.sessions.values()):
            self._close(remote, ConnectionClosed("server shutting down"))
        for endpoint in self._endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._endpoints.clear()


def _log_failure(what: str, whom: object, exc: Exception) -> None:
    # A peer can trigger this once per datagram: one line, the traceback only when
    # debugging (RFC-conformant peers never get here; the traceback is for a fix).
    log.warning(
        what + ": %s: %s", whom, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG)
    )


def undecodable_answer(
    data: bytes, exc: Exception, next_message_id: Callable[[], int]
) -> Message | None:
    """What to send back for a CoAP message aiocoap could not decode, if anything.

    A request whose options are all framed correctly but one of whose string options is
    not UTF-8 gets 4.02 Bad Option: RFC 7252 s3.2 makes string options UTF-8, and s5.9.2.3
    defines 4.02 for a request with "unrecognized or malformed options". Any other
    undecodable Confirmable message is rejected with a Reset (s4.2); a Non-confirmable
    one is ignored (s4.3), as is anything that does not even carry a CoAP header.
    """
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    mtype, token_length, code = Type((data[0] >> 4) & 3), data[0] & 0x0F, Code(data[1])
    mid = int.from_bytes(data[2:4], "big")
    well_framed = isinstance(exc, UnicodeDecodeError) and token_length <= 8
    if well_framed and code.is_request() and mtype in (CON, NON):
        answer = Message(
            code=Code.BAD_OPTION,
            payload=b"an option value (Uri-Path, Uri-Query, ...) is not UTF-8",
            _token=data[4 : 4 + token_length],
        )
        answer.mtype, answer.mid = (ACK, mid) if mtype is CON else (NON, next_message_id())
        return answer
    if mtype is CON:
        return Message(code=Code.EMPTY, _mtype=RST, _mid=mid)
    return None


async def start_server(
    context: aiocoap.Context, binds: Sequence[tuple[str, int]], config: DtlsServerConfig
) -> DtlsServerTransport:
    """Attach a coaps:// listener to an aiocoap Context; its serversite gets the requests.

    The context may be any aiocoap.Context, e.g. `aiocoap.Context(serversite=site)` for a
    DTLS-only server. Context.shutdown() closes the listener and every session.
    """
    tman = TokenManager(context)
    mman = BatchedExpiryMessageManager(
        tman,
        limit=config.max_remembered_requests,
        per_remote_limit=config.max_remembered_requests_per_session,
    )
    transport = await DtlsServerTransport.create(mman, binds, config)
    mman.message_interface = transport
    tman.token_interface = mman
    context.request_interfaces.append(tman)
    return transport


async def create_server_context(
    site: object, binds: Sequence[tuple[str, int]], config: DtlsServerConfig
) -> tuple[aiocoap.Context, DtlsServerTransport]:
    """A Context serving `site` over certificate DTLS only."""
    context = aiocoap.Context(loop=asyncio.get_running_loop(), serversite=site)
    transport = await start_server(context, binds, config)
    return context, transport
