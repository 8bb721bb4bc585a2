"""Server side of HTTP Basic (RFC 7617) and Digest (RFC 7616) for the HTTPS front.

Digest nonces are stateless: hex(time) + HMAC(secret, time), so any nonce this
process issued is recognised until it expires; an expired nonce with a correct
digest gets `stale=true` so the client retries without asking the user again.

Password guessing costs the guesser, not the server's other peers: each attempt first
passes the per-source and per-user failure limits (throttle.py; 429 + Retry-After when
locked out), Basic passwords are checked by scrypt in a bounded worker pool
(passwords.py; 503 + Retry-After when its backlog is full), and a name without a user
costs the same scrypt run or Digest hash as a real one and gets the same answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..codec.authheaders import (
    DIGEST_ALGORITHMS,
    AuthHeaderError,
    digest_response,
    parse_authorization,
    quote,
)
from .passwords import PasswordCheckBusy, PasswordChecker
from .throttle import AuthLimits, FailureLimit, retry_after, source_key, user_key
from .users import REALM, User

# The schemes an operator may offer, by their setting name: (auth-scheme, Digest algorithm).
SCHEMES: dict[str, tuple[str, str | None]] = {
    "digest-sha256": ("digest", "SHA-256"),
    "digest-md5": ("digest", "MD5"),
    "basic": ("basic", None),
}
# MD5 Digest only when asked for: libEST clients need it (see docs/security-auth.md).
DEFAULT_SCHEMES = ("digest-sha256", "basic")


def parse_schemes(text: str) -> tuple[str, ...]:
    """`digest-sha256,basic` -> the offered schemes in the order they are offered."""
    names = tuple(name.strip().lower() for name in text.split(","))
    unknown = [name for name in names if name not in SCHEMES]
    if unknown or not names:
        raise ValueError(
            f"unknown HTTP auth scheme {unknown[0]!r}; choose from {', '.join(SCHEMES)}"
            if unknown
            else "give at least one HTTP auth scheme"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"an HTTP auth scheme is listed twice in {text!r}")
    return names


class AuthTryLater(Exception):
    """Not checked now: throttled (429) or the password pool is full (503); retry later."""

    def __init__(self, status: int, diagnostic: str, retry_after: int) -> None:
        super().__init__(diagnostic)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class AuthOutcome:
    user: str | None  # the authenticated user, or None
    reason: str = ""  # why not, for the 401 diagnostic
    stale: bool = False  # a Digest answer to an expired nonce


@dataclass(frozen=True)
class _Attempt:
    name: str
    where: str  # the source's throttling key
    who: str  # the user name's throttling key
    trusted: bool  # this name authenticated from this source lately


class HttpAuthenticator:
    def __init__(
        self,
        users: Sequence[User],
        *,
        realm: str = REALM,
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
        schemes: Sequence[str] = DEFAULT_SCHEMES,
        limits: AuthLimits | None = None,
        password_workers: int | None = None,
        password_backlog: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        # clock (tests): one clock for nonce ages and failure limits; by default nonces
        # carry the wall clock's time and the limits count on the monotonic clock.
        self._users = {u.name: u for u in users}
        self._wall_clock = clock or time.time
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.schemes = tuple(schemes)
        unknown = [name for name in self.schemes if name not in SCHEMES]
        if unknown or not self.schemes:
            raise ValueError(f"unknown or no HTTP auth schemes: {', '.join(unknown)}")
        self._digest_algorithms = {SCHEMES[n][1] for n in self.schemes if SCHEMES[n][1]}
        self._basic_offered = "basic" in self.schemes
        self._secret = secret or secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        # Basic: scrypt is slow on purpose; remember verified headers (by HMAC, not in clear).
        self._basic_ok: OrderedDict[bytes, str] = OrderedDict()
        # Digest: nonce -> nc values seen, to refuse replays while the nonce lives.
        self._seen_nc: OrderedDict[str, set[int]] = OrderedDict()
        # Digest for a name without a user hashes this instead, at the same cost.
        self._dummy_ha1 = {
            a: hashlib.new(h, secrets.token_bytes(16)).hexdigest()
            for a, h in DIGEST_ALGORITHMS.items()
        }
        self.passwords = PasswordChecker(
            users, workers=password_workers, max_backlog=password_backlog
        )
        limits = limits or AuthLimits()
        self.by_source = FailureLimit(
            "source",
            burst=limits.source_burst,
            refill_per_second=limits.source_per_second,
            clock=clock or time.monotonic,
        )
        self.by_user = FailureLimit(
            "user",
            burst=limits.user_burst,
            refill_per_second=limits.user_per_second,
            clock=clock or time.monotonic,
        )
        # (user, source) pairs that authenticated lately: a flood against a user name from
        # elsewhere does not lock these out (the per-user limit only applies to others).
        self._known_good: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    @property
    def users(self) -> tuple[User, ...]:
        return tuple(self._users.values())

    def set_users(self, users: Sequence[User]) -> None:
        """Replace the users (a reload): remembered Basic verdicts go, so a changed or
        removed password stops working at once."""
        self._users = {u.name: u for u in users}
        self._basic_ok.clear()
        self._known_good.clear()

    def close(self) -> None:
        self.passwords.close()

    # ---- challenges ---------------------------------------------------------

    def _nonce(self, issued: int | None = None, salt: str | None = None) -> str:
        """hex(time).salt.HMAC: unique per challenge, so a fresh nc=1 never looks replayed."""
        ts = f"{int(self._wall_clock()) if issued is None else issued:x}"
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
        age = self._wall_clock() - issued
        return "ok" if -5 <= age <= self.nonce_lifetime else "stale"

    def challenges(self, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per offered scheme, in the configured order."""
        nonce = self._nonce()
        out = []
        for name in self.schemes:
            scheme, algorithm = SCHEMES[name]
            if scheme == "basic":
                out.append(f'Basic realm={quote(self.realm)}, charset="UTF-8"')
                continue
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
        return out

    # ---- verification -------------------------------------------------------

    async def authenticate(
        self, header: str | None, method: str, uri: str, source: str | None = None
    ) -> AuthOutcome:
        """Check an Authorization header from `source` (the peer's address).

        Raises AuthTryLater when the attempt is throttled or the password pool is full.
        """
        if not header:
            return AuthOutcome(None, "authentication required")
        try:
            cred = parse_authorization(header)
        except AuthHeaderError as exc:
            return AuthOutcome(None, f"malformed Authorization: {exc}")
        if cred.scheme == "basic" and self._basic_offered:
            return await self._basic(cred.token68 or "", source)
        if cred.scheme == "digest" and self._digest_algorithms:
            return self._digest(cred.params, method, uri, source)
        return AuthOutcome(None, f"authentication scheme {cred.scheme!r} is not offered")

    # ---- failure limits -----------------------------------------------------

    def _admit(self, source: str | None, name: str) -> _Attempt:
        """Let one password check start, or raise AuthTryLater(429) while locked out.

        The tokens are taken now (so concurrent guesses cannot overrun the limit) and
        given back by _settle when the password was right: only failures spend them.
        """
        where = source_key(source)
        attempt = _Attempt(name, where, user_key(name), (name, where) in self._known_good)
        source_wait = self.by_source.wait(attempt.where)
        user_wait = 0.0 if attempt.trusted else self.by_user.wait(attempt.who)
        if source_wait or user_wait:
            limit, whose = (
                (self.by_source, "from this address")
                if source_wait
                else (self.by_user, "for this user name")
            )
            limit.refuse()
            seconds = retry_after(max(source_wait, user_wait))
            raise AuthTryLater(
                429,
                f"too many failed authentication attempts {whose}; retry in {seconds} s",
                seconds,
            )
        self.by_source.take(attempt.where)
        if not attempt.trusted:
            self.by_user.take(attempt.who)
        return attempt

    def _settle(self, attempt: _Attempt, proven: bool | None) -> None:
        """proven: the password was right (True), wrong (False), or never checked (None)."""
        if proven is False:
            self.by_source.failed(attempt.where)
            if not attempt.trusted:
                self.by_user.failed(attempt.who)
            return
        self.by_source.give_back(attempt.where)
        if not attempt.trusted:
            self.by_user.give_back(attempt.who)
        if proven:
            pair = (attempt.name, attempt.where)
            self._known_good[pair] = None
            self._known_good.move_to_end(pair)
            if len(self._known_good) > 4096:
                self._known_good.popitem(last=False)

    async def _basic(self, token: str, source: str | None) -> AuthOutcome:
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
        if not sep:
            return AuthOutcome(None, "malformed Basic credentials: no ':' after the user name")
        user = self._users.get(name)
        attempt = self._admit(source, name)
        proven: bool | None = None
        try:
            proven = await self.passwords.check(user, password)
        except PasswordCheckBusy as exc:
            raise AuthTryLater(503, str(exc), exc.retry_after) from None
        finally:
            self._settle(attempt, proven)
        if not proven:
            return AuthOutcome(None, "wrong user name or password")
        self._basic_ok[key] = name
        if len(self._basic_ok) > 1024:
            self._basic_ok.popitem(last=False)
        return AuthOutcome(name)

    def _digest(self, p: dict[str, str], method: str, uri: str, source: str | None) -> AuthOutcome:
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        missing = [k for k in required if k not in p]
        if missing:
            return AuthOutcome(None, f"Digest credentials lack {', '.join(missing)}")
        algorithm = p.get("algorithm", "MD5").upper()
        if algorithm not in self._digest_algorithms:
            return AuthOutcome(None, f"Digest algorithm {algorithm} is not offered")
        if p["qop"] != "auth" or p["realm"] != self.realm:
            return AuthOutcome(None, "Digest realm or qop does not match the challenge")
        if p["uri"] != uri:
            return AuthOutcome(None, "Digest uri does not match the request")
        user = self._users.get(p["username"])
        # A name without a user (or without HA1 for this realm) is hashed against a dummy
        # HA1: the same work and the same answer as a wrong password.
        ha1 = (user.digest_ha1(algorithm, self.realm) if user else None) or self._dummy_ha1[
            algorithm
        ]
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
        # Digest is cheap, but a guess is a guess: it passes the same failure limits.
        attempt = self._admit(source, p["username"])
        proven = hmac.compare_digest(expected, p["response"].lower()) and user is not None
        self._settle(attempt, proven)
        if not proven or user is None:
            return AuthOutcome(None, "wrong user name or password")
        state = self._nonce_state(p["nonce"])
        if state == "bad":
            return AuthOutcome(None, "Digest nonce was not issued by this server")
        if state == "stale":
            return AuthOutcome(None, "Digest nonce expired", stale=True)
        if not self._fresh_nc(p["nonce"], p["nc"]):
            return AuthOutcome(None, "Digest nonce count replayed")
        return AuthOutcome(user.name)

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
