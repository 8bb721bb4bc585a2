"""A sans-IO DTLS 1.2 association on pyOpenSSL memory BIOs: datagrams in, datagrams out, timers.

The owner feeds every received datagram to `receive_datagram()`, sends what
`datagrams_to_send()` returns, calls `handle_timeout()` when `timeout()` seconds have
passed, and reacts to the returned events. Nothing here touches a socket or a loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

from .errors import ConnectionClosed, DtlsError, HandshakeFailed, PeerNameMismatch
from .names import certificate_names_host, is_ip_literal
from .record_layer import AeadRecordLayer, supports
from .records import ALERT, APPLICATION_DATA, Record, pack_records, scan_records

_RECORD_OVERHEAD = 13 + 8 + 16  # header + explicit nonce + largest tag (GCM/CCM)


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    pass


@dataclass(frozen=True, slots=True)
class ApplicationData:
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The association is over; error is None after an orderly close_notify from the peer."""

    error: DtlsError | None


Event = HandshakeComplete | ApplicationData | Closed


class ExpectedServerName:
    """App data of a client Connection: the name to find in the server's certificate."""

    __slots__ = ("host", "mismatch")

    def __init__(self, host: str) -> None:
        self.host = host
        self.mismatch = False


def check_server_name(conn: SSL.Connection, cert: object) -> bool:
    """pyOpenSSL verify-callback helper for the leaf: does it name the host we dialled?"""
    expected = conn.get_app_data()
    if not isinstance(expected, ExpectedServerName):
        return True
    if certificate_names_host(cert.to_cryptography(), expected.host):  # type: ignore[attr-defined]
        return True
    expected.mismatch = True
    return False


def _reason(exc: SSL.Error) -> str:
    if exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        return "; ".join(str(item[-1]) for item in exc.args[0])
    return str(exc) or type(exc).__name__


class DtlsAssociation:
    __slots__ = (
        "_conn",
        "_is_server",
        "_limit",
        "_pending",
        "state",
        "error",
        "peer_certificates",
        "tls_unique",
        "cipher",
        "_compact",
        "_records",
        "_write_seq_seen",
        "_read_records_seen",
    )

    def __init__(
        self, conn: SSL.Connection, *, is_server: bool, datagram_limit: int, compact: bool = False
    ) -> None:
        self._conn: SSL.Connection | None = conn
        # compact: once the peer's first application record confirms the handshake, keep
        # only the epoch-1 keys (AeadRecordLayer) and let the OpenSSL connection go.
        self._compact = compact
        self._records: AeadRecordLayer | None = None
        self._write_seq_seen = -1  # highest epoch-1 sequence number OpenSSL sent
        self._read_records_seen: list[Record] = []  # epoch-1 records of the latest datagram
        self._is_server = is_server
        self._limit = datagram_limit
        self._pending: list[bytes] = []  # whole records, in order
        self.state = State.HANDSHAKING
        self.error: DtlsError | None = None
        self.peer_certificates: tuple[x509.Certificate, ...] = ()
        self.tls_unique: bytes | None = None
        self.cipher: str | None = None
        conn.set_ciphertext_mtu(datagram_limit)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def connect(
        cls, ctx: SSL.Context, server_name: str, *, datagram_limit: int, compact: bool = False
    ) -> DtlsAssociation:
        """A client association; its ClientHello is ready in datagrams_to_send()."""
        conn = SSL.Connection(ctx, None)
        conn.set_connect_state()
        conn.set_app_data(ExpectedServerName(server_name))
        if not is_ip_literal(server_name):
            conn.set_tlsext_host_name(server_name.encode("idna"))
        assoc = cls(conn, is_server=False, datagram_limit=datagram_limit, compact=compact)
        assoc._advance()
        return assoc

    @classmethod
    def accept(
        cls,
        ctx: SSL.Context,
        client_hello: bytes,
        cookie: bytes,
        *,
        datagram_limit: int,
        compact: bool = False,
    ) -> tuple[DtlsAssociation, list[Event]]:
        """A server association from a ClientHello datagram whose cookie was already checked.

        `ctx` must come from contexts.server_context(); its cookie callbacks compare against
        the app data set here. Raises HandshakeFailed if OpenSSL does not accept the hello.
        """
        conn = SSL.Connection(ctx, None)
        conn.set_accept_state()
        conn.set_app_data(cookie)
        assoc = cls(conn, is_server=True, datagram_limit=datagram_limit, compact=compact)
        conn.bio_write(b"".join([r[0] for r in scan_records(client_hello)]))
        try:
            conn.DTLSv1_listen()
        except SSL.WantReadError:
            raise HandshakeFailed("ClientHello cookie not accepted") from None
        except SSL.Error as exc:
            raise HandshakeFailed(_reason(exc)) from None
        return assoc, assoc._advance()

    # -- the sans-IO interface ----------------------------------------------------------

    def receive_datagram(self, datagram: bytes, records: list[Record] | None = None) -> list[Event]:
        """Feed one received datagram; `records` is scan_records(datagram) when the caller
        has it already (the server scans each datagram once to route it)."""
        if records is None:
            records = scan_records(datagram)
        if self._records is not None:
            return self._receive_compact(records)
        if self._conn is None or not records:
            return []
        if self.state is State.ESTABLISHED:
            # After the handshake only epoch-1 records matter (the peer's retransmitted
            # Finished is epoch 1). Unauthenticated epoch-0 junk must not reach OpenSSL:
            # a malformed handshake message would make it kill the session.
            records = [r for r in records if r[3] != 0]
            if not records:
                return []
        if self._compact:
            # Only this datagram counts: if it carries the application record that
            # triggers the release, its authenticated records start the replay window
            # (the release checks each one: a forged record must not move the window).
            self._read_records_seen = [r for r in records if r[3] == 1]
        self._conn.bio_write(b"".join([r[0] for r in records]))
        return self._advance()

    def send(self, data: bytes) -> None:
        """Protect application data; raises ConnectionClosed unless established."""
        if self.state is not State.ESTABLISHED:
            raise self.error or ConnectionClosed("DTLS association is not established")
        if self._records is not None:
            self._pending.append(self._records.protect(APPLICATION_DATA, data))
            return
        assert self._conn is not None
        try:
            self._conn.send(data)
        except SSL.Error as exc:
            self._fail(ConnectionClosed(_reason(exc)))
            raise self.error from None  # type: ignore[misc]

    def datagrams_to_send(self) -> list[bytes]:
        if self._conn is not None:
            self._pending += self._drain()
        if not self._pending:
            return []
        out = pack_records(self._pending, self._limit, coalesce_handshake=True)
        self._pending.clear()
        return out

    def timeout(self) -> float | None:
        """Seconds until handle_timeout() is due (retransmission), or None."""
        if self._conn is None or self.state is not State.HANDSHAKING:
            return None
        return self._conn.DTLSv1_get_timeout()

    def handle_timeout(self) -> list[Event]:
        if self._conn is None or self.state is not State.HANDSHAKING:
            return []
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(HandshakeFailed(_reason(exc)))
            return [Closed(self.error)]
        return []

    def close(self) -> None:
        """Send close_notify (if established) and release the OpenSSL state."""
        if self._records is not None and self.state is State.ESTABLISHED:
            self._pending.append(self._records.protect(ALERT, b"\x01\x00"))  # close_notify
        elif self._conn is not None and self.state is State.ESTABLISHED:
            try:
                self._conn.shutdown()
            except SSL.Error:
                pass
            self._pending += self._drain()
        self.state = State.CLOSED
        self._conn = None
        self._records = None

    def abort(self, error: DtlsError) -> None:
        """End without a word to the peer (timeouts, replacement)."""
        self.state = State.CLOSED
        self.error = error
        self._conn = None
        self._records = None

    @property
    def openssl_released(self) -> bool:
        """True once records are protected here and the OpenSSL connection is gone."""
        return self._records is not None

    @property
    def max_plaintext(self) -> int:
        return self._limit - _RECORD_OVERHEAD

    # -- internals ----------------------------------------------------------------------

    def _drain(self) -> list[bytes]:
        """The records OpenSSL wrote since the last call."""
        assert self._conn is not None
        chunks = []
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < 65536:  # a memory BIO hands out all it holds
                break
        if not chunks:
            return []
        records = scan_records(b"".join(chunks))
        if self._compact:
            for record in records:
                if record[3] == 1:
                    self._write_seq_seen = max(self._write_seq_seen, record[4])
        return [record[0] for record in records]

    def _fail(self, error: DtlsError) -> None:
        if self._conn is not None:
            self._pending += self._drain()  # the fatal alert OpenSSL wrote, if any
        self.abort(error)

    def _advance(self) -> list[Event]:
        conn = self._conn
        assert conn is not None
        events: list[Event] = []
        if self.state is State.HANDSHAKING:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                return events
            except SSL.Error as exc:
                expected = conn.get_app_data()
                if isinstance(expected, ExpectedServerName) and expected.mismatch:
                    error: DtlsError = PeerNameMismatch(
                        f"server certificate does not name {expected.host}"
                    )
                else:
                    error = HandshakeFailed(_reason(exc))
                self._fail(error)
                return [Closed(error)]
            self._established()
            events.append(HandshakeComplete())
        while self.state is State.ESTABLISHED:
            try:
                data = conn.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._pending += self._drain()
                self.state = State.CLOSED
                self._conn = None
                events.append(Closed(None))
                break
            except SSL.Error as exc:
                self._fail(ConnectionClosed(_reason(exc)))
                events.append(Closed(self.error))
                break
            events.append(ApplicationData(data))
        if (
            self._compact
            and self.state is State.ESTABLISHED
            and any(isinstance(event, ApplicationData) for event in events)
        ):
            self._release_openssl()
        return events

    def _release_openssl(self) -> None:
        """The peer sent application data, so it has our last flight: from here on the
        record layer needs only the keys and sequence numbers."""
        conn = self._conn
        if conn is None or not supports(self.cipher):
            return
        secrets = (conn.master_key(), conn.client_random(), conn.server_random())
        if None in secrets:  # no negotiated session after all: keep OpenSSL
            return
        master, client_random, server_random = secrets
        self._pending += self._drain()
        self._records = AeadRecordLayer(
            self.cipher,  # type: ignore[arg-type]
            master,  # type: ignore[arg-type]
            client_random,  # type: ignore[arg-type]
            server_random,  # type: ignore[arg-type]
            is_server=self._is_server,
            epoch=1,
            next_write_seq=self._write_seq_seen + 1,
            highest_read_seq=-1,
        )
        # OpenSSL has read this datagram's records already; those that authenticate now
        # mark the window (everything older counts as seen), forged ones leave it alone.
        for record in self._read_records_seen:
            self._records.unprotect_scanned(record)
        self._read_records_seen = []
        self._conn = None

    def _receive_compact(self, records: list[Record]) -> list[Event]:
        assert self._records is not None
        events: list[Event] = []
        for record in records:
            if record[1] not in (APPLICATION_DATA, ALERT):
                continue  # e.g. a late retransmission of the peer's Finished flight
            opened = self._records.unprotect_scanned(record)
            if opened is None:
                continue
            content_type, plaintext = opened
            if content_type == APPLICATION_DATA:
                events.append(ApplicationData(plaintext))
                continue
            if len(plaintext) < 2:
                continue
            level, description = plaintext[0], plaintext[1]
            if description == 0:  # close_notify
                self.close()  # answer with our own close_notify
                events.append(Closed(None))
                break
            if level == 2:
                self.abort(ConnectionClosed(f"peer sent fatal alert {description}"))
                events.append(Closed(self.error))
                break
        return events

    def _established(self) -> None:
        conn = self._conn
        assert conn is not None
        self.state = State.ESTABLISHED
        chain = conn.get_verified_chain(as_cryptography=True)
        self.peer_certificates = tuple(chain or ())
        # RFC 5929 s3.1: the first Finished of the (always full) handshake is the client's.
        self.tls_unique = conn.get_peer_finished() if self._is_server else conn.get_finished()
        self.cipher = conn.get_cipher_name()
        conn.set_app_data(None)
