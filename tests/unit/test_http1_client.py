"""The HTTPS client's response framing (estcoap.client.http1): whole answers out of the bytes
a connection delivers, however they are split, with the leniency RFC 9112 allows a client."""

from __future__ import annotations

import pytest

from estcoap.client.http1 import MAX_RESPONSE_BODY, ResponseReader

pytestmark = pytest.mark.timeout(10)

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/pkcs7-mime\r\n"
    b"Content-Transfer-Encoding: base64\r\nContent-Length: 5\r\n\r\nMIIB\n"
)


def read(data: bytes, method: str = "POST", *, eof: bool = False):  # type: ignore[no-untyped-def]
    reader = ResponseReader()
    reader.feed(data)
    reader.eof = eof
    return reader, reader.next_response(method)


def test_a_content_length_answer_and_what_follows_it() -> None:
    reader, response = read(OK + b"HTTP/1.1 204 No Content\r\n\r\n")
    assert response is not None
    assert (response.status, response.reason, response.body) == (200, "OK", b"MIIB\n")
    assert response.get("content-transfer-encoding") == "base64" and response.keep_alive
    second = reader.next_response("POST")
    assert second is not None and second.status == 204 and second.body == b""
    assert not reader.buffer


def test_any_split_of_the_bytes_gives_the_same_answer() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    for whole in (OK, chunked):
        for cut in range(1, len(whole)):
            reader = ResponseReader()
            reader.feed(whole[:cut])
            early = reader.next_response("POST")
            reader.feed(whole[cut:])
            response = early or reader.next_response("POST")
            assert response is not None and response.body in (b"MIIB\n", b"abcde"), cut
            assert early is None or cut == len(whole)


def test_bare_lf_lines_and_an_interim_answer() -> None:
    data = b"HTTP/1.1 100 Continue\n\nHTTP/1.1 202 Accepted\nRetry-After: 5\nContent-Length: 0\n\n"
    _, response = read(data)
    assert response is not None and response.status == 202
    assert response.get("retry-after") == "5"


def test_a_body_delimited_by_close_needs_the_end() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, "
    reader, response = read(data)
    assert response is None
    reader.feed(b"part two")
    reader.eof = True
    response = reader.next_response("GET")
    assert response is not None and response.body == b"part one, part two"
    assert not response.keep_alive  # the server ends the connection to end the body


def test_http_1_0_and_connection_close_are_not_kept() -> None:
    _, old = read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    _, closing = read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert old is not None and not old.keep_alive
    assert closing is not None and not closing.keep_alive


def test_head_answers_have_no_body() -> None:
    _, response = read(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD")
    assert response is not None and response.body == b"" and response.keep_alive


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_RESPONSE_BODY + 1}\r\n\r\n".encode(), "large"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY", "chunk framing"),
        (b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 101 + b"\r\n", "too many"),
    ],
)
def test_malformed_answers_are_a_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read(data)


def test_an_answer_cut_short_by_the_end_is_an_error() -> None:
    with pytest.raises(ValueError, match="inside the response body"):
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", eof=True)
    with pytest.raises(ValueError, match="inside the response head"):
        read(b"HTTP/1.1 200 OK\r\nContent-", eof=True)
    _, nothing = read(b"", eof=True)
    assert nothing is None  # no byte at all: the transport retries on a new connection


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(ValueError, match="head too large"):
        read(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024))
