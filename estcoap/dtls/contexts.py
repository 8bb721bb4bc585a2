"""pyOpenSSL contexts for DTLS 1.2 servers and clients (built fully before any Connection)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography import x509
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _lib

from .config import DtlsClientConfig, DtlsServerConfig

DTLS_1_2 = 0xFEFD  # pyOpenSSL exports no DTLS version constants

# Verified against the cookie the server computed itself before creating the Connection.
CookieCheck = Callable[[SSL.Connection, bytes], bool]

# What our hellos list, instead of OpenSSL's defaults (~25 signature algorithms and
# 5 groups, ~70 bytes in each ClientHello, sent twice with the cookie exchange, and
# ~35 more in the CertificateRequest). The suites are all ECDHE-ECDSA, so a server
# signs with ECDSA or EdDSA; clients may also hold RSA keys.
CLIENT_SIGALGS = "ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384:ecdsa_secp521r1_sha512:ed25519"
SERVER_SIGALGS = CLIENT_SIGALGS + ":rsa_pss_rsae_sha256:rsa_pkcs1_sha256"
# X25519 keeps key exchange messages 33 bytes shorter than P-256 (RFC 9148 and RFC 7925
# require secp256r1, which stays offered). A server's list is not on the wire: it
# accepts more.
CLIENT_GROUPS = "X25519:P-256"
SERVER_GROUPS = "X25519:P-256:P-384:P-521"
# SSL_OP_NO_ENCRYPT_THEN_MAC (not exported by pyOpenSSL): the extension means nothing
# to AEAD suites, the only ones offered.
_OP_NO_ENCRYPT_THEN_MAC = 0x00080000


def _base_context(
    method: int, ciphers: str, trust_anchors: Sequence[x509.Certificate]
) -> SSL.Context:
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(DTLS_1_2)
    ctx.set_max_proto_version(DTLS_1_2)
    ctx.set_cipher_list(ciphers.encode())
    # Memory BIOs cannot learn the path MTU; the association sets it.
    ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    # every handshake is full, so tls-unique is always the client's Finished
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_options(_OP_NO_ENCRYPT_THEN_MAC)
    store = ctx.get_cert_store()
    assert store is not None
    for anchor in trust_anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    # an anchor may be an intermediate CA
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    return ctx


# SSL_MODE_NO_AUTO_CHAIN (not exported by pyOpenSSL): send the configured chain only,
# never one OpenSSL builds from the trust store.
_MODE_NO_AUTO_CHAIN = 0x8


def _set_hello_lists(ctx: SSL.Context, sigalgs: str, groups: str) -> None:
    """Shorter hello lists through OpenSSL calls pyOpenSSL does not wrap."""
    native = ctx._context
    if _lib.SSL_CTX_set1_sigalgs_list(native, sigalgs.encode()) != 1:
        raise ValueError(f"OpenSSL refused the signature algorithms {sigalgs}")
    if _lib.SSL_CTX_set1_curves_list(native, groups.encode()) != 1:
        raise ValueError(f"OpenSSL refused the groups {groups}")


def _use_identity(ctx: SSL.Context, chain: Sequence[x509.Certificate], key: object) -> None:
    ctx.use_certificate(chain[0])
    # A self-signed root is useless to the peer, which must already trust it (RFC 5246
    # s7.4.2 lets it be omitted); over a constrained link it is ~400 bytes per handshake.
    for extra in chain[1:]:
        if extra.subject != extra.issuer:
            ctx.add_extra_chain_cert(extra)
    ctx.set_mode(_MODE_NO_AUTO_CHAIN)
    ctx.use_privatekey(key)  # type: ignore[arg-type]
    ctx.check_privatekey()


def _accept_verified(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    return bool(ok)


def server_context(config: DtlsServerConfig, cookie_check: CookieCheck) -> SSL.Context:
    ctx = _base_context(SSL.DTLS_SERVER_METHOD, config.ciphers, config.trust_anchors)
    _set_hello_lists(ctx, SERVER_SIGALGS, SERVER_GROUPS)
    _use_identity(ctx, config.certificate_chain, config.private_key)
    ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    mode = SSL.VERIFY_PEER
    if config.require_client_certificate:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    ctx.set_verify(mode, _accept_verified)
    # DTLSv1_listen needs both callbacks; the cookie was checked before it runs.
    ctx.set_cookie_generate_callback(lambda conn: conn.get_app_data() or b"")
    ctx.set_cookie_verify_callback(cookie_check)
    return ctx


def client_context(
    config: DtlsClientConfig,
    name_check: Callable[[SSL.Connection, crypto.X509], bool],
) -> SSL.Context:
    ctx = _base_context(SSL.DTLS_CLIENT_METHOD, config.ciphers, config.trust_anchors)
    _set_hello_lists(ctx, CLIENT_SIGALGS, CLIENT_GROUPS)
    if config.certificate_chain:
        if config.private_key is None:
            raise ValueError("a client certificate needs its private key")
        _use_identity(ctx, config.certificate_chain, config.private_key)

    def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if not ok:
            return False
        return depth != 0 or name_check(conn, cert)

    ctx.set_verify(SSL.VERIFY_PEER, verify)
    return ctx
