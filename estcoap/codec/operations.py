"""The one table of EST operations.

Every front, the client and the gateway read paths, methods, media types,
content-formats and rt= values from here; nothing else re-types them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ContentFormat(enum.IntEnum):
    """CoAP Content-Formats used by EST-coaps (RFC 9148 s8.1, RFC 8710)."""

    MULTIPART_CORE = 62
    PKCS7_SERVER_KEYGEN = 280
    PKCS7_CERTS_ONLY = 281
    PKCS8 = 284
    CSRATTRS = 285
    PKCS10 = 286
    PKIX_CERT = 287

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self]


MEDIA_TYPES: dict[ContentFormat, str] = {
    ContentFormat.MULTIPART_CORE: "application/multipart-core",
    ContentFormat.PKCS7_SERVER_KEYGEN: "application/pkcs7-mime; smime-type=server-generated-key",
    ContentFormat.PKCS7_CERTS_ONLY: "application/pkcs7-mime; smime-type=certs-only",
    ContentFormat.PKCS8: "application/pkcs8",
    ContentFormat.CSRATTRS: "application/csrattrs",
    ContentFormat.PKCS10: "application/pkcs10",
    ContentFormat.PKIX_CERT: "application/pkix-cert",
}

# HTTP media type without parameters, as compared on receipt.
HTTP_PKCS7 = "application/pkcs7-mime"
HTTP_PKCS10 = "application/pkcs10"
HTTP_PKCS8 = "application/pkcs8"
HTTP_CSRATTRS = "application/csrattrs"
HTTP_MULTIPART_MIXED = "multipart/mixed"
HTTP_CMC_REQUEST = "application/pkcs7-mime; smime-type=CMC-request"
HTTP_CMC_RESPONSE = "application/pkcs7-mime; smime-type=CMC-response"


class Operation(enum.Enum):
    """What an EST request asks for, independent of the wire."""

    CACERTS = "cacerts"
    SIMPLEENROLL = "simpleenroll"
    SIMPLEREENROLL = "simplereenroll"
    SERVERKEYGEN = "serverkeygen"  # key + certs-only chain (skg)
    SERVERKEYGEN_CERT = "serverkeygen-cert"  # key + one pkix-cert (skc, CoAP only)
    CSRATTRS = "csrattrs"
    FULLCMC = "fullcmc"


@dataclass(frozen=True)
class OperationSpec:
    operation: Operation
    long_name: str  # the RFC 7030 path segment
    short_name: str | None  # the RFC 9148 path segment; None when CoAP has no such resource
    method: str  # "GET" or "POST"
    request_format: ContentFormat | None
    response_formats: tuple[ContentFormat, ...]  # acceptable Accept values; first is default
    rt: str | None  # CoRE link rt= value

    @property
    def default_format(self) -> ContentFormat:
        return self.response_formats[0]

    @property
    def link_ct(self) -> str:
        """The ct= value of the CoRE link: numbers separated by spaces."""
        return " ".join(str(int(cf)) for cf in self.response_formats)


_CERTS = (ContentFormat.PKCS7_CERTS_ONLY, ContentFormat.PKIX_CERT)

OPERATIONS: tuple[OperationSpec, ...] = (
    OperationSpec(Operation.CACERTS, "cacerts", "crts", "GET", None, _CERTS, "ace.est.crts"),
    OperationSpec(
        Operation.SIMPLEENROLL,
        "simpleenroll",
        "sen",
        "POST",
        ContentFormat.PKCS10,
        _CERTS,
        "ace.est.sen",
    ),
    OperationSpec(
        Operation.SIMPLEREENROLL,
        "simplereenroll",
        "sren",
        "POST",
        ContentFormat.PKCS10,
        _CERTS,
        "ace.est.sren",
    ),
    OperationSpec(
        Operation.SERVERKEYGEN,
        "serverkeygen",
        "skg",
        "POST",
        ContentFormat.PKCS10,
        (ContentFormat.MULTIPART_CORE,),
        "ace.est.skg",
    ),
    OperationSpec(
        Operation.SERVERKEYGEN_CERT,
        "serverkeygen",
        "skc",
        "POST",
        ContentFormat.PKCS10,
        (ContentFormat.MULTIPART_CORE,),
        "ace.est.skc",
    ),
    OperationSpec(
        Operation.CSRATTRS,
        "csrattrs",
        "att",
        "GET",
        None,
        (ContentFormat.CSRATTRS,),
        "ace.est.att",
    ),
    OperationSpec(Operation.FULLCMC, "fullcmc", None, "POST", None, (), None),
)

EST_WELL_KNOWN = "/.well-known/est"
EST_ROOT_RT = "ace.est"

_BY_OPERATION = {spec.operation: spec for spec in OPERATIONS}
# skc shares its long name with skg; HTTP always means the skg form.
_BY_LONG = {spec.long_name: spec for spec in reversed(OPERATIONS)}
_BY_SHORT = {spec.short_name: spec for spec in OPERATIONS if spec.short_name}


def spec_for(operation: Operation) -> OperationSpec:
    return _BY_OPERATION[operation]


def by_long_name(name: str) -> OperationSpec | None:
    """The operation an RFC 7030 path segment names, or None."""
    return _BY_LONG.get(name)


def by_short_name(name: str) -> OperationSpec | None:
    """The operation an RFC 9148 short path segment names, or None."""
    return _BY_SHORT.get(name)


def is_operation_name(segment: str) -> bool:
    """True when a path segment is an operation name (a label must not be one)."""
    return segment in _BY_LONG or segment in _BY_SHORT


def is_label(name: str) -> bool:
    """True when a name can be a CA label (RFC 7030 s3.2.2, RFC 9148 s3): one non-empty
    path segment that is not an operation name."""
    return bool(name) and "/" not in name and not is_operation_name(name)
