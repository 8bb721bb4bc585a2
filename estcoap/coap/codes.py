"""Service meanings -> CoAP response codes, in one place (RFC 9148 s4.5)."""

from __future__ import annotations

from aiocoap.numbers.codes import Code

from .. import service
from ..codec.errors import CodecError

_CODES: tuple[tuple[type[Exception], Code], ...] = (
    (CodecError, Code.BAD_REQUEST),
    (service.UnsupportedFormat, Code.UNSUPPORTED_CONTENT_FORMAT),
    (service.BadRequest, Code.BAD_REQUEST),
    (service.Unauthenticated, Code.UNAUTHORIZED),
    (service.Forbidden, Code.FORBIDDEN),
    (service.NotFound, Code.NOT_FOUND),
    # A request form we do not implement (e.g. encrypted server-generated keys): the
    # device asked for something this server cannot give, so a 4.xx with the reason.
    (service.NotSupported, Code.BAD_REQUEST),
    (service.UpstreamUnavailable, Code.BAD_GATEWAY),
    (service.UpstreamTimeout, Code.GATEWAY_TIMEOUT),
    # Try later: 5.03 with Max-Age (retry_after_for), as for a pending request (s4.7).
    (service.ServiceUnavailable, Code.SERVICE_UNAVAILABLE),
    (service.ServiceFailure, Code.INTERNAL_SERVER_ERROR),
)


def code_for(exc: Exception) -> Code:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return Code.INTERNAL_SERVER_ERROR


def retry_after_for(exc: Exception) -> int | None:
    """The Max-Age a refusal carries: seconds until asking again makes sense, or None."""
    if isinstance(exc, service.ServiceUnavailable):
        return max(1, int(exc.retry_after))
    return None
