"""`ca init`: a new CA directory with its CA, a server certificate and an empty store;
`ca issue-ocsp`: a delegated OCSP responder for it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..codec.keytypes import PrivateKey
from ..files import write_file
from . import pkcs11uri
from .keys import DEFAULT_KEY_TYPE, KEY_TYPES, generate_key, signature_hash
from .paths import CaPaths
from .pkcs11key import TOKEN_KEY_TYPES, generate_in_token, module_path_for, token_key
from .pkcs11uri import Pkcs11Uri
from .profile import Request, random_serial, sign_end_entity
from .signer import PinSource
from .store import Store, absolute_location


class CaExistsError(Exception):
    """init_ca refused: the directory holds a CA already."""


def init_ca(
    ca_dir: str | Path,
    hostnames: Sequence[str],
    key_type: str = DEFAULT_KEY_TYPE,
    *,
    ca_name: str = "estcoap CA",
    validity_days: int = 3650,
    server_validity_days: int | None = None,
    ocsp_responder: bool = False,
    key_uri: str | None = None,
    pins: PinSource | None = None,
    store_url: str | None = None,
) -> CaPaths:
    """Create ca_dir with a self-signed CA, a server certificate for hostnames, and a store.

    hostnames become the server certificate's SAN: IP addresses as iPAddress,
    anything else as dNSName. Private keys are written with mode 0600. Refuses
    (CaExistsError) when the directory already has a CA key, certificate or store.
    ocsp_responder: also a delegated OCSP responder (issue_ocsp_responder).
    key_uri: generate the CA key in that PKCS#11 token (RFC 7512 URI; the PIN and module
    from pins) and write key.uri, not ca.key; the server key stays a file (the TLS and
    DTLS stacks need it in memory).
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")
    if not hostnames:
        raise ValueError("at least one hostname is needed for the server certificate")
    if validity_days <= 0:
        raise ValueError("validity_days must be positive")
    san = subject_alt_name(hostnames)
    paths = CaPaths.of(ca_dir)
    existing = [
        p
        for p in (
            paths.ca_cert,
            paths.ca_key,
            paths.key_uri,
            paths.server_cert,
            paths.server_key,
            paths.store,
            paths.store_url,
        )
        if p.exists()
    ]
    if existing:
        raise CaExistsError(
            f"{paths.dir} already holds a CA ({', '.join(p.name for p in existing)}); "
            "refusing to overwrite it"
        )
    uri = _token_uri(key_uri, key_type, pins) if key_uri else None
    # The key first: a token that refuses (PIN, label taken) leaves no directory behind.
    ca_key = generate_key(key_type) if uri is None else _generate_in_token(uri, key_type, pins)
    paths.dir.mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.UTC)
    ca_cert = self_signed_ca(ca_key, ca_name, validity_days=validity_days, now=now)
    server_key = generate_key(key_type)
    server_cert = sign_end_entity(
        Request(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]),
            public_key=server_key.public_key(),
            san=san,
        ),
        ca_cert=ca_cert,
        ca_key=ca_key,
        serial=random_serial(),
        validity_days=server_validity_days or validity_days,
        # clientAuth too: the same identity may authenticate to an upstream EST server.
        extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        now=now,
    )

    written: list[Path] = []
    try:
        if uri is None:
            _write_new(paths.ca_key, _key_pem(ca_key), 0o600, written)
        else:
            _write_new(paths.key_uri, f"{uri}\n".encode(), 0o644, written)
        _write_new(paths.ca_cert, _cert_pem(ca_cert), 0o644, written)
        _write_new(paths.server_key, _key_pem(server_key), 0o600, written)
        _write_new(paths.server_cert, _cert_pem(server_cert) + _cert_pem(ca_cert), 0o644, written)
        location: str | Path = paths.store
        if store_url is not None:
            # Every command finds the store through this file (CaPaths.store_location).
            location = absolute_location(store_url)
            _write_new(paths.store_url, f"{location}\n".encode(), 0o600, written)
        else:
            written.append(paths.store)
        with Store.open(location) as store:
            if not store.is_empty():
                raise CaExistsError(f"the store {store.url} holds records already")
            store.record_issued(server_cert, requester="ca init", operation="init")
    except BaseException:
        # Leave no half-made CA behind: remove what this call wrote.
        for path in written:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        raise
    finally:
        if uri is not None:
            ca_key.token.close()  # type: ignore[union-attr]
    if ocsp_responder:
        issue_ocsp_responder(paths.dir, key_type=key_type, pins=pins)
    return paths


def _token_uri(key_uri: str, key_type: str, pins: PinSource | None) -> Pkcs11Uri:
    """The URI written to key.uri: the one given, with the module path resolved, so that
    serve and the other commands find the library without being told again."""
    if key_type not in TOKEN_KEY_TYPES:
        raise ValueError(
            f"a CA key in a token is one of {', '.join(TOKEN_KEY_TYPES)}, not {key_type}"
        )
    uri = pkcs11uri.parse(key_uri)
    return uri.with_module(module_path_for(uri, (pins or PinSource()).module))


def _generate_in_token(uri: Pkcs11Uri, key_type: str, pins: PinSource | None) -> PrivateKey:
    assert uri.module_path is not None
    pin = (pins or PinSource()).pin(f"token {uri.token!r}")
    public = generate_in_token(uri, uri.module_path, pin, key_type)
    return token_key(uri, uri.module_path, pin, public)


# A delegated responder's certificate carries id-pkix-ocsp-nocheck (RFC 6960 s4.2.2.2.1):
# clients do not check its own revocation, so it lives briefly and is reissued.
OCSP_RESPONDER_DAYS = 30


def issue_ocsp_responder(
    ca_dir: str | Path,
    *,
    name: str = "estcoap OCSP responder",
    key_type: str = DEFAULT_KEY_TYPE,
    validity_days: int = OCSP_RESPONDER_DAYS,
    pins: PinSource | None = None,
) -> x509.Certificate:
    """Issue, record and write (ocsp.pem, ocsp.key 0600, replacing earlier ones) a
    certificate to which the CA delegates signing OCSP responses: id-kp-OCSPSigning and
    id-pkix-ocsp-nocheck. A running serve takes it at its next start."""
    if validity_days <= 0:
        raise ValueError("validity_days must be positive")
    paths = CaPaths.of(ca_dir)
    ca_cert, ca_key = paths.load_ca(pins)
    key = generate_key(key_type)
    cert = sign_end_entity(
        Request(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            public_key=key.public_key(),
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
    # The key first: a certificate without its key would make serve refuse to start.
    write_file(paths.ocsp_key, _key_pem(key), secret=True)
    write_file(paths.ocsp_cert, _cert_pem(cert))
    return cert


def subject_alt_name(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        host = host.strip()
        if not host:
            raise ValueError("empty hostname")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def self_signed_ca(
    key: PrivateKey, name: str, *, validity_days: int, now: dt.datetime | None = None
) -> x509.Certificate:
    """A root CA certificate (pathlen 0: it signs end entities only)."""
    now = now or dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, signature_hash(key))  # type: ignore[arg-type]
    )


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_new(path: Path, data: bytes, mode: int, written: list[Path]) -> None:
    """Create path exclusively with mode (never widening an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    written.append(path)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)  # the umask may have narrowed or the mode must be exact
