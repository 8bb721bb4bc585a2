"""PKCS#11 URIs (RFC 7512) naming a key in a token: what `--key-uri` and ca/key.uri hold.

Only the attributes that find one private key are taken: token (the token label),
object (the key's label) and id (its CKA_ID), in the path; module-path in the query (the
PKCS#11 library to load). A PIN never travels in a URI here: pin-value and pin-source
are refused, since a URI ends up in files, process lists and logs; the PIN comes from a
file, ESTCOAP_PKCS11_PIN or a prompt (ca/pin.py). Other standard attributes (slot-id,
manufacturer, serial, ...) are refused too rather than silently ignored: a URI that
names something this code does not look at could pick another token's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

SCHEME = "pkcs11:"
_PATH_ATTRIBUTES = {"token", "object", "id", "type"}
_QUERY_ATTRIBUTES = {"module-path"}
_SECRET_ATTRIBUTES = {"pin-value", "pin-source"}


class Pkcs11UriError(ValueError):
    """A string that is not a PKCS#11 URI this project can use; str() says why."""


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str
    object: str | None = None  # the key's CKA_LABEL
    id: bytes | None = None  # the key's CKA_ID
    module_path: str | None = None

    def __str__(self) -> str:
        path = [f"token={_quote(self.token.encode(), _PATH_SAFE)}"]
        if self.object is not None:
            path.append(f"object={_quote(self.object.encode(), _PATH_SAFE)}")
        if self.id is not None:
            path.append("id=" + "".join(f"%{octet:02X}" for octet in self.id))
        text = SCHEME + ";".join(path)
        if self.module_path:
            text += "?module-path=" + _quote(self.module_path.encode(), _QUERY_SAFE)
        return text

    def with_module(self, module_path: str) -> Pkcs11Uri:
        return Pkcs11Uri(self.token, self.object, self.id, module_path)


def is_pkcs11_uri(text: str) -> bool:
    return text[: len(SCHEME)].lower() == SCHEME


def parse(text: str) -> Pkcs11Uri:
    """The URI's token, key label or id and module path; Pkcs11UriError for anything else."""
    if not is_pkcs11_uri(text):
        raise Pkcs11UriError(f"not a PKCS#11 URI (must start with {SCHEME}): {text!r}")
    rest = text[len(SCHEME) :]
    path, _, query = rest.partition("?")
    values: dict[str, bytes] = {}
    for part, allowed, where in ((path, _PATH_ATTRIBUTES, ";"), (query, _QUERY_ATTRIBUTES, "&")):
        if not part:
            continue
        for item in part.split(where):
            name, equals, value = item.partition("=")
            name = name.strip().lower()
            if not equals or not name:
                raise Pkcs11UriError(f"PKCS#11 URI attribute without a value: {item!r}")
            if name in _SECRET_ATTRIBUTES:
                raise Pkcs11UriError(
                    f"{name} is refused: a PIN does not belong in a URI; use --pin-file, "
                    "ESTCOAP_PKCS11_PIN or the prompt"
                )
            if name not in allowed:
                raise Pkcs11UriError(
                    f"PKCS#11 URI attribute {name!r} is not supported here "
                    f"(use {', '.join(sorted(allowed))})"
                )
            if name in values:
                raise Pkcs11UriError(f"PKCS#11 URI attribute {name!r} given twice")
            values[name] = unquote_to_bytes(value)
    if "type" in values and values["type"] != b"private":
        raise Pkcs11UriError("a key URI names the private key (type=private, or no type)")
    if "token" not in values:
        raise Pkcs11UriError("the PKCS#11 URI must name the token (token=LABEL)")
    if "object" not in values and "id" not in values:
        raise Pkcs11UriError("the PKCS#11 URI must name the key (object=LABEL or id=%..)")
    try:
        token = values["token"].decode()
        label = values["object"].decode() if "object" in values else None
        module = values["module-path"].decode() if "module-path" in values else None
    except UnicodeDecodeError as exc:
        raise Pkcs11UriError(f"PKCS#11 URI labels must be UTF-8: {exc}") from exc
    if not token or label == "" or values.get("id") == b"":
        raise Pkcs11UriError("PKCS#11 URI token, object and id must not be empty")
    return Pkcs11Uri(token=token, object=label, id=values.get("id"), module_path=module)


# RFC 7512 s2.3: path values may not hold ';' '?' '&' '=' '/', query values may hold '/'
# (a module path is mostly slashes).
_PATH_SAFE = "-._~:@!$'()*+,"
_QUERY_SAFE = _PATH_SAFE + "/"


def _quote(value: bytes, safe: str) -> str:
    return quote(value, safe=safe)
