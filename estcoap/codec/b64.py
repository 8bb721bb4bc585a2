"""Base64 transfer encoding of EST over HTTPS bodies (RFC 7030 s4, RFC 8951 s3).

Receivers tolerate any whitespace and missing line breaks and ignore
Content-Transfer-Encoding; senders wrap at 64 columns.
"""

from __future__ import annotations

import base64
import binascii

from .errors import Base64Error

_WHITESPACE = b" \t\r\n\v\f"
_TRANSLATE_DROP = bytes.maketrans(b"", b"")


def decode(data: bytes | str) -> bytes:
    """Decode base64 text, ignoring whitespace anywhere; padding may be missing."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError as exc:
            raise Base64Error("body is not base64: non-ASCII character") from exc
    compact = data.translate(_TRANSLATE_DROP, _WHITESPACE)
    if not compact:
        raise Base64Error("body is empty")
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
