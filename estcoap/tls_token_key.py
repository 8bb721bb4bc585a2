"""A TLS private key in a PKCS#11 token, put into a Python ssl.SSLContext.

Why this module exists: Python's ssl loads a private key only from a file
(SSLContext.load_cert_chain), and Debian bookworm's OpenSSL 3.0 has no pkcs11-provider
package, so neither the standard library nor a provider URI can reach a token key. What
does exist is libp11's OpenSSL engine (Debian libengine-pkcs11-openssl,
engines-3/pkcs11.so). This module loads that engine through ctypes in the very OpenSSL
that _ssl is linked to, asks it for the key an RFC 7512 URI names (an EVP_PKEY whose
signatures the token makes), and installs that key and the certificate chain on the
SSL_CTX behind the Python context. The handshake then signs in the token; the key never
leaves it.

What it relies on, each checked before use (a failed check is a TokenKeyError, never a
guess):

* _ssl is dynamically linked to libssl/libcrypto (Debian's python3, pyenv builds):
  symbols are looked up through _ssl's own handle, so they are the copy it uses. A
  Python whose OpenSSL is static, or not 3.x, is refused.
* CPython's PySSLContext keeps its SSL_CTX* as the first field after the object header
  (true from 3.7 to 3.13). The pointer read there is confirmed by asking OpenSSL for that
  SSL_CTX's options and verify mode, changing an option through Python and seeing OpenSSL
  report the change, then restoring it.
* The engine and the key live as long as the process: the SSL_CTX holds a reference to
  the EVP_PKEY (which holds the engine), and the loaded key is kept on the context too.
  The engine is never finished, so the PKCS#11 library is never finalised under another
  user of it (python-pkcs11 for a CA key in the same token).

The PIN is handed to the engine in memory (ENGINE_ctrl_cmd_string "PIN"); it is never
put in a URI, an argument list or a log line, and an error message never repeats it.
"""

from __future__ import annotations

import ctypes
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# What ctypes needs of OpenSSL 3.0 (the constants are its ABI, stable within 3.x).
_OPENSSL_3 = 0x30000000
_SSL_VERIFY_PEER, _SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x01, 0x02
_ENGINE_ID = b"pkcs11"
ENGINE_PACKAGE = "libengine-pkcs11-openssl"


class TokenKeyError(ValueError):
    """The token key could not be put on the TLS context; str() says why in one line."""


@dataclass(frozen=True)
class TokenKeyRef:
    """A TLS key in a token, as the command line gave it: the key's RFC 7512 URI (token,
    object and/or id only: no module path, no PIN), the PKCS#11 library and the PIN."""

    uri: str
    module_path: str
    pin: str = field(repr=False)

    def __str__(self) -> str:  # what an error message may show
        return self.uri


def use_token_key(ctx: ssl.SSLContext, cert_chain: str | Path, key: TokenKeyRef) -> None:
    """Load the certificate chain (PEM file, leaf first) and the token key onto ctx, as
    ctx.load_cert_chain(cert_chain, keyfile) does for a key in a file."""
    lib = _openssl()
    ssl_ctx = _ssl_ctx_pointer(lib, ctx)
    pkey = _engine_key(lib, key)
    with _errors(lib, f"certificate chain {cert_chain}"):
        ok = lib.ssl.SSL_CTX_use_certificate_chain_file(ssl_ctx, str(cert_chain).encode())
        _require(ok == 1)
    mismatch = TokenKeyError(
        f"the token key {key} does not belong to the certificate in {cert_chain} (or its "
        "public key object in the token shares its CKA_ID with another key's)"
    )
    with _errors(lib, f"token key {key}"):
        # OpenSSL compares the key with the certificate already loaded here.
        if lib.ssl.SSL_CTX_use_PrivateKey(ssl_ctx, pkey) != 1:
            reason = _first_error(lib)
            if reason == "key values mismatch":
                raise mismatch
            raise TokenKeyError(f"token key {key}: {reason or 'refused by OpenSSL'}")
        if lib.ssl.SSL_CTX_check_private_key(ssl_ctx) != 1:
            raise mismatch
    # The SSL_CTX now holds the key; keeping it here too ties its life to the context's.
    held = ctx.__dict__.setdefault("_estcoap_token_keys", [])
    held.append(_Loaded(key.uri, pkey))


@dataclass(frozen=True)
class _Loaded:
    uri: str
    pkey: int


# ---- OpenSSL through ctypes -------------------------------------------------------


@dataclass
class _OpenSsl:
    ssl: ctypes.CDLL  # symbols of libssl and libcrypto, as _ssl resolves them
    engine: int | None = None  # the initialised pkcs11 engine, once loaded
    engine_module: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_LIB: _OpenSsl | None = None


def _openssl() -> _OpenSsl:
    global _LIB
    if _LIB is None:
        import _ssl

        if ssl.OPENSSL_VERSION_NUMBER < _OPENSSL_3 or ssl.OPENSSL_VERSION_NUMBER >= 0x40000000:
            raise TokenKeyError(
                f"a TLS key in a token needs OpenSSL 3.x under Python's ssl, not "
                f"{ssl.OPENSSL_VERSION}"
            )
        try:
            # dlsym on _ssl's handle searches _ssl and then the libraries it is linked to:
            # the libssl and libcrypto this interpreter's ssl module really uses.
            lib = ctypes.CDLL(_ssl.__file__)
            lib.SSL_CTX_use_PrivateKey  # noqa: B018 (probe: absent when statically linked)
        except (OSError, AttributeError, TypeError) as exc:
            raise TokenKeyError(
                "a TLS key in a token needs Python's ssl module linked to a shared OpenSSL "
                f"library: {exc}"
            ) from None
        _declare(lib)
        if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
            raise TokenKeyError("the OpenSSL found beside _ssl is not the one it reports")
        _LIB = _OpenSsl(lib)
    return _LIB


def _declare(lib: ctypes.CDLL) -> None:
    p, i, u, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p
    signatures: dict[str, tuple[list[object], object]] = {
        "OpenSSL_version_num": ([], u),
        "ENGINE_by_id": ([s], p),
        "ENGINE_ctrl_cmd_string": ([p, s, s, i], i),
        "ENGINE_init": ([p], i),
        "ENGINE_free": ([p], i),
        "ENGINE_load_private_key": ([p, s, p, p], p),
        "EVP_PKEY_free": ([p], None),
        "SSL_CTX_get_options": ([p], ctypes.c_uint64),
        "SSL_CTX_get_verify_mode": ([p], i),
        "SSL_CTX_use_certificate_chain_file": ([p, s], i),
        "SSL_CTX_use_PrivateKey": ([p, p], i),
        "SSL_CTX_check_private_key": ([p], i),
        "ERR_get_error": ([], u),
        "ERR_error_string_n": ([u, s, ctypes.c_size_t], None),
        "ERR_clear_error": ([], None),
    }
    for name, (argtypes, restype) in signatures.items():
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise TokenKeyError(f"OpenSSL under Python's ssl has no {name}") from None
        function.argtypes = argtypes
        function.restype = restype


def _ssl_ctx_pointer(lib: _OpenSsl, ctx: ssl.SSLContext) -> int:
    """The SSL_CTX* of ctx: read after the object header, then confirmed with OpenSSL."""
    if not isinstance(ctx, ssl.SSLContext):
        raise TypeError("an ssl.SSLContext is needed")
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    refuse = TokenKeyError(
        "cannot reach the OpenSSL context behind Python's ssl.SSLContext in this Python "
        "build: a TLS key in a token is not supported here"
    )
    if not pointer or not _matches(lib, pointer, ctx):
        raise refuse
    # Options could match by chance: flip one through Python and watch OpenSSL see it.
    before = ctx.options
    ctx.options ^= ssl.OP_NO_TICKET
    try:
        seen = _matches(lib, pointer, ctx)
    finally:
        ctx.options = before
    if not seen or not _matches(lib, pointer, ctx):
        raise refuse
    return pointer


def _matches(lib: _OpenSsl, pointer: int, ctx: ssl.SSLContext) -> bool:
    mode = {
        ssl.CERT_NONE: 0,
        ssl.CERT_OPTIONAL: _SSL_VERIFY_PEER,
        ssl.CERT_REQUIRED: _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
    }[ctx.verify_mode]
    return bool(
        lib.ssl.SSL_CTX_get_options(pointer) == int(ctx.options)
        and lib.ssl.SSL_CTX_get_verify_mode(pointer) == mode
    )


def _engine_key(lib: _OpenSsl, key: TokenKeyRef) -> int:
    """The EVP_PKEY of the token key, through libp11's engine (loaded once a process)."""
    with lib.lock:
        engine = _engine(lib, key.module_path)
        with _errors(lib, f"token key {key}"):
            _ctrl(lib, engine, "PIN", key.pin, f"token key {key}")
            pkey = lib.ssl.ENGINE_load_private_key(engine, key.uri.encode(), None, None)
            # Its first error says which: "object not found", "PIN incorrect", ...
            _require(bool(pkey))
    return int(pkey)


def _engine(lib: _OpenSsl, module_path: str) -> int:
    if lib.engine is not None:
        if module_path != lib.engine_module:
            raise TokenKeyError(
                f"one PKCS#11 library per process for TLS keys: {lib.engine_module} is "
                f"loaded, {module_path} was asked for"
            )
        return lib.engine
    with _errors(lib, "the PKCS#11 engine"):
        # ENGINE_by_id loads engines-3/pkcs11.so through OpenSSL's dynamic engine.
        engine = lib.ssl.ENGINE_by_id(_ENGINE_ID)
        if not engine:
            raise TokenKeyError(
                f"OpenSSL's pkcs11 engine is not installed (apt install {ENGINE_PACKAGE})"
            )
        # QUIET: libp11 prints its failures to stderr otherwise; they reach us through
        # OpenSSL's error queue, told in one line.
        _ctrl(lib, engine, "QUIET", None, "the PKCS#11 engine")
        _ctrl(lib, engine, "MODULE_PATH", module_path, "the PKCS#11 engine")
        if lib.ssl.ENGINE_init(engine) != 1:
            lib.ssl.ENGINE_free(engine)
            raise TokenKeyError(f"the PKCS#11 engine could not load {module_path}")
    # ENGINE_by_id's structural reference is kept with the functional one, for good.
    lib.engine, lib.engine_module = int(engine), module_path
    return lib.engine


def _ctrl(lib: _OpenSsl, engine: int, command: str, value: str | None, what: str) -> None:
    argument = value.encode() if value is not None else None
    if lib.ssl.ENGINE_ctrl_cmd_string(engine, command.encode(), argument, 0) != 1:
        raise TokenKeyError(f"{what}: the engine refused its {command} setting")


def _require(ok: bool) -> None:
    if not ok:
        raise TokenKeyError("")


@contextmanager
def _errors(lib: _OpenSsl, what: str) -> Iterator[None]:
    """OpenSSL's error queue, emptied: its first entry explains a failure in what; a
    failure without a message of its own gets that one."""
    lib.ssl.ERR_clear_error()
    try:
        yield
    except TokenKeyError as exc:
        reason = _first_error(lib)
        message = str(exc) or f"{what}: {reason or 'refused by OpenSSL'}"
        raise TokenKeyError(message) from None
    finally:
        lib.ssl.ERR_clear_error()


def _first_error(lib: _OpenSsl) -> str | None:
    code = lib.ssl.ERR_get_error()
    if not code:
        return None
    buffer = ctypes.create_string_buffer(256)
    lib.ssl.ERR_error_string_n(code, buffer, len(buffer))
    # "error:CODE:LIB:FUNC:REASON": the reason is what a person can act on.
    return buffer.value.decode("ascii", "replace").rsplit(":", 1)[-1]
