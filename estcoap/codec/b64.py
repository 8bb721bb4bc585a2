"""Base64 transfer encoding of EST over HTTPS bodies (RFC 7030 s4, RFC 8951 s3).

Receivers tolerate any whitespace and missing line breaks and ignore
Content-Transfer-Encoding (RFC 8951 s3); senders wrap at 64 columns. Deployed C servers
(libEST's example server) end a body with the string's NUL terminator: NULs at the very
end are dropped like trailing whitespace, while a NUL or any other non-base64 byte
elsewhere is refused.
"""

from __future__ import annotations

import base64
import binascii

from .errors import Base64Error

_WHITESPACE = b" \t\r\n\v\f"
_TRAILER = _WHITESPACE + b"\0"  # what may follow the last base64 character
_TRANSLATE_DROP = bytes.maketrans(b"", b"")


def decode(data: bytes | str) -> bytes:
    """Decode base64 text, ignoring whitespace anywhere and NULs at the end; padding may be
    missing."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError as exc:
            raise Base64Error("body is not base64: non-ASCII character") from exc
    compact = data.rstrip(_TRAILER).translate(_TRANSLATE_DROP, _WHITESPACE)
    if not compact:
        raise Base64Error("body is empty")
    if b"\0" in compact:
        raise Base64Error("body is not base64: a NUL byte before its end")
    compact += b"=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise Base64Error(f"body is not base64: {exc}") from exc


def encode(data: bytes, *, line_length: int = 64, newline: bytes = b"\n") -> bytes:
    """Base64 text wrapped at line_length columns, each line ending in newline.

    LF by default, as RFC 7030 A.1 counts its Content-Length; multipart bodies use CRLF.
    """
    if line_length <= 0 or line_length % 4:
        raise ValueError("line_length must be a positive multiple of 4")
    text = base64.b64encode(data)
    lines = [text[i : i + line_length] for i in range(0, len(text), line_length)]
    return b"".join(line + newline for line in lines)
