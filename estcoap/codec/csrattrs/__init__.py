"""CSR attributes (RFC 7030 s4.5.2 as corrected by RFC 8951 s3.5, clarified by RFC 9908).

    CsrAttrs  ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
    AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
    Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET OF ANY }

RFC 9908 rules enforced on decode: at most one extensionRequest attribute, whose
single value is an Extensions SEQUENCE; at most one CertificationRequestInfoTemplate.
The RFC 7030 s4.5.2 example form (bare OIDs inside extensionRequest) still decodes,
but is reported by csrattrs_warnings() and never read as extensions.

Unknown OIDs and attribute types are kept as they are (clients ignore what they
do not understand, RFC 7030 s4.5.2).

By job: items (the AttrOrOID items), keys (key and signature requests), extensions,
templates (RFC 9908), body (decode, encode, build a whole CsrAttrs), queries (what the
server asked for). The DER is hand-written over the codec's der module, as in the rest
of the codec: no new dependency, and it is tested byte-exact against the RFC vectors.
"""

from .body import build_csrattrs, decode_csrattrs, encode_csrattrs
from .extensions import ExtensionTemplate, decode_extensions, encode_extensions
from .items import (
    OID_CERT_REQ_INFO_TEMPLATE,
    OID_CHALLENGE_PASSWORD,
    OID_EC_PUBLIC_KEY,
    OID_EXTENSION_REQ_TEMPLATE,
    OID_EXTENSION_REQUEST,
    OID_RSA_ENCRYPTION,
    CsrAttribute,
    CsrAttrItem,
    CsrAttrOid,
)
from .keys import KeyRequest
from .queries import (
    csrattrs_warnings,
    legacy_extension_oids,
    requested_extensions,
    requested_key,
    requested_signature_hash,
    requested_template,
    wants_challenge_password,
)
from .templates import (
    CsrTemplate,
    NameTemplateAttribute,
    decode_template,
    encode_template,
    template_attribute,
)

__all__ = [
    "OID_CERT_REQ_INFO_TEMPLATE",
    "OID_CHALLENGE_PASSWORD",
    "OID_EC_PUBLIC_KEY",
    "OID_EXTENSION_REQUEST",
    "OID_EXTENSION_REQ_TEMPLATE",
    "OID_RSA_ENCRYPTION",
    "CsrAttrItem",
    "CsrAttrOid",
    "CsrAttribute",
    "CsrTemplate",
    "ExtensionTemplate",
    "KeyRequest",
    "NameTemplateAttribute",
    "build_csrattrs",
    "csrattrs_warnings",
    "decode_csrattrs",
    "decode_extensions",
    "decode_template",
    "encode_csrattrs",
    "encode_extensions",
    "encode_template",
    "legacy_extension_oids",
    "requested_extensions",
    "requested_key",
    "requested_signature_hash",
    "requested_template",
    "template_attribute",
    "wants_challenge_password",
]
