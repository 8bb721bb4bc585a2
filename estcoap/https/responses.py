"""The one place where service results and errors become HTTP responses (RFC 7030 s4)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ..codec import b64
from ..codec.errors import CodecError
from ..codec.multipart import encode_multipart_mixed
from ..codec.operations import HTTP_PKCS8, MEDIA_TYPES, ContentFormat
from ..pop import ProofOfPossessionError
from ..service import (
    BadRequest,
    Certificates,
    CsrAttributes,
    EstError,
    Forbidden,
    KeyAndCertificate,
    KeyFormat,
    NotFound,
    NotSupported,
    Pending,
    ServiceFailure,
    ServiceUnavailable,
    Unauthenticated,
    UnsupportedFormat,
    UpstreamTimeout,
    UpstreamUnavailable,
)

ERROR_STATUS: dict[type[EstError], int] = {
    # A CSR not linked to this TLS channel (RFC 7030 s3.5): the client is authenticated,
    # and no HTTP credential can change the answer, so 403 with the reason, not a 401
    # that asks for a password.
    ProofOfPossessionError: 403,
    BadRequest: 400,
    UnsupportedFormat: 415,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    NotSupported: 501,
    UpstreamUnavailable: 502,
    UpstreamTimeout: 504,
    ServiceUnavailable: 503,
    ServiceFailure: 500,
}

_B64 = {"Content-Transfer-Encoding": "base64"}
_EMPTY_CSRATTRS = b"\x30\x00"


def text(status: int, diagnostic: str, **headers: str) -> web.Response:
    """A short text/plain diagnostic; one line, as clients print it."""
    line = " ".join(diagnostic.split())[:500]
    return web.Response(status=status, text=line + "\n", headers=headers or None)


def status_for(exc: Exception) -> int:
    if isinstance(exc, CodecError):
        return 400
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def error(exc: Exception, challenges: Sequence[str] = ()) -> web.Response:
    """The answer to a refusal; a 401 carries `challenges` as WWW-Authenticate.

    HTTP requires a challenge on every 401 (RFC 9110 s15.5.2). A front that offers no
    HTTP authentication scheme (client certificates only) has none, so it answers 403:
    the credentials it got, if any, are not enough, and no password would help.
    """
    status = status_for(exc)
    if status == 401 and not challenges:
        status = 403
    response = text(status, str(exc) or type(exc).__name__)
    if isinstance(exc, ServiceUnavailable):
        response.headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    if status == 401:
        for value in challenges:
            response.headers.add("WWW-Authenticate", value)
    return response


def try_later(status: int, diagnostic: str, retry_after: int) -> web.Response:
    """429 (this client is throttled) or 503 (the server is busy), with Retry-After."""
    return text(status, diagnostic, **{"Retry-After": str(max(1, retry_after))})


def _base64(body: bytes, media_type: str) -> web.Response:
    return web.Response(
        status=200, body=b64.encode(body), headers={"Content-Type": media_type, **_B64}
    )


def result(value: object) -> web.Response:
    """Map a successful service answer."""
    if isinstance(value, Pending):
        return web.Response(
            status=202,
            text="request pending: retry the identical request later\n",
            headers={"Retry-After": str(max(0, int(value.retry_after)))},
        )
    if isinstance(value, Certificates):
        return _base64(value.pkcs7_der, MEDIA_TYPES[ContentFormat.PKCS7_CERTS_ONLY])
    if isinstance(value, CsrAttributes):
        if not value.der or value.der == _EMPTY_CSRATTRS:
            return web.Response(status=204)
        return _base64(value.der, MEDIA_TYPES[ContentFormat.CSRATTRS])
    if isinstance(value, KeyAndCertificate):
        key_type = (
            HTTP_PKCS8
            if value.key_format is KeyFormat.PKCS8
            else MEDIA_TYPES[ContentFormat.PKCS7_SERVER_KEYGEN]
        )
        body, content_type = encode_multipart_mixed(
            [
                (key_type, value.private_key),
                (MEDIA_TYPES[ContentFormat.PKCS7_CERTS_ONLY], value.certificates.pkcs7_der),
            ]
        )
        return web.Response(status=200, body=body, headers={"Content-Type": content_type})
    raise ServiceFailure(f"service returned an unexpected {type(value).__name__}")
