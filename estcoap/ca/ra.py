"""`ca issue-ra`: a Registration Authority certificate for a gateway or proxy in front of this CA.

RFC 7030 s3.7: an RA authenticates to the EST server with a certificate carrying
id-kp-cmcRA; the server then trusts the RA's checks of the device (identity, PoP).

The RA's key is a file, or (key_uri) generated in a PKCS#11 token, sensitive and never
extractable, for a gateway or proxy that uses it there (`--ra-key pkcs11:...`, through
OpenSSL's pkcs11 engine: estcoap/tls_token_key.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..codec.keytypes import PrivateKey
from ..files import certificates_pem, private_key_pem, write_secret
from ..trust import ID_KP_CMC_RA
from .create import subject_alt_name
from .keys import DEFAULT_KEY_TYPE, generate_key
from .paths import CaPaths
from .pkcs11key import generate_in_token, module_path_for
from .pkcs11uri import Pkcs11Uri
from .profile import Request, random_serial, sign_end_entity
from .signer import PinSource
from .store import Store


@dataclass(frozen=True)
class RaIdentity:
    certificate: x509.Certificate
    key: PrivateKey | None  # None: the key is in a token, at key_uri
    ca_certificate: x509.Certificate
    key_uri: Pkcs11Uri | None = None


def issue_ra(
    ca_dir: str | Path,
    *,
    name: str = "estcoap RA",
    hostnames: Sequence[str] = (),
    key_type: str = DEFAULT_KEY_TYPE,
    validity_days: int = 365,
    pins: PinSource | None = None,
    key_uri: Pkcs11Uri | None = None,
) -> RaIdentity:
    """Issue and record an RA certificate (clientAuth + id-kp-cmcRA).

    hostnames, when given, also make it a server certificate (serverAuth and a SAN),
    so one identity can serve devices over DTLS and authenticate upstream.
    key_uri: generate the key in that token (its PIN and library from pins) instead.
    """
    if validity_days <= 0:
        raise ValueError("validity_days must be positive")
    paths = CaPaths.of(ca_dir)
    ca_cert, ca_key = paths.load_ca(pins)
    key: PrivateKey | None = None
    public_key: object
    if key_uri is None:
        key = generate_key(key_type)
        public_key = key.public_key()
    else:
        key_uri, public_key = _generate_in_token(key_uri, key_type, pins or PinSource())
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH, ID_KP_CMC_RA)
    if hostnames:
        usages = (ExtendedKeyUsageOID.SERVER_AUTH, *usages)
    cert = sign_end_entity(
        Request(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            public_key=public_key,  # type: ignore[arg-type]
            san=subject_alt_name(hostnames) if hostnames else None,
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,  # type: ignore[arg-type]
        serial=random_serial(),
        validity_days=validity_days,
        extended_key_usage=usages,
    )
    with Store.open(paths.store_location(), create=False) as store:
        # Recorded like the server certificate of `ca init`: issued by the operator, not via EST.
        store.record_issued(cert, requester="ca issue-ra", operation="init")
    return RaIdentity(cert, key, ca_cert, key_uri)


def _generate_in_token(uri: Pkcs11Uri, key_type: str, pins: PinSource) -> tuple[Pkcs11Uri, object]:
    """The key pair generated in the token; the URI with its CKA_ID. A key without an id
    of its own gets a random one: OpenSSL's pkcs11 engine pairs a private key with the
    public key of the same id, and every key ca init generates has the empty id."""
    if uri.id is None:
        uri = Pkcs11Uri(uri.token, uri.object, secrets.token_bytes(8), uri.module_path)
    module = module_path_for(uri, pins.module)
    public = generate_in_token(uri, module, pins.pin(f"token {uri.token!r}"), key_type)
    return Pkcs11Uri(uri.token, uri.object, uri.id), public


def write_ra(identity: RaIdentity, cert_path: str | Path, key_path: str | Path | None) -> None:
    """The certificate (then the CA's, as a chain) and the key (mode 0600, never
    overwritten) unless it is in a token."""
    if identity.key is not None:
        assert key_path is not None
        write_secret(key_path, private_key_pem(identity.key), overwrite=False)
    Path(cert_path).write_bytes(certificates_pem((identity.certificate, identity.ca_certificate)))
