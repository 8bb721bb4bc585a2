"""Server-keygen bodies in both forms.

* CoAP: application/multipart-core (RFC 8710), a CBOR array
  [content-format, bstr, content-format, bstr, ...], as RFC 9148 skg/skc use.
* HTTP: multipart/mixed (RFC 2046) with base64 body parts (RFC 7030 s4.4.2);
  decoding tolerates what RFC 8951 tells receivers to tolerate.

KeygenParts maps one answer between the two, as the gateway needs.
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives.serialization import Encoding

from . import b64, pkcs7
from .errors import Base64Error, MultipartError, Pkcs7Error
from .operations import HTTP_MULTIPART_MIXED, MEDIA_TYPES, ContentFormat

# -- multipart-core (CBOR) ----------------------------------------------------


def encode_multipart_core(parts: Sequence[tuple[int, bytes]]) -> bytes:
    """CBOR array [cf, bstr, cf, bstr, ...] in the order given."""
    items: list[int | bytes] = []
    for content_format, payload in parts:
        if not 0 <= int(content_format) <= 0xFFFF:
            raise MultipartError(f"content-format {content_format} is out of range")
        items.extend((int(content_format), bytes(payload)))
    return cbor2.dumps(items)


def decode_multipart_core(data: bytes) -> list[tuple[int, bytes]]:
    """(content-format, representation) pairs of a multipart-core payload."""
    if not data:
        raise MultipartError("multipart-core payload is empty")
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        raise MultipartError(f"multipart-core payload is not CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise MultipartError(f"{len(data) - stream.tell()} trailing bytes after the CBOR array")
    if not isinstance(value, list):
        raise MultipartError(f"multipart-core must be a CBOR array, not {type(value).__name__}")
    if len(value) % 2:
        raise MultipartError("multipart-core array must have an even number of elements")
    parts = []
    for index in range(0, len(value), 2):
        content_format, payload = value[index], value[index + 1]
        if type(content_format) is not int or not 0 <= content_format <= 0xFFFF:
            raise MultipartError(f"element {index} must be a content-format (uint 0..65535)")
        if payload is None:
            raise MultipartError(f"part {index // 2} has no representation (null)")
        if not isinstance(payload, bytes):
            raise MultipartError(f"element {index + 1} must be a byte string")
        parts.append((content_format, payload))
    return parts


# -- multipart/mixed (HTTP) ---------------------------------------------------

_BOUNDARY_OK = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


def encode_multipart_mixed(
    parts: Sequence[tuple[str, bytes]], *, boundary: str | None = None
) -> tuple[bytes, str]:
    """A multipart/mixed body of base64 parts and its Content-Type header value.

    Each part is (media type, DER). Lines end in CRLF (RFC 2046); base64 is
    wrapped at 64 columns with Content-Transfer-Encoding: base64 (RFC 7030 s4.4.2).
    """
    if not parts:
        raise MultipartError("a multipart body needs at least one part")
    # '-' never occurs in base64 text, so this boundary cannot collide with a body.
    boundary = boundary or f"est-{secrets.token_hex(12)}"
    if not _BOUNDARY_OK.match(boundary):
        raise MultipartError(f"invalid multipart boundary {boundary!r}")
    out = bytearray()
    for media_type, payload in parts:
        if "\r" in media_type or "\n" in media_type:
            raise MultipartError("media type must be a single line")
        out += b"--" + boundary.encode("ascii") + b"\r\n"
        out += b"Content-Type: " + media_type.encode("ascii") + b"\r\n"
        out += b"Content-Transfer-Encoding: base64\r\n\r\n"
        out += b64.encode(payload, newline=b"\r\n")
    out += b"--" + boundary.encode("ascii") + b"--\r\n"
    return bytes(out), f"{HTTP_MULTIPART_MIXED}; boundary={boundary}"


def decode_multipart_mixed(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(media type, decoded bytes) per part of a multipart/mixed body.

    Tolerates CRLF or LF line ends, preamble and epilogue, a missing
    Content-Transfer-Encoding and unwrapped base64. The media type comes back
    lower-case, without parameters other than smime-type.
    """
    media_type, params = parse_content_type(content_type)
    if media_type != HTTP_MULTIPART_MIXED:
        raise MultipartError(f"expected multipart/mixed, got {media_type or 'nothing'}")
    boundary = params.get("boundary")
    if not boundary:
        raise MultipartError("multipart/mixed Content-Type has no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[list[bytes]] = []
    current: list[bytes] | None = None
    closed = False
    for raw_line in body.split(b"\n"):
        line = raw_line.rstrip(b"\r")
        if line.startswith(delimiter):
            rest = line[len(delimiter) :]
            if rest.rstrip(b" \t") == b"":  # a delimiter (transport padding allowed)
                current = []
                parts.append(current)
                continue
            if rest.startswith(b"--"):  # the close delimiter; the epilogue follows
                closed = True
                break
        if current is not None:
            current.append(line)
    if not parts:
        raise MultipartError("multipart body has no part with the given boundary")
    if not closed:
        raise MultipartError("multipart body has no closing boundary (truncated?)")
    return [_decode_part(index, lines) for index, lines in enumerate(parts)]


def _decode_part(index: int, lines: list[bytes]) -> tuple[str, bytes]:
    headers: dict[str, str] = {}
    name = None
    position = 0
    for position, line in enumerate(lines):  # noqa: B007 - position is read after the loop
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t") and name is not None:  # folded header line
            headers[name] += " " + line.strip().decode("latin-1")
            continue
        key, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise MultipartError(f"part {index}: malformed header line")
        name = key.strip().lower()
        headers[name] = value.strip()
    else:
        raise MultipartError(f"part {index}: no blank line after the headers")
    if "content-type" not in headers:
        raise MultipartError(f"part {index} has no Content-Type")
    media_type, params = parse_content_type(headers["content-type"])
    if "smime-type" in params:
        media_type = f"{media_type}; smime-type={params['smime-type'].lower()}"
    encoding = headers.get("content-transfer-encoding", "base64").lower()
    if encoding not in ("base64", "7bit"):  # RFC 8951: bodies are base64 whatever it says
        raise MultipartError(f"part {index}: unsupported Content-Transfer-Encoding {encoding}")
    try:
        payload = b64.decode(b"".join(lines[position + 1 :]))
    except Base64Error as exc:
        raise MultipartError(f"part {index} ({media_type}): {exc}") from exc
    return media_type, payload


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Lower-case media type and its parameters (names lower-case, quotes removed)."""
    pieces = _split_params(value)
    media_type = pieces[0].strip().lower()
    params = {}
    for piece in pieces[1:]:
        key, sep, val = piece.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        params[key.strip().lower()] = val
    return media_type, params


def _split_params(value: str) -> list[str]:
    """Split on ';' outside double quotes."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


# -- one server-keygen answer, both forms -------------------------------------

_KEY_FORMATS = (ContentFormat.PKCS8, ContentFormat.PKCS7_SERVER_KEYGEN)
_CERT_FORMATS = (ContentFormat.PKCS7_CERTS_ONLY, ContentFormat.PKIX_CERT)
_FORMAT_BY_MEDIA_TYPE = {media.lower(): cf for cf, media in MEDIA_TYPES.items()}


def content_format_for(media_type: str) -> ContentFormat | None:
    """The CoAP content-format of an HTTP media type (parameters other than smime-type dropped)."""
    base, params = parse_content_type(media_type)
    if "smime-type" in params:
        base = f"{base}; smime-type={params['smime-type'].lower()}"
    return _FORMAT_BY_MEDIA_TYPE.get(base)


@dataclass(frozen=True)
class KeygenParts:
    """A server-keygen answer: the key (PKCS#8, or CMS when encrypted) and the certificate(s)."""

    key_format: ContentFormat  # PKCS8 (284) or PKCS7_SERVER_KEYGEN (280)
    key: bytes
    cert_format: ContentFormat  # PKCS7_CERTS_ONLY (281) or PKIX_CERT (287)
    certificate: bytes

    @classmethod
    def from_pairs(cls, parts: Sequence[tuple[int | str, bytes]]) -> KeygenParts:
        """From (content-format or media type, bytes) pairs, in either order."""
        key = cert = None
        for label, payload in parts:
            fmt = content_format_for(label) if isinstance(label, str) else _known(label)
            if fmt in _KEY_FORMATS:
                if key is not None:
                    raise MultipartError("server-keygen answer has two key parts")
                key = (fmt, payload)
            elif fmt in _CERT_FORMATS:
                if cert is not None:
                    raise MultipartError("server-keygen answer has two certificate parts")
                cert = (fmt, payload)
            else:
                raise MultipartError(f"server-keygen answer has an unexpected part {label!r}")
        if key is None or cert is None:
            raise MultipartError("server-keygen answer needs a key part and a certificate part")
        return cls(key[0], key[1], cert[0], cert[1])

    @classmethod
    def from_core(cls, data: bytes) -> KeygenParts:
        return cls.from_pairs(decode_multipart_core(data))

    @classmethod
    def from_mixed(cls, body: bytes, content_type: str) -> KeygenParts:
        return cls.from_pairs(decode_multipart_mixed(body, content_type))

    def with_single_certificate(self) -> KeygenParts:
        """The skc form: a certs-only PKCS#7 holding one certificate becomes pkix-cert (287)."""
        if self.cert_format is ContentFormat.PKIX_CERT:
            return self
        try:
            certificates = pkcs7.decode_certs_only(self.certificate)
        except Pkcs7Error as exc:
            raise MultipartError(f"certificate part: {exc}") from exc
        if len(certificates) != 1:
            raise MultipartError(
                f"certificate part holds {len(certificates)} certificates; pkix-cert needs one"
            )
        der = certificates[0].public_bytes(Encoding.DER)
        return KeygenParts(self.key_format, self.key, ContentFormat.PKIX_CERT, der)

    def to_core(self) -> bytes:
        """The RFC 9148 multipart-core payload: [key format, key, cert format, cert]."""
        return encode_multipart_core(
            [(int(self.key_format), self.key), (int(self.cert_format), self.certificate)]
        )

    def to_mixed(self, *, boundary: str | None = None) -> tuple[bytes, str]:
        """The RFC 7030 multipart/mixed body and Content-Type (certs-only only; HTTP has no 287)."""
        if self.cert_format is not ContentFormat.PKCS7_CERTS_ONLY:
            raise MultipartError("HTTP serverkeygen answers carry a certs-only PKCS#7")
        key_part = (MEDIA_TYPES[self.key_format], self.key)
        cert_part = (MEDIA_TYPES[self.cert_format], self.certificate)
        return encode_multipart_mixed([key_part, cert_part], boundary=boundary)


def _known(value: int) -> ContentFormat | None:
    try:
        return ContentFormat(value)
    except ValueError:
        return None
