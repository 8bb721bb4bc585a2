"""base64 bodies as deployed servers send them: lenient where RFC 8951 lets a receiver be
(whitespace anywhere, a C string's NUL terminator at the end), strict about the rest."""

from __future__ import annotations

import base64

import pytest

from estcoap.codec import b64
from estcoap.codec.errors import Base64Error

PAYLOAD = bytes(range(256)) * 3
TEXT = b64.encode(PAYLOAD)


@pytest.mark.parametrize(
    "body",
    [
        TEXT + b"\0",  # libEST's example server: the body ends with the string's terminator
        TEXT + b"\0\0\0",
        TEXT.rstrip(b"\n") + b"\0",
        TEXT + b"\0\r\n",  # terminator, then a line end
        TEXT + b"\r\n\0",
        base64.b64encode(PAYLOAD) + b"\0",  # one line, no padding trouble
    ],
)
def test_trailing_nul_and_whitespace_are_ignored(body: bytes) -> None:
    assert b64.decode(body) == PAYLOAD


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (TEXT[:64] + b"\0" + TEXT[64:], "NUL byte before its end"),  # not trailing: refused
        (b"\0" + TEXT, "NUL byte before its end"),
        (b"\0", "empty"),
        (b"\0\0 \n", "empty"),
        (TEXT + b"\0x", "NUL byte before its end"),  # something after the terminator
        (TEXT + b"\x01", "not base64"),  # other control bytes stay refused, even at the end
        (TEXT + b"\0" + b"\x7f", "not base64"),
    ],
)
def test_other_stray_bytes_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(Base64Error, match=message):
        b64.decode(body)
