"""A private key that stays in a PKCS#11 token, usable wherever cryptography takes a key.

cryptography (45 and later) signs certificates, CRLs and OCSP responses with any object
implementing its private-key interfaces, calling its sign() from the builders' Rust code
("Cloud KMS and HSM asymmetric keys" in its documentation). So Pkcs11EcKey and
Pkcs11RsaKey implement those interfaces over python-pkcs11 and the builders, and the
CMS signing of server-generated key packages, work unchanged. The alternative, signing
with a throwaway key and re-assembling each structure around a token signature by hand,
would duplicate three DER encoders and was not needed.

Sessions: one per process, logged in, opened at the first signature and re-opened after
any token error; a forked worker opens its own (a PKCS#11 library is not fork-safe).
Signatures are serialised by a lock: a session runs one operation at a time, and LocalCA
signs both on the event loop and in worker threads.

Failures: any error from the token becomes TokenUnavailable, a ServiceUnavailable (5.03
with Max-Age / 503 with Retry-After for the device), after one log line for the
operator; the session is dropped so the next request re-opens it. Each signature is
verified against the CA certificate's public key before it is used: a token holding a
different key under that label yields no certificate either. Nothing falls back to
another key.

The PIN comes from a file, ESTCOAP_PKCS11_PIN or a prompt (read_pin), never a URI or a
command line, and is never logged.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ..service import ServiceUnavailable
from .pkcs11uri import Pkcs11Uri

log = logging.getLogger(__name__)

PIN_ENV = "ESTCOAP_PKCS11_PIN"
MODULE_ENV = "ESTCOAP_PKCS11_MODULE"
# Seconds a device waits before asking again after a token error: long enough for an
# operator to re-plug a token, short enough that a blip costs little.
RETRY_AFTER = 5
# Key types ca init can generate in a token, by the CA's key-type names (ca/keys.py).
TOKEN_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-3072")
_CURVE_OIDS = {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}
_RSA_MECHANISMS = {
    "sha256": "SHA256_RSA_PKCS",
    "sha384": "SHA384_RSA_PKCS",
    "sha512": "SHA512_RSA_PKCS",
}


class Pkcs11Unavailable(ValueError):
    """python-pkcs11 is not installed (pip install 'estcoap[hsm]'): a setup error, told
    in one line as any other (a ValueError)."""


class TokenUnavailable(ServiceUnavailable):
    """The token could not sign now; the device should try again later."""

    def __init__(self, diagnostic: str = "the CA's signing key is unavailable; try again later"):
        super().__init__(diagnostic, retry_after=RETRY_AFTER)


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError as exc:
        raise Pkcs11Unavailable(
            "PKCS#11 keys need python-pkcs11: pip install 'estcoap[hsm]'"
        ) from exc
    return pkcs11


def read_pin(pin_file: str | Path | None = None, *, what: str = "the token") -> str:
    """The user PIN: from pin_file (first line), else ESTCOAP_PKCS11_PIN, else a prompt
    when there is a terminal. ValueError when none is available."""
    if pin_file is not None:
        try:
            pin = Path(pin_file).read_text().splitlines()[0:1]
        except OSError as exc:
            raise ValueError(f"cannot read the PIN file: {exc}") from exc
        if not pin or not pin[0].strip():
            raise ValueError(f"{pin_file}: the PIN file is empty")
        return pin[0].strip()
    pin_env = os.environ.get(PIN_ENV)
    if pin_env:
        return pin_env
    if sys.stdin.isatty():
        return getpass.getpass(f"PIN for {what}: ")
    raise ValueError(f"{what} needs its user PIN: give --pin-file FILE or set {PIN_ENV}")


def module_path_for(uri: Pkcs11Uri, module: str | None = None) -> str:
    """The PKCS#11 library: the option, else the URI's module-path, else the environment."""
    path = module or uri.module_path or os.environ.get(MODULE_ENV)
    if not path:
        raise ValueError(
            f"which PKCS#11 library? give --pkcs11-module, module-path in the URI or {MODULE_ENV}"
        )
    if not Path(path).is_file():
        raise ValueError(f"PKCS#11 module {path} does not exist")
    return path


_LIBRARIES: dict[str, Any] = {}


def _library(path: str) -> Any:
    # One library object per module per process: a second C_Initialize fails.
    if path not in _LIBRARIES:
        _LIBRARIES[path] = _pkcs11().lib(path)
    return _LIBRARIES[path]


class TokenSession:
    """One logged-in session to the key's token, opened on demand, dropped on error."""

    def __init__(self, uri: Pkcs11Uri, module_path: str, pin: str):
        self.uri = uri
        self.module_path = module_path
        self._pin = pin
        self._lock = threading.Lock()
        self._session: Any = None
        self._key: Any = None
        self._pid = 0
        self.opened = 0  # how many times a session was opened (re-opens show here)

    def __repr__(self) -> str:  # no PIN in any representation
        return f"TokenSession({self.uri})"

    def sign(self, data: bytes, mechanism_name: str) -> bytes:
        with self._lock:
            try:
                key = self._private_key()
                pkcs11 = _pkcs11()
                return bytes(key.sign(data, mechanism=getattr(pkcs11.Mechanism, mechanism_name)))
            except TokenUnavailable:
                raise
            except Exception as exc:
                self._drop()
                self._fail(f"signature failed: {_reason(exc)}")

    def find_key(self) -> None:
        """Open the session and find the key now (startup), so a wrong token, label or
        PIN is told at once (ValueError, with the reason) instead of at the first request."""
        with self._lock:
            try:
                self._private_key()
            except Exception as exc:
                self._drop()
                raise ValueError(f"cannot use the CA key {self.uri}: {_reason(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _private_key(self) -> Any:
        if self._session is not None and self._pid == os.getpid():
            return self._key
        pkcs11 = _pkcs11()
        lib = _library(self.module_path)
        if self._pid and self._pid != os.getpid():
            lib.reinitialize()  # a forked worker: the parent's handles mean nothing here
        token = lib.get_token(token_label=self.uri.token)
        session = _open(token, self._pin)
        try:
            self._key = session.get_key(
                object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=self.uri.object, id=self.uri.id
            )
        except Exception:
            session.close()
            raise
        self._session, self._pid = session, os.getpid()
        self.opened += 1
        if self.opened > 1:
            log.warning("PKCS#11: re-opened the session to token %r", self.uri.token)
        return self._key

    def _drop(self) -> None:
        session, self._session, self._key = self._session, None, None
        if session is not None:
            try:
                session.close()
            except Exception:  # already closed by the token or the library: nothing to free
                pass

    def _fail(self, why: str) -> NoReturn:
        # One line for the operator; the device gets the short TokenUnavailable diagnostic.
        log.error("PKCS#11 key %s unavailable: %s", self.uri, why)
        raise TokenUnavailable()


def _open(token: Any, pin: str, rw: bool = False) -> Any:
    """A logged-in session. A login belongs to the application, not the session: when
    another session of this process (ca init's generation, a second LocalCA) logged in
    already, the new one shares it."""
    try:
        return token.open(user_pin=pin, rw=rw)
    except _pkcs11().exceptions.UserAlreadyLoggedIn:
        return token.open(rw=rw)


def _reason(exc: Exception) -> str:
    """python-pkcs11's errors mostly have empty messages: the class name is the reason."""
    names = {
        "NoSuchToken": "no token with that label (is it plugged in? softhsm2-util --show-slots)",
        "NoSuchKey": "no private key with that label/id in the token",
        "PinIncorrect": "wrong PIN",
        "PinLocked": "the PIN is locked",
    }
    text = str(exc).strip()
    return names.get(type(exc).__name__) or (
        f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    )


class _TokenKeyMixin:
    """What both key types share: no private material ever leaves the token."""

    def private_numbers(self) -> NoReturn:
        raise TypeError("the CA key stays in its PKCS#11 token")

    def private_bytes(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("the CA key stays in its PKCS#11 token")

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Any:
        return self


class Pkcs11EcKey(_TokenKeyMixin, ec.EllipticCurvePrivateKey):
    def __init__(self, token: TokenSession, public: ec.EllipticCurvePublicKey):
        self.token = token
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError("the CA key in the token signs only")

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("only ECDSA signatures")
        algorithm = signature_algorithm.algorithm
        digest = data if isinstance(algorithm, utils.Prehashed) else _hash(algorithm, data)
        # CKM_ECDSA over our own digest: every token has it, the hash-and-sign variants not.
        raw = self.token.sign(digest, "ECDSA")
        half = len(raw) // 2
        signature = utils.encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )
        _check(self.token, lambda: self._public.verify(signature, data, signature_algorithm))
        return signature


class Pkcs11RsaKey(_TokenKeyMixin, rsa.RSAPrivateKey):
    def __init__(self, token: TokenSession, public: rsa.RSAPublicKey):
        self.token = token
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise TypeError("the CA key in the token signs only")

    def sign(
        self,
        data: bytes,
        padding_: padding.AsymmetricPadding,
        algorithm: Any,
    ) -> bytes:
        if not isinstance(padding_, padding.PKCS1v15) or isinstance(algorithm, utils.Prehashed):
            raise TypeError("the token key signs PKCS#1 v1.5 over the message only")
        mechanism = _RSA_MECHANISMS.get(algorithm.name)
        if mechanism is None:
            raise TypeError(f"no PKCS#11 mechanism for RSA with {algorithm.name}")
        signature = self.token.sign(data, mechanism)
        _check(self.token, lambda: self._public.verify(signature, data, padding_, algorithm))
        return signature


def _hash(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _check(token: TokenSession, verify: Any) -> None:
    try:
        verify()
    except InvalidSignature:
        token._fail("the token's signature does not verify with the CA certificate's key")


def token_key(
    uri: Pkcs11Uri, module_path: str, pin: str, public: object
) -> Pkcs11EcKey | Pkcs11RsaKey:
    """The token's key, known by the public key of the CA certificate; the session is
    opened at once so that a wrong token, label or PIN is reported now."""
    session = TokenSession(uri, module_path, pin)
    key: Pkcs11EcKey | Pkcs11RsaKey
    if isinstance(public, ec.EllipticCurvePublicKey):
        key = Pkcs11EcKey(session, public)
    elif isinstance(public, rsa.RSAPublicKey):
        key = Pkcs11RsaKey(session, public)
    else:
        raise ValueError("a token CA key is EC or RSA")
    session.find_key()
    return key


def generate_in_token(uri: Pkcs11Uri, module_path: str, pin: str, key_type: str) -> object:
    """Generate the CA key pair in the token: the private key sensitive, not extractable,
    signing only; returns the public key (a cryptography object)."""
    if key_type not in TOKEN_KEY_TYPES:
        raise ValueError(f"a token key is one of {', '.join(TOKEN_KEY_TYPES)}, not {key_type}")
    pkcs11 = _pkcs11()
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    attribute = pkcs11.Attribute
    private_template = {
        attribute.SENSITIVE: True,
        attribute.EXTRACTABLE: False,
        attribute.SIGN: True,
        attribute.DECRYPT: False,
        attribute.UNWRAP: False,
        attribute.DERIVE: False,
    }
    token = _library(module_path).get_token(token_label=uri.token)
    with _open(token, pin, rw=True) as session:
        # A key with that label or that id, either: the engine that uses TLS keys pairs
        # keys by id (estcoap/tls_token_key.py), and a label must name one key.
        for name, value, what in (
            (attribute.LABEL, uri.object, f"labelled {uri.object!r}"),
            (attribute.ID, uri.id, f"with id {(uri.id or b'').hex()}"),
        ):
            if value and list(
                session.get_objects({attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, name: value})
            ):
                raise ValueError(f"token {uri.token!r} already holds a key {what}")
        names: dict[str, Any] = {"store": True, "label": uri.object, "id": uri.id}
        if key_type in _CURVE_OIDS:
            parameters = session.create_domain_parameters(
                pkcs11.KeyType.EC,
                {attribute.EC_PARAMS: encode_named_curve_parameters(_CURVE_OIDS[key_type])},
                local=True,
            )
            public, _ = parameters.generate_keypair(private_template=private_template, **names)
            return load_der_public_key(encode_ec_public_key(public))
        public, _ = session.generate_keypair(
            pkcs11.KeyType.RSA, 3072, private_template=private_template, **names
        )
        return rsa.RSAPublicNumbers(
            int.from_bytes(public[attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[attribute.MODULUS], "big"),
        ).public_key()


def key_attributes(uri: Pkcs11Uri, module_path: str, pin: str) -> dict[str, bool]:
    """SENSITIVE, EXTRACTABLE, NEVER_EXTRACTABLE, ALWAYS_SENSITIVE of the token's key:
    what `ca show` prints and the tests check."""
    pkcs11 = _pkcs11()
    attribute = pkcs11.Attribute
    token = _library(module_path).get_token(token_label=uri.token)
    with _open(token, pin) as session:
        key = session.get_key(
            object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=uri.object, id=uri.id
        )
        names = ("SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE", "ALWAYS_SENSITIVE")
        return {name.lower(): bool(key[getattr(attribute, name)]) for name in names}


# ---- a key that is not the CA's: a device's key, the OCSP responder's ----------------


class TokenKeyFailed(ValueError):
    """A token key (not the CA's) that cannot sign now; str() says which and why, in one
    line. A device client or an operator command shows it and stops."""


class _NamedKeySession(TokenSession):
    """A TokenSession whose failure names the key and its use instead of "the CA's
    signing key", and raises TokenKeyFailed: a device or a one-shot command has no retry
    for the CA's TokenUnavailable to ask for, nor a log an operator reads."""

    def __init__(self, uri: Pkcs11Uri, module_path: str, pin: str, what: str):
        super().__init__(uri, module_path, pin)
        self.what = what

    def _fail(self, why: str) -> NoReturn:
        raise TokenKeyFailed(f"{self.what} {self.uri}: {why}")


def find_token_key(
    uri: Pkcs11Uri,
    module_path: str,
    pin: str,
    *,
    public: object | None = None,
    what: str = "the token key",
    server: bool = False,
) -> Pkcs11EcKey | Pkcs11RsaKey:
    """A key already in the token, as a cryptography private key that signs in the token.

    public: its public key when a certificate says it (the OCSP responder's); else it is
    read from the token: the public key object with the private key's id (or label), or
    an RSA private key's own modulus. Nothing is generated: a missing key is a ValueError
    naming what and the reason, as is a wrong token or PIN. server: a failure at signing
    time is the CA side's TokenUnavailable (logged; OCSP's tryLater), else TokenKeyFailed."""
    session: TokenSession = (
        TokenSession(uri, module_path, pin)
        if server
        else _NamedKeySession(uri, module_path, pin, what)
    )
    try:
        session.find_key()
        if public is None:
            public = _public_key_in_token(uri, module_path, pin)
    except ValueError as exc:
        cause = exc.__cause__
        reason = _reason(cause) if isinstance(cause, Exception) else str(exc)
        raise ValueError(f"{what} {uri}: {reason}") from None
    except Exception as exc:  # python-pkcs11's own errors, while reading the public key
        raise ValueError(f"{what} {uri}: {_reason(exc)}") from None
    key: Pkcs11EcKey | Pkcs11RsaKey
    if isinstance(public, ec.EllipticCurvePublicKey):
        key = Pkcs11EcKey(session, public)
    elif isinstance(public, rsa.RSAPublicKey):
        key = Pkcs11RsaKey(session, public)
    else:
        raise ValueError(f"{what} {uri}: an EC or RSA key is needed")
    return key


def _public_key_in_token(uri: Pkcs11Uri, module_path: str, pin: str) -> object:
    pkcs11 = _pkcs11()
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    from pkcs11.util.ec import encode_ec_public_key

    attribute = pkcs11.Attribute
    token = _library(module_path).get_token(token_label=uri.token)
    with _open(token, pin) as session:
        private = session.get_key(
            object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=uri.object, id=uri.id
        )
        if private.key_type == pkcs11.KeyType.RSA:
            return rsa.RSAPublicNumbers(
                int.from_bytes(private[attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(private[attribute.MODULUS], "big"),
            ).public_key()
        if private.key_type != pkcs11.KeyType.EC:
            raise ValueError("an EC or RSA key is needed")
        # The pair shares its id (what OpenSSL's engine goes by too), else its label.
        key_id = bytes(private[attribute.ID] or b"")
        template = {attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY}
        template.update({attribute.ID: key_id} if key_id else {attribute.LABEL: private.label})
        found = list(session.get_objects(template))
        if len(found) != 1:
            raise ValueError(
                "no public key object beside the private key (same id) in the token"
                if not found
                else "more than one public key object shares the private key's id"
            )
        return load_der_public_key(encode_ec_public_key(found[0]))


def token_error_reason(exc: Exception) -> str:
    """What went wrong in a token operation, in words (python-pkcs11's messages are mostly
    empty): for one-line errors of the commands that generate keys."""
    return _reason(exc)
