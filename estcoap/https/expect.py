"""The Expect header: 100-continue gets its interim answer, anything else a 417.

aiohttp's own handler puts the header's value into its 417 text, and a value that is not
UTF-8 (aiohttp keeps such bytes as surrogates) made building that text fail with a 500.
server.py answers unsupported values before routing (for requests no route takes);
the front's routes use expect_continue.
"""

from __future__ import annotations

from aiohttp import web

from . import responses

# The part of an unsupported Expect value echoed in the 417 diagnostic.
_ECHO = 64


def unsupported_expect(request: web.BaseRequest) -> web.Response | None:
    """A 417 for an Expect other than 100-continue on HTTP/1.1, else None."""
    value = request.headers.get("Expect", "")
    if request.version < (1, 1) or value.strip().lower() == "100-continue":
        return None  # RFC 9110 s10.1.1: an HTTP/1.0 client's Expect is ignored
    # ascii() escapes whatever bytes the peer sent: the diagnostic is always sendable.
    resp = responses.text(417, f"unsupported Expect {ascii(value[:_ECHO])}: only 100-continue")
    resp.force_close()  # the body, if the client sends it anyway, is not read
    return resp


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """aiohttp's expect_handler: None to go on to the route's handler, or a final answer."""
    refusal = unsupported_expect(request)
    if refusal is not None or request.version < (1, 1):
        return refusal
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the final response's head is still to come
    return None
