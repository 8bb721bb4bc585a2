"""A tiny strict DER reader and writer for the few structures cryptography does not expose.

Only what the EST codecs need: TLV framing (definite, minimal lengths), OBJECT
IDENTIFIER, INTEGER, BOOLEAN, OCTET/BIT STRING, SEQUENCE and SET OF (sorted as
DER requires). Everything else is carried as raw, complete TLV bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .errors import CodecError

# Universal tag numbers used here.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
SEQUENCE = 0x30  # identifier octet, with the constructed bit
SET = 0x31
SEQUENCE_NUMBER = 16
SET_NUMBER = 17

CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2

_MAX_DEPTH = 32  # nesting deeper than this is an attack, not a certificate


class DerError(CodecError):
    """Bytes that are not the DER the caller expected."""


class Tlv(NamedTuple):
    """One decoded element. `raw` is the complete TLV, `content` its value octets.

    A NamedTuple, not a frozen dataclass: codecs build one per element read, and a
    frozen dataclass's __init__ costs several times as much (30 -> 14 us per PKCS#7).
    """

    tag_class: int  # 0 universal, 1 application, 2 context, 3 private
    constructed: bool
    number: int
    content: bytes
    raw: bytes

    @property
    def tag(self) -> int:
        """The identifier octet for low tag numbers (e.g. 0x30 SEQUENCE, 0xA0 [0])."""
        if self.number >= 31:
            return -1
        return (self.tag_class << 6) | (0x20 if self.constructed else 0) | self.number

    def is_universal(self, number: int) -> bool:
        return self.tag_class == CLASS_UNIVERSAL and self.number == number

    def is_context(self, number: int) -> bool:
        return self.tag_class == CLASS_CONTEXT and self.number == number

    def children(self) -> list[Tlv]:
        """The elements inside a constructed value."""
        if not self.constructed:
            raise DerError("expected a constructed value")
        return read_all(self.content)


def read_tlv(data: bytes, offset: int = 0) -> tuple[Tlv, int]:
    """Read one TLV at offset; return it and the offset just after it."""
    end = len(data)
    if offset >= end:
        raise DerError("truncated: expected a tag")
    first = data[offset]
    tag_class = first >> 6
    constructed = bool(first & 0x20)
    number = first & 0x1F
    pos = offset + 1
    if number == 0x1F:  # high tag number form
        number = 0
        while True:
            if pos >= end:
                raise DerError("truncated tag number")
            byte = data[pos]
            pos += 1
            if number == 0 and byte == 0x80:
                raise DerError("tag number is not minimally encoded")
            number = (number << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
            if number > 0xFFFFFF:
                raise DerError("tag number too large")
    pos, stop = _value_span(data, pos, end)
    return Tlv(tag_class, constructed, number, data[pos:stop], data[offset:stop]), stop


def _value_span(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value start, value end) from the length octets at pos: definite, minimal DER."""
    if pos >= end:
        raise DerError("truncated: expected a length")
    length = data[pos]
    pos += 1
    if length == 0x80:
        raise DerError("indefinite length is not DER")
    if length > 0x80:
        count = length & 0x7F
        if count > 4:
            raise DerError("length field too large")
        if pos + count > end:
            raise DerError("truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise DerError("length is not minimally encoded")
        pos += count
    if pos + length > end:
        raise DerError(f"truncated: value needs {length} bytes, {end - pos} left")
    return pos, pos + length


def read_header(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """(identifier octet, value start, value end) of the element at offset, copying nothing.

    For walks that only step through structures: the same strict DER framing as read_tlv,
    for tag numbers below 31 (a high tag number is a DerError here).
    """
    end = len(data)
    if offset >= end:
        raise DerError("truncated: expected a tag")
    identifier = data[offset]
    if identifier & 0x1F == 0x1F:
        raise DerError("unexpected high tag number")
    start, stop = _value_span(data, offset + 1, end)
    return identifier, start, stop


def read_all(data: bytes) -> list[Tlv]:
    """All consecutive TLVs filling data exactly."""
    items: list[Tlv] = []
    offset = 0
    while offset < len(data):
        item, offset = read_tlv(data, offset)
        items.append(item)
    return items


def read_one(data: bytes) -> Tlv:
    """Exactly one TLV spanning all of data (no trailing bytes)."""
    if not data:
        raise DerError("empty input")
    item, end = read_tlv(data, 0)
    if end != len(data):
        raise DerError(f"{len(data) - end} trailing bytes after the DER value")
    return item


def expect(item: Tlv, number: int, what: str) -> Tlv:
    """Check a universal tag; say what was wanted when it is not there."""
    if not item.is_universal(number):
        raise DerError(f"{what}: unexpected tag {item.raw[:1].hex()}")
    if number in (SEQUENCE_NUMBER, SET_NUMBER) and not item.constructed:
        raise DerError(f"{what}: must be constructed")
    return item


def is_sequence(item: Tlv) -> bool:
    return item.is_universal(SEQUENCE_NUMBER) and item.constructed


def is_set(item: Tlv) -> bool:
    return item.is_universal(SET_NUMBER) and item.constructed


# -- primitive values ---------------------------------------------------------


def decode_oid(item: Tlv) -> str:
    """Dotted string of an OBJECT IDENTIFIER TLV."""
    if not item.is_universal(OBJECT_IDENTIFIER) or item.constructed:
        raise DerError("expected an OBJECT IDENTIFIER")
    content = item.content
    if not content:
        raise DerError("empty OBJECT IDENTIFIER")
    if content[-1] & 0x80:
        raise DerError("truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    start = True
    for byte in content:
        if start and byte == 0x80:
            raise DerError("OBJECT IDENTIFIER arc is not minimally encoded")
        value = (value << 7) | (byte & 0x7F)
        start = not byte & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in head + arcs[1:])


def decode_integer(item: Tlv) -> int:
    if not item.is_universal(INTEGER) or item.constructed:
        raise DerError("expected an INTEGER")
    content = item.content
    if not content:
        raise DerError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and not content[1] & 0x80) or (content[0] == 0xFF and content[1] & 0x80)
    ):
        raise DerError("INTEGER is not minimally encoded")
    return int.from_bytes(content, "big", signed=True)


def decode_boolean(item: Tlv) -> bool:
    if not item.is_universal(BOOLEAN) or item.constructed or len(item.content) != 1:
        raise DerError("expected a BOOLEAN")
    if item.content not in (b"\x00", b"\xff"):
        raise DerError("BOOLEAN must be 0x00 or 0xFF in DER")
    return item.content == b"\xff"


# -- writer -------------------------------------------------------------------


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """A TLV with a one-byte identifier (tag numbers below 31)."""
    return bytes([tag]) + encode_length(len(content)) + content


def sequence(items: Iterable[bytes]) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(items: Iterable[bytes]) -> bytes:
    """SET OF with its elements in DER order (sorted by their encodings)."""
    return tlv(SET, b"".join(sorted(items)))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    """An IMPLICIT context tag [number] around content octets."""
    return tlv(0x80 | (0x20 if constructed else 0) | number, content)


def oid(dotted: str) -> bytes:
    """OBJECT IDENTIFIER TLV from its dotted form."""
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError as exc:
        raise DerError(f"not a dotted OID: {dotted!r}") from exc
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise DerError(f"not a valid OID: {dotted!r}")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(body))


def integer(value: int) -> bytes:
    magnitude = value if value >= 0 else ~value  # the bits besides the sign bit
    length = magnitude.bit_length() // 8 + 1
    return tlv(INTEGER, value.to_bytes(length, "big", signed=True))


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def bit_string(value: bytes, unused_bits: int = 0) -> bytes:
    return tlv(BIT_STRING, bytes([unused_bits]) + value)
