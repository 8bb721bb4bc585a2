"""der.read_header: the copy-free walk frames exactly as strictly as read_tlv."""

from __future__ import annotations

import pytest

from estcoap.codec import der

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "data",
    [
        der.sequence([der.integer(5), der.oid("1.2.840.113549.1.7.2")]),
        der.octet_string(b"x" * 200),  # a long-form length
        der.octet_string(b"y" * 70000),  # three length octets
        der.context(0, b""),
    ],
)
def test_header_agrees_with_read_tlv(data):
    tlv, end = der.read_tlv(data)
    tag, start, stop = der.read_header(data)
    assert tag == tlv.tag
    assert stop == end == len(data)
    assert data[start:stop] == tlv.content


def test_header_reads_at_an_offset():
    data = der.integer(1) + der.boolean(True)
    first = der.read_header(data)
    assert der.read_header(data, first[2]) == (der.BOOLEAN, first[2] + 2, len(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x30", "truncated"),
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x04\x81\x05hello", "minimally"),  # short value in a long-form length
        (b"\x04\x82\x00\x90" + b"z" * 0x90, "minimally"),  # leading zero length octet
        (b"\x04\x85\x00\x00\x00\x00\x01z", "too large"),
        (b"\x04\x05abc", "truncated"),
        (b"\x1f\x81\x01\x00", "high tag"),
    ],
)
def test_header_refuses_what_read_tlv_refuses(data, message):
    with pytest.raises(der.DerError, match=message):
        der.read_header(data)
    if message != "high tag":  # read_tlv reads high tag numbers
        with pytest.raises(der.DerError):
            der.read_tlv(data)
