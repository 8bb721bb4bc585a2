"""The delegated OCSP responder's key in a PKCS#11 token (issue 19), and the responder
loaded from a CA directory whichever way its key is kept.

`ca issue-ocsp --key-uri URI` generates the responder's key pair in the token
(sensitive, never extractable, as the CA key of `ca init --key-uri`), signs its
certificate with the CA key and writes ocsp.pem and ocsp.uri: one line, the key's URI
with the module path, no PIN; no ocsp.key. `serve --ocsp` then signs each OCSP response
in the token (a Pkcs11EcKey/Pkcs11RsaKey, the interface the response builder calls), and
a token that cannot sign makes the answer tryLater (RFC 6960 s2.3), as for the CA key.

A directory holding both ocsp.key and ocsp.uri is refused: which key answers must not
depend on which file a command happens to look at first. Each issuance removes the other
one's file, the way a new responder replaces the old.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..codec.keytypes import PrivateKey
from ..files import write_file
from ..service import ServiceUnavailable
from .keys import DEFAULT_KEY_TYPE
from .paths import CaPaths, require_private
from .pkcs11key import find_token_key, generate_in_token, module_path_for, token_error_reason
from .pkcs11uri import Pkcs11Uri, Pkcs11UriError, parse
from .profile import Request, random_serial, sign_end_entity
from .signer import PinSource, read_key_uri
from .store import Store


@dataclass(frozen=True)
class Responder:
    certificate: x509.Certificate
    key: PrivateKey


def issue_token_responder(
    ca_dir: str | Path,
    key_uri: Pkcs11Uri,
    *,
    name: str,
    validity_days: int,
    pins: PinSource,
    key_type: str = DEFAULT_KEY_TYPE,
) -> tuple[x509.Certificate, Pkcs11Uri]:
    """Generate the responder's key in the token, issue and record its certificate
    (id-kp-OCSPSigning, id-pkix-ocsp-nocheck), write ocsp.uri and ocsp.pem and remove an
    earlier ocsp.key. Returns the certificate and the URI written."""
    if validity_days <= 0:
        raise ValueError("validity_days must be positive")
    paths = CaPaths.of(ca_dir)
    ca_cert, ca_key = paths.load_ca(pins)
    # A key of its own id, as `ca issue-ra --key-uri` gives: tools that pair a private key
    # with its public key by id (OpenSSL's pkcs11 engine) would mix up keys of empty ids.
    if key_uri.id is None:
        key_uri = Pkcs11Uri(
            key_uri.token, key_uri.object, secrets.token_bytes(8), key_uri.module_path
        )
    # The library: --pkcs11-module, the URI's module-path, that of the CA key's key.uri
    # (the same token, usually), else ESTCOAP_PKCS11_MODULE.
    ca_key_uri = read_key_uri(paths.dir)
    if key_uri.module_path is None and ca_key_uri is not None and ca_key_uri.module_path:
        key_uri = key_uri.with_module(ca_key_uri.module_path)
    key_uri = key_uri.with_module(module_path_for(key_uri, pins.module))
    assert key_uri.module_path is not None
    pin = pins.pin(f"token {key_uri.token!r}")
    try:
        public = generate_in_token(key_uri, key_uri.module_path, pin, key_type)
    except ValueError:
        raise
    except Exception as exc:  # python-pkcs11's: no such token, wrong PIN, ...
        raise ValueError(f"token {key_uri.token!r}: {token_error_reason(exc)}") from None
    cert = sign_end_entity(
        Request(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            public_key=public,  # type: ignore[arg-type]
            san=None,
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,  # type: ignore[arg-type]
        serial=random_serial(),
        validity_days=validity_days,
        extended_key_usage=(ExtendedKeyUsageOID.OCSP_SIGNING,),
        extensions=(x509.OCSPNoCheck(),),
    )
    with Store.open(paths.store_location(), create=False) as store:
        store.record_issued(cert, requester="ca issue-ocsp", operation="init")
    # The reference first, as ocsp.key is written before ocsp.pem: a certificate without
    # its key would make serve refuse to start.
    write_file(paths.ocsp_key_uri, f"{key_uri}\n".encode())
    write_file(paths.ocsp_cert, cert.public_bytes(Encoding.PEM))
    with contextlib.suppress(FileNotFoundError):
        paths.ocsp_key.unlink()  # the earlier responder's key file: replaced
    return cert, key_uri


def forget_token_responder(ca_dir: str | Path) -> None:
    """After a responder with a key file was issued: the earlier token reference goes (its
    key stays in the token, for the operator to delete)."""
    with contextlib.suppress(FileNotFoundError):
        CaPaths.of(ca_dir).ocsp_key_uri.unlink()


def load_responder(paths: CaPaths, pins: PinSource) -> Responder:
    """The delegated responder's certificate and key: ocsp.key (0600), or the token key
    ocsp.uri names, known by the certificate's public key. FileNotFoundError when there
    is none; ValueError, in one line, for anything else."""
    has_file, has_uri = paths.ocsp_key.exists(), paths.ocsp_key_uri.exists()
    if has_file and has_uri:
        raise ValueError(
            f"{paths.dir} has both ocsp.key and ocsp.uri: which is the responder's key? remove one"
        )
    cert = x509.load_pem_x509_certificate(paths.ocsp_cert.read_bytes())
    if not has_uri:
        require_private(paths.ocsp_key)
        key = load_pem_private_key(paths.ocsp_key.read_bytes(), password=None)
        return Responder(cert, key)  # type: ignore[arg-type]
    try:
        uri = parse(paths.ocsp_key_uri.read_text().strip())
    except Pkcs11UriError as exc:
        raise ValueError(f"{paths.ocsp_key_uri}: {exc}") from None
    module = module_path_for(uri, pins.module)
    pin = pins.pin(f"token {uri.token!r} (the OCSP responder's key)")
    key = find_token_key(
        uri, module, pin, public=cert.public_key(), what="the OCSP responder's key", server=True
    )
    # One signature now, checked against the certificate by the key itself: a token whose
    # object under that name is another key is refused at startup, not at the first query.
    try:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            key.sign(_PROBE, ec.ECDSA(hashes.SHA256()))
        else:
            key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA256())
    except ServiceUnavailable:
        raise ValueError(
            f"the OCSP responder's key {uri} does not sign for {paths.ocsp_cert.name} "
            "(see the log line above)"
        ) from None
    return Responder(cert, key)


_PROBE = b"estcoap: does this token hold the OCSP responder's key?"
