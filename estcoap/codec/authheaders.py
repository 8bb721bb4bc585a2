"""HTTP authentication header syntax and Digest arithmetic (RFC 7235, RFC 7617, RFC 7616).

Pure functions shared by the server front (checking credentials) and the client
(answering challenges); no I/O, no aiohttp.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# Digest algorithms we speak, strongest first (RFC 7616 s3.2 lists SHA-256 and MD5).
DIGEST_ALGORITHMS: dict[str, str] = {"SHA-256": "sha256", "MD5": "md5"}

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
_TOKEN68_RE = re.compile(r"\s*([A-Za-z0-9\-._~+/]+=*)\s*(?:,|$)")


class AuthHeaderError(ValueError):
    """An Authorization or WWW-Authenticate value that does not parse."""


@dataclass(frozen=True)
class Challenge:
    """One auth-scheme with its parameters (names lower-cased) or a token68."""

    scheme: str  # lower-cased: "basic", "digest"
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """All challenges in one or more WWW-Authenticate values (several may share a header)."""
    result: list[Challenge] = []
    for value in values:
        result.extend(_parse_list(value))
    return result


def parse_authorization(value: str) -> Challenge:
    """The credentials of one Authorization header."""
    items = _parse_list(value)
    if len(items) != 1:
        raise AuthHeaderError("Authorization must carry exactly one credential")
    return items[0]


def _parse_list(text: str) -> list[Challenge]:
    out: list[Challenge] = []
    pos = 0
    while pos < len(text):
        if text[pos] in " ,\t":
            pos += 1
            continue
        m = _SCHEME_RE.match(text, pos)
        if not m:
            raise AuthHeaderError(f"bad auth scheme at {text[pos : pos + 20]!r}")
        scheme = m.group(1).lower()
        pos = m.end()
        # A token68 (Basic credentials) is one token not followed by "=" and a value.
        t = _TOKEN68_RE.match(text, pos)
        if t and not _PARAM_RE.match(text, pos):
            out.append(Challenge(scheme, {}, t.group(1)))
            pos = t.end()
            continue
        params: dict[str, str] = {}
        while pos < len(text):
            p = _PARAM_RE.match(text, pos)
            if not p:
                break
            params[p.group(1).lower()] = _unquote(p.group(2))
            pos = p.end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
        out.append(Challenge(scheme, params))
    return out


def hash_hex(algorithm: str, data: str) -> str:
    try:
        name = DIGEST_ALGORITHMS[algorithm.upper()]
    except KeyError:
        raise AuthHeaderError(f"unsupported Digest algorithm {algorithm!r}") from None
    return hashlib.new(name, data.encode("utf-8")).hexdigest()


def digest_ha1(algorithm: str, user: str, realm: str, password: str) -> str:
    return hash_hex(algorithm, f"{user}:{realm}:{password}")


def digest_response(
    algorithm: str, ha1: str, *, method: str, uri: str, nonce: str, nc: str, cnonce: str, qop: str
) -> str:
    """The request-digest of RFC 7616 s3.4.1 for qop=auth."""
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
