"""Raw CoAP over a real DTLS session, for attack and fuzz tests of the coaps front.

`encode` writes any CoAP message, including ones aiocoap refuses to build (option values
that are not UTF-8, unknown critical options, repeated options, a bad token length);
`RawCoapSession` sends such datagrams from an enrolled device's DTLS association and
matches answers by Message ID or token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiocoap
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.codec.pkcs10 import build_csr
from estcoap.dtls import DtlsClientConfig
from tests.integration.coaps_fixtures import Device, RunningCoaps
from tests.integration.dtls_fixtures import RawClient

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT = 1, 2, 3
URI_PATH, CONTENT_FORMAT, URI_QUERY, ACCEPT, BLOCK2, BLOCK1, SIZE1 = 11, 12, 15, 17, 23, 27, 60
EST = (".well-known", "est")
RETRANSMIT_AFTER = 2.0  # RFC 7252 ACK_TIMEOUT


def _field(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, (value - 269).to_bytes(2, "big")


def encode(
    code: int,
    *,
    mtype: int = CON,
    mid: int = 1,
    token: bytes = b"",
    options: Sequence[tuple[int, bytes]] = (),
    payload: bytes = b"",
    token_length: int | None = None,
) -> bytes:
    """A CoAP message as RFC 7252 s3 lays it out (options sorted by number, stably)."""
    tkl = len(token) if token_length is None else token_length
    out = bytearray([0x40 | (mtype << 4) | tkl, code]) + mid.to_bytes(2, "big") + token
    previous = 0
    for number, value in sorted(options, key=lambda option: option[0]):
        delta, delta_ext = _field(number - previous)
        length, length_ext = _field(len(value))
        out += bytes([delta << 4 | length]) + delta_ext + length_ext + value
        previous = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def block(number: int, more: bool, szx: int) -> bytes:
    return uint(number << 4 | int(more) << 3 | szx)


def path(*segments: str | bytes) -> list[tuple[int, bytes]]:
    return [(URI_PATH, s.encode() if isinstance(s, str) else s) for s in segments]


def device_csr(device: Device) -> bytes:
    """A CSR whose subject is the device's IDevID identity (its serialNumber)."""
    serial = device.certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial))])
    return build_csr(ec.generate_private_key(ec.SECP256R1()), name)


class RawCoapSession:
    """One device's DTLS association to the coaps front, driven datagram by datagram."""

    def __init__(self, run: RunningCoaps, device: Device) -> None:
        config = DtlsClientConfig(
            trust_anchors=[run.ca.ca_certificate],
            certificate_chain=[device.certificate],
            private_key=device.key,  # type: ignore[arg-type]
        )
        self.raw = RawClient(config, ("127.0.0.1", run.server.port))
        self._next_mid = 0x100

    async def __aenter__(self) -> RawCoapSession:
        await self.raw.open()
        await self.raw.handshake(timeout=15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.raw.close()

    def mid(self) -> int:
        self._next_mid = (self._next_mid + 1) & 0xFFFF
        return self._next_mid

    def send(self, message: bytes) -> None:
        self.raw.association.send(message)
        self.raw.flush()

    def drain(self) -> None:
        while not self.raw.inbox.empty():
            self.raw.inbox.get_nowait()

    async def exchange(self, message: bytes, timeout: float = 5.0) -> aiocoap.Message | None:
        """Send a CON or NON message; the answer matching its MID (ACK, RST) or token
        (a NON or separate response), or None if none came within `timeout`."""
        self.drain()
        mtype, tkl, mid = (message[0] >> 4) & 3, message[0] & 0x0F, message[2:4]
        token = message[4 : 4 + tkl]
        self.send(message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        resend_at = loop.time() + RETRANSMIT_AFTER
        while True:
            now = loop.time()
            if now >= deadline:
                return None
            if mtype == CON and now >= resend_at:
                # As a CoAP client does (RFC 7252 s4.2): a datagram lost in a burst on a
                # busy loopback is no finding.
                self.send(message)
                resend_at = now + RETRANSMIT_AFTER
            try:
                wait = min(deadline, resend_at) - now
                data = await asyncio.wait_for(self.raw.inbox.get(), wait)
            except TimeoutError:
                continue
            answer = aiocoap.Message.decode(data)
            if answer.mtype == aiocoap.CON:  # a separate response: acknowledge it
                self.send(encode(0, mtype=ACK, mid=answer.mid))
            same_mid = answer.mid == int.from_bytes(mid, "big") and answer.mtype in (
                aiocoap.ACK,
                aiocoap.RST,
            )
            if answer.mtype == aiocoap.RST and same_mid:
                return answer
            if answer.code == aiocoap.EMPTY:
                continue  # an empty ACK: the response follows separately
            if answer.token == token and (same_mid or answer.mtype != aiocoap.ACK or mtype == NON):
                return answer

    async def request(
        self,
        code: int,
        options: Sequence[tuple[int, bytes]],
        payload: bytes = b"",
        *,
        token: bytes = b"tk",
        timeout: float = 5.0,
    ) -> aiocoap.Message:
        """A confirmable request; fails the test if it is not answered."""
        message = encode(code, mid=self.mid(), token=token, options=options, payload=payload)
        answer = await self.exchange(message, timeout)
        assert answer is not None, f"no answer to {message!r}"
        return answer
