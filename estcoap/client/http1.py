"""HTTP/1.1 response framing for the HTTPS client, sans-IO: bytes in, complete responses out.

The transport's protocol appends what the connection delivers and asks for the next
response once per arrival, so a whole answer is framed in one pass instead of one
await per header line. Lenient where RFC 9112 allows a client to be (bare LF line
ends, 1xx interim answers, chunked trailers), strict about framing (one Content-Length,
sizes bounded).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RESPONSE_BODY = 4 * 1024 * 1024
MAX_HEAD = 64 * 1024
MAX_HEADERS = 100


@dataclass(frozen=True)
class HttpResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    body: bytes
    keep_alive: bool  # the connection may carry the next request

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass(frozen=True)
class _Head:
    status: int
    reason: str
    version: str
    headers: tuple[tuple[str, str], ...]
    end: int  # offset of the body in the buffer


class ResponseReader:
    """The bytes one connection delivered, and the responses framed from them."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self._head: _Head | None = None  # kept while the body is still arriving

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEAD + MAX_RESPONSE_BODY + 1024:
            raise ValueError("response too large")

    def next_response(self, method: str) -> HttpResponse | None:
        """The next complete response (taken out of the buffer), or None until more arrives.

        Raises ValueError for a malformed response, or one cut short by the end of input.
        """
        head = self._head
        while head is None:
            head = _parse_head(self.buffer)
            if head is None:
                if self.eof and self.buffer:
                    raise ValueError("connection closed inside the response head")
                return None
            if 100 <= head.status < 200:  # interim (100 Continue): the real answer follows
                del self.buffer[: head.end]
                head = None
        self._head = head
        framed = _body(self.buffer, head, method, self.eof)
        if framed is None:
            if self.eof:
                raise ValueError("connection closed inside the response body")
            return None
        body, end = framed
        del self.buffer[:end]
        self._head = None
        conn = ",".join(v for k, v in head.headers if k == "connection").lower()
        keep = head.version == "HTTP/1.1" and "close" not in conn
        delimited = any(k in ("content-length", "transfer-encoding") for k, _ in head.headers)
        keep = keep and (delimited or head.status in (204, 304) or method == "HEAD")
        return HttpResponse(head.status, head.reason, head.headers, body, keep)


def _head_end(buffer: bytearray) -> int:
    """Offset just after the empty line that ends the head, or -1 (CRLF or bare LF)."""
    crlf, lf = buffer.find(b"\n\r\n"), buffer.find(b"\n\n")
    ends = [i + 3 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


def _parse_head(buffer: bytearray) -> _Head | None:
    end = _head_end(buffer)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ValueError("response head too large")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\n")[:-2]  # drop the empty line
    status_line = lines[0].rstrip("\r")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad HTTP status line {status_line[:60]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise ValueError("too many response header fields")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.rstrip("\r").partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip()))
    reason = parts[2] if len(parts) > 2 else ""
    return _Head(int(parts[1]), reason, parts[0], tuple(headers), end)


def _body(buffer: bytearray, head: _Head, method: str, eof: bool) -> tuple[bytes, int] | None:
    """(body, offset after it) once the whole body is in the buffer."""
    start = head.end
    if method == "HEAD" or head.status in (204, 304):
        return b"", start
    encodings = ",".join(v for k, v in head.headers if k == "transfer-encoding").lower()
    if "chunked" in encodings:
        return _chunked(buffer, start)
    lengths = {v for k, v in head.headers if k == "content-length"}
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise ValueError("bad Content-Length")
        length = int(next(iter(lengths)))
        if length > MAX_RESPONSE_BODY:
            raise ValueError("response body too large")
        if len(buffer) - start < length:
            return None
        return bytes(buffer[start : start + length]), start + length
    if not eof:  # delimited by the server closing the connection
        if len(buffer) - start > MAX_RESPONSE_BODY:
            raise ValueError("response body too large")
        return None
    return bytes(buffer[start:]), len(buffer)


def _chunked(buffer: bytearray, pos: int) -> tuple[bytes, int] | None:
    out = bytearray()
    while True:
        line_end = buffer.find(b"\n", pos)
        if line_end < 0:
            return None
        size_text = bytes(buffer[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"bad chunk size {size_text[:20]!r}") from None
        pos = line_end + 1
        if size == 0:
            while True:  # trailer fields, up to the empty line
                line_end = buffer.find(b"\n", pos)
                if line_end < 0:
                    return None
                line, pos = buffer[pos:line_end], line_end + 1
                if line in (b"", b"\r"):
                    return bytes(out), pos
        if len(out) + size > MAX_RESPONSE_BODY:
            raise ValueError("response body too large")
        if len(buffer) < pos + size + 1:
            return None
        out += buffer[pos : pos + size]
        pos += size
        if buffer[pos : pos + 2] == b"\r\n":
            pos += 2
        elif buffer[pos : pos + 1] == b"\n":
            pos += 1
        elif len(buffer) - pos < 2 and buffer[pos : pos + 1] in (b"", b"\r"):
            return None  # the chunk's line end has not arrived yet
        else:
            raise ValueError("bad chunk framing")
