"""DTLS 1.2 record framing (RFC 6347 s4.1): split, validate and pack records. No crypto, no I/O.

OpenSSL writes a whole flight into its memory BIO as back-to-back records; a datagram
we feed it must hold only whole records, or the leftover bytes would be glued to the
next datagram. These helpers do both directions of that framing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_LEN = 13
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
_CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA})
# DTLS 1.0 (0xFEFF) appears on the first ClientHello and on HelloVerifyRequest.
_VERSIONS = frozenset({0xFEFD, 0xFEFF})

CLIENT_HELLO = 1
HELLO_VERIFY_REQUEST = 3
_HANDSHAKE_HEADER_LEN = 12


@dataclass(frozen=True, slots=True)
class RecordHeader:
    content_type: int
    version: int
    epoch: int
    sequence: int  # 48-bit record sequence number
    length: int

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> RecordHeader:
        ctype, version, epoch, seq_hi, seq_lo, length = struct.unpack_from("!BHHHIH", data, offset)
        return cls(ctype, version, epoch, (seq_hi << 32) | seq_lo, length)


# One parsed record: (bytes, content type, version, epoch, 48-bit sequence number).
Record = tuple[bytes, int, int, int, int]
_HEADER = struct.Struct("!BHHHIH")


def scan_records(datagram: bytes) -> list[Record]:
    """The well-formed records of a datagram with their header fields, in order; stops at
    the first malformed one.

    A record whose header has an unknown type or version, or whose length runs past the
    datagram's end, ends the parse: what follows cannot be framed reliably (RFC 6347
    s4.1.2.7 lets a receiver discard it silently). Each datagram is scanned once and the
    fields travel with the record, so no later step parses the header again.
    """
    records: list[Record] = []
    size = len(datagram)
    offset = 0
    unpack = _HEADER.unpack_from
    while size - offset >= HEADER_LEN:
        ctype, version, epoch, seq_hi, seq_lo, length = unpack(datagram, offset)
        end = offset + HEADER_LEN + length
        if ctype not in _CONTENT_TYPES or version not in _VERSIONS or end > size:
            break
        # the usual datagram is one record: keep the object instead of copying it
        record = datagram if offset == 0 and end == size else datagram[offset:end]
        records.append((record, ctype, version, epoch, (seq_hi << 32) | seq_lo))
        offset = end
    return records


def split_records(datagram: bytes) -> list[bytes]:
    """The well-formed records of a datagram, in order (see scan_records)."""
    return [record[0] for record in scan_records(datagram)]


def _joinable(first: bytes, second: bytes) -> bool:
    """Both plaintext (epoch 0) handshake records of the same version."""
    return (
        first[0] == HANDSHAKE == second[0]
        and first[3:5] == b"\x00\x00" == second[3:5]
        and first[1:3] == second[1:3]
    )


def _join(first: bytes, second: bytes) -> bytes:
    length = len(first) + len(second) - 2 * HEADER_LEN
    return first[:11] + length.to_bytes(2, "big") + first[HEADER_LEN:] + second[HEADER_LEN:]


def pack_records(
    records: list[bytes], limit: int, *, coalesce_handshake: bool = False
) -> list[bytes]:
    """Pack whole records, in order, into datagrams of <= limit bytes.

    A single record larger than the limit travels alone (the IP layer fragments it).
    coalesce_handshake: OpenSSL gives every handshake message its own record; plaintext
    ones (epoch 0) that share a datagram are joined into one record, 13 bytes saved per
    message (RFC 6347 s4.2.3 allows several messages of a flight in one record; the
    skipped record sequence numbers are fine, s4.1). Pass only records of one flight.
    """
    if len(records) == 1:
        return records[:]
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for record in records:
        if (
            coalesce_handshake
            and current
            and size + len(record) - HEADER_LEN <= limit
            and _joinable(current[-1], record)
        ):
            current[-1] = _join(current[-1], record)
            size += len(record) - HEADER_LEN
            continue
        if current and size + len(record) > limit:
            datagrams.append(b"".join(current))
            current, size = [], 0
        current.append(record)
        size += len(record)
    if current:
        datagrams.append(b"".join(current))
    return datagrams


def pack_datagrams(stream: bytes, limit: int) -> list[bytes]:
    """Cut OpenSSL's output stream into records and pack them into datagrams of <= limit bytes."""
    return pack_records(split_records(stream), limit)


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the stateless cookie exchange needs from an epoch-0 ClientHello."""

    record_sequence: int
    message_sequence: int
    random: bytes
    cookie: bytes


def parse_client_hello(record: bytes) -> ClientHello | None:
    """Parse a record holding the start of a ClientHello; None if it is not one."""
    if len(record) < HEADER_LEN + _HANDSHAKE_HEADER_LEN + 2 + 32 + 2:
        return None
    header = RecordHeader.parse(record)
    if header.content_type != HANDSHAKE or header.epoch != 0:
        return None
    body = record[HEADER_LEN:]
    msg_type = body[0]
    message_seq, frag_offset_hi, frag_offset_lo = struct.unpack_from("!HBH", body, 4)
    if msg_type != CLIENT_HELLO or (frag_offset_hi or frag_offset_lo):
        return None
    pos = _HANDSHAKE_HEADER_LEN + 2  # skip client_version
    random = body[pos : pos + 32]
    pos += 32
    session_id_len = body[pos]
    pos += 1 + session_id_len
    if pos >= len(body):
        return None
    cookie_len = body[pos]
    cookie = body[pos + 1 : pos + 1 + cookie_len]
    if len(cookie) != cookie_len:
        return None
    return ClientHello(header.sequence, message_seq, bytes(random), bytes(cookie))


def hello_verify_request(hello: ClientHello, cookie: bytes) -> bytes:
    """The HelloVerifyRequest record answering `hello` (RFC 6347 s4.2.1).

    It reuses the ClientHello's record and message sequence numbers, so the server keeps
    no state for it, and says DTLS 1.0 as the RFC recommends for this message.
    """
    body = struct.pack("!HB", 0xFEFF, len(cookie)) + cookie
    handshake = (
        struct.pack("!B", HELLO_VERIFY_REQUEST)
        + len(body).to_bytes(3, "big")
        + struct.pack("!H", hello.message_sequence)
        + (0).to_bytes(3, "big")
        + len(body).to_bytes(3, "big")
        + body
    )
    seq = hello.record_sequence
    return (
        struct.pack("!BHHHIH", HANDSHAKE, 0xFEFF, 0, seq >> 32, seq & 0xFFFFFFFF, len(handshake))
        + handshake
    )
