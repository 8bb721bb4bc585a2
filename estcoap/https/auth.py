"""Server side of HTTP Basic (RFC 7617) and Digest (RFC 7616) for the HTTPS front.

Digest nonces are stateless: hex(time) + HMAC(secret, time), so any nonce this
process issued is recognised until it expires; an expired nonce with a correct
digest gets `stale=true` so the client retries without asking the user again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .authheaders import (
    DIGEST_ALGORITHMS,
    AuthHeaderError,
    digest_response,
    parse_authorization,
    quote,
)
from .users import REALM, User


@dataclass(frozen=True)
class AuthOutcome:
    user: str | None  # the authenticated user, or None
    reason: str = ""  # why not, for the 401 diagnostic
    stale: bool = False  # a Digest answer to an expired nonce


class HttpAuthenticator:
    def __init__(
        self,
        users: Sequence[User],
        *,
        realm: str = REALM,
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
    ) -> None:
        self._users = {u.name: u for u in users}
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self._secret = secret or secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        # Basic: scrypt is slow on purpose; remember verified headers (by HMAC, not in clear).
        self._basic_ok: OrderedDict[bytes, str] = OrderedDict()
        # Digest: nonce -> nc values seen, to refuse replays while the nonce lives.
        self._seen_nc: OrderedDict[str, set[int]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    # ---- challenges ---------------------------------------------------------

    def _nonce(self, issued: int | None = None, salt: str | None = None) -> str:
        """hex(time).salt.HMAC: unique per challenge, so a fresh nc=1 never looks replayed."""
        ts = f"{int(time.time()) if issued is None else issued:x}"
        salt = salt or secrets.token_hex(6)
        mac = hmac.new(self._secret, f"{ts}.{salt}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{ts}.{salt}.{mac}"

    def _nonce_state(self, nonce: str) -> str:
        """'ok', 'stale' or 'bad'."""
        ts, _, rest = nonce.partition(".")
        salt = rest.partition(".")[0]
        try:
            issued = int(ts, 16)
        except ValueError:
            return "bad"
        if not salt or not hmac.compare_digest(self._nonce(issued, salt), nonce):
            return "bad"
        age = time.time() - issued
        return "ok" if -5 <= age <= self.nonce_lifetime else "stale"

    def challenges(self, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values: Digest SHA-256, Digest MD5, then Basic."""
        nonce = self._nonce()
        out = []
        for algorithm in DIGEST_ALGORITHMS:
            parts = [
                f"realm={quote(self.realm)}",
                'qop="auth"',
                f"algorithm={algorithm}",
                f"nonce={quote(nonce)}",
                f"opaque={quote(self._opaque)}",
            ]
            if stale:
                parts.append("stale=true")
            out.append("Digest " + ", ".join(parts))
        out.append(f'Basic realm={quote(self.realm)}, charset="UTF-8"')
        return out

    # ---- verification -------------------------------------------------------

    def authenticate(self, header: str | None, method: str, uri: str) -> AuthOutcome:
        if not header:
            return AuthOutcome(None, "authentication required")
        try:
            cred = parse_authorization(header)
        except AuthHeaderError as exc:
            return AuthOutcome(None, f"malformed Authorization: {exc}")
        if cred.scheme == "basic":
            return self._basic(cred.token68 or "")
        if cred.scheme == "digest":
            return self._digest(cred.params, method, uri)
        return AuthOutcome(None, f"unsupported authentication scheme {cred.scheme!r}")

    def _basic(self, token: str) -> AuthOutcome:
        key = hmac.new(self._secret, token.encode(), hashlib.sha256).digest()
        cached = self._basic_ok.get(key)
        if cached is not None and cached in self._users:
            self._basic_ok.move_to_end(key)
            return AuthOutcome(cached)
        try:
            name, sep, password = (
                base64.b64decode(token, validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return AuthOutcome(None, "malformed Basic credentials")
        user = self._users.get(name)
        if not sep or user is None or not user.check_password(password):
            return AuthOutcome(None, "wrong user name or password")
        self._basic_ok[key] = name
        if len(self._basic_ok) > 1024:
            self._basic_ok.popitem(last=False)
        return AuthOutcome(name)

    def _digest(self, p: dict[str, str], method: str, uri: str) -> AuthOutcome:
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        missing = [k for k in required if k not in p]
        if missing:
            return AuthOutcome(None, f"Digest credentials lack {', '.join(missing)}")
        algorithm = p.get("algorithm", "MD5").upper()
        if algorithm not in DIGEST_ALGORITHMS:
            return AuthOutcome(None, f"unsupported Digest algorithm {algorithm}")
        if p["qop"] != "auth" or p["realm"] != self.realm:
            return AuthOutcome(None, "Digest realm or qop does not match the challenge")
        if p["uri"] != uri:
            return AuthOutcome(None, "Digest uri does not match the request")
        user = self._users.get(p["username"])
        ha1 = user.digest_ha1(algorithm, self.realm) if user else None
        if ha1 is None:
            return AuthOutcome(None, "wrong user name or password")
        expected = digest_response(
            algorithm,
            ha1,
            method=method,
            uri=uri,
            nonce=p["nonce"],
            nc=p["nc"],
            cnonce=p["cnonce"],
            qop=p["qop"],
        )
        if not hmac.compare_digest(expected, p["response"].lower()):
            return AuthOutcome(None, "wrong user name or password")
        state = self._nonce_state(p["nonce"])
        if state == "bad":
            return AuthOutcome(None, "Digest nonce was not issued by this server")
        if state == "stale":
            return AuthOutcome(None, "Digest nonce expired", stale=True)
        if not self._fresh_nc(p["nonce"], p["nc"]):
            return AuthOutcome(None, "Digest nonce count replayed")
        return AuthOutcome(user.name if user else None)

    def _fresh_nc(self, nonce: str, nc: str) -> bool:
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        seen = self._seen_nc.setdefault(nonce, set())
        self._seen_nc.move_to_end(nonce)
        if count in seen:
            return False
        seen.add(count)
        while len(self._seen_nc) > 4096:
            self._seen_nc.popitem(last=False)
        return True
