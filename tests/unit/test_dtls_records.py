"""DTLS record framing: one scan per datagram gives every header field; packing keeps
whole records within the datagram budget (RFC 6347 s4.1)."""

from __future__ import annotations

import struct

from estcoap.dtls.records import (
    ALERT,
    APPLICATION_DATA,
    HANDSHAKE,
    pack_datagrams,
    pack_records,
    scan_records,
    split_records,
)


def record(ctype: int, epoch: int, seq: int, body: bytes, version: int = 0xFEFD) -> bytes:
    return (
        struct.pack("!BHHHIH", ctype, version, epoch, seq >> 32, seq & 0xFFFFFFFF, len(body)) + body
    )


def test_scan_gives_each_record_with_its_header_fields() -> None:
    first = record(HANDSHAKE, 0, 7, b"hello")
    second = record(APPLICATION_DATA, 1, (3 << 32) | 5, b"x" * 30)
    scanned = scan_records(first + second)
    assert scanned == [
        (first, HANDSHAKE, 0xFEFD, 0, 7),
        (second, APPLICATION_DATA, 0xFEFD, 1, (3 << 32) | 5),
    ]
    assert split_records(first + second) == [first, second]


def test_scan_stops_at_the_first_record_that_cannot_be_framed() -> None:
    good = record(ALERT, 1, 1, b"\x01\x00")
    truncated = record(APPLICATION_DATA, 1, 2, b"y" * 20)[:-1]
    unknown_type = record(99, 1, 3, b"z")
    bad_version = record(APPLICATION_DATA, 1, 4, b"z", version=0x0303)
    assert split_records(good + truncated) == [good]
    assert split_records(good + unknown_type + good) == [good]
    assert split_records(good + bad_version) == [good]
    assert scan_records(b"\x17\xfe\xfd") == []  # shorter than a header
    assert split_records(good + b"\x00\x01") == [good]  # trailing bytes are ignored


def test_pack_keeps_whole_records_within_the_limit() -> None:
    records = [record(HANDSHAKE, 0, n, b"a" * 100) for n in range(5)]  # 113 bytes each
    datagrams = pack_records(records, 250)
    assert [len(d) for d in datagrams] == [226, 226, 113]
    assert b"".join(datagrams) == b"".join(records)
    assert all(split_records(d) for d in datagrams)
    assert pack_datagrams(b"".join(records), 250) == datagrams


def test_a_record_over_the_limit_travels_alone() -> None:
    small, big = record(HANDSHAKE, 0, 0, b"s"), record(HANDSHAKE, 0, 1, b"b" * 400)
    assert pack_records([small, big, small], 100) == [small, big, small]
    assert pack_records([big], 100) == [big]
    assert pack_records([], 100) == []


def handshake_message(msg_type: int, seq: int, body: bytes) -> bytes:
    length = len(body).to_bytes(3, "big")
    return bytes([msg_type]) + length + seq.to_bytes(2, "big") + b"\0\0\0" + length + body


def test_plaintext_handshake_records_of_a_flight_share_one_record() -> None:
    messages = [handshake_message(t, n, bytes([t]) * 40) for n, t in enumerate((2, 11, 12, 14))]
    flight = [record(HANDSHAKE, 0, 10 + n, m) for n, m in enumerate(messages)]
    ccs = record(20, 0, 14, b"\x01")
    finished = record(HANDSHAKE, 1, 0, b"f" * 40)  # encrypted: never touched
    (datagram,) = pack_records([*flight, ccs, finished], 1232, coalesce_handshake=True)
    scanned = scan_records(datagram)
    assert [(r[1], r[3], r[4]) for r in scanned] == [
        (HANDSHAKE, 0, 10),
        (20, 0, 14),
        (HANDSHAKE, 1, 0),
    ]
    assert scanned[0][0][13:] == b"".join(messages)  # every message, in order
    assert len(datagram) == sum(map(len, [*flight, ccs, finished])) - 3 * 13
    # without the option, or across versions, records stay apart
    assert pack_records(flight, 1232) == [b"".join(flight)]
    hello = record(HANDSHAKE, 0, 0, messages[0], version=0xFEFF)
    assert (
        len(scan_records(pack_records([hello, flight[1]], 1232, coalesce_handshake=True)[0])) == 2
    )


def test_coalescing_respects_the_datagram_limit() -> None:
    flight = [record(HANDSHAKE, 0, n, handshake_message(11, n, b"c" * 100)) for n in range(4)]
    datagrams = pack_records(flight, 260, coalesce_handshake=True)  # 125 bytes each alone
    assert all(len(d) <= 260 for d in datagrams)
    assert [len(scan_records(d)) for d in datagrams] == [1, 1]
    assert b"".join(r[0][13:] for d in datagrams for r in scan_records(d)) == b"".join(
        r[13:] for r in flight
    )
