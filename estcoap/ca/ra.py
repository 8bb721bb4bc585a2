"""`ca issue-ra`: a Registration Authority certificate for a gateway or proxy in front of this CA.

RFC 7030 s3.7: an RA authenticates to the EST server with a certificate carrying
id-kp-cmcRA; the server then trusts the RA's checks of the device (identity, PoP).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..trust import ID_KP_CMC_RA
from .create import subject_alt_name
from .keys import DEFAULT_KEY_TYPE, PrivateKey, generate_key
from .paths import CaPaths
from .profile import Request, random_serial, sign_end_entity
from .store import Store


@dataclass(frozen=True)
class RaIdentity:
    certificate: x509.Certificate
    key: PrivateKey
    ca_certificate: x509.Certificate


def issue_ra(
    ca_dir: str | Path,
    *,
    name: str = "estcoap RA",
    hostnames: Sequence[str] = (),
    key_type: str = DEFAULT_KEY_TYPE,
    validity_days: int = 365,
) -> RaIdentity:
    """Issue and record an RA certificate (clientAuth + id-kp-cmcRA).

    hostnames, when given, also make it a server certificate (serverAuth and a SAN),
    so one identity can serve devices over DTLS and authenticate upstream.
    """
    if validity_days <= 0:
        raise ValueError("validity_days must be positive")
    paths = CaPaths.of(ca_dir)
    try:
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc.filename}: no CA here (run 'estcoap ca init' first)"
        ) from exc
    key = generate_key(key_type)
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH, ID_KP_CMC_RA)
    if hostnames:
        usages = (ExtendedKeyUsageOID.SERVER_AUTH, *usages)
    cert = sign_end_entity(
        Request(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            public_key=key.public_key(),  # type: ignore[arg-type]
            san=subject_alt_name(hostnames) if hostnames else None,
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,  # type: ignore[arg-type]
        serial=random_serial(),
        validity_days=validity_days,
        extended_key_usage=usages,
    )
    with Store.open(paths.store, create=False) as store:
        # Recorded like the server certificate of `ca init`: issued by the operator, not via EST.
        store.record_issued(cert, requester="ca issue-ra", operation="init")
    return RaIdentity(cert, key, ca_cert)


def write_ra(identity: RaIdentity, cert_path: str | Path, key_path: str | Path) -> None:
    """The certificate (then the CA's, as a chain) and the key (mode 0600, never overwritten)."""
    key_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    chain = (identity.certificate, identity.ca_certificate)
    Path(cert_path).write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    )
