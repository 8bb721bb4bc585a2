"""A device's side of DTLS for the benches: estcoap's sans-IO association on a raw UDP
socket, so that one client process holds thousands of sessions without a transport each.

handshake opens the socket and runs the handshake (retransmitting on the association's
timer), flush sends what the association has queued, close ends a session and its socket.
"""

from __future__ import annotations

import asyncio
import socket

from estcoap.dtls.association import DtlsAssociation, State

DATAGRAM_LIMIT = 1232  # IPv6 minimum MTU minus IPv6 + UDP headers, as our transports use


def flush(sock: socket.socket, assoc: DtlsAssociation) -> None:
    for datagram in assoc.datagrams_to_send():
        sock.send(datagram)


async def handshake(
    ctx: object, server: tuple[str, int], local_ip: str = "127.0.0.1"
) -> tuple[socket.socket, DtlsAssociation]:
    """A new socket from local_ip to server and a handshake on it, in whatever state it
    ended (ESTABLISHED, or failed: the caller looks)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((local_ip, 0))
        sock.connect(server)
        sock.setblocking(False)
        assoc = DtlsAssociation.connect(ctx, server[0], datagram_limit=DATAGRAM_LIMIT)  # type: ignore[arg-type]
        flush(sock, assoc)
        while assoc.state is State.HANDSHAKING:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), assoc.timeout() or 1.0)
            except TimeoutError:
                assoc.handle_timeout()
            else:
                assoc.receive_datagram(data)
            flush(sock, assoc)
    except BaseException:
        sock.close()
        raise
    return sock, assoc


def close(sock: socket.socket, assoc: DtlsAssociation) -> None:
    """close_notify when the session is up, then the socket."""
    if assoc.state is State.ESTABLISHED:
        assoc.close()
        flush(sock, assoc)
    sock.close()
