"""Where the CA key is: a PEM file in the CA directory, or an object in a PKCS#11 token.

The CA signs through one small interface, cryptography's private-key interface: the
certificate, CRL and OCSP builders and the CMS signer of key packages take the key and
call its sign(). A file key is cryptography's own object; a token key is a Pkcs11EcKey or
Pkcs11RsaKey (ca/pkcs11key.py) whose sign() goes to the token. So profile.py, crl.py,
ocsp.py and key_delivery.py never ask where the key is, and a token that fails raises
TokenUnavailable (a ServiceUnavailable: 5.03 / 503 with a retry time) out of whichever
of them was signing, never falls back to another key.

A CA directory says which it is: ca.key (the file) or key.uri (one line, the RFC 7512
URI of the token key, with the module path; no PIN). Both at once is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from ..codec.keytypes import PrivateKey
from . import pkcs11uri
from .pkcs11key import Pkcs11EcKey, Pkcs11RsaKey, module_path_for, read_pin, token_key


@dataclass(frozen=True)
class PinSource:
    """Where a token's PIN comes from: pin_file, else ESTCOAP_PKCS11_PIN, else a prompt."""

    pin_file: Path | None = None
    module: str | None = None  # --pkcs11-module, over the URI's module-path

    def pin(self, what: str) -> str:
        return read_pin(self.pin_file, what=what)


def key_uri_path(ca_dir: Path) -> Path:
    return ca_dir / "key.uri"


def read_key_uri(ca_dir: Path) -> pkcs11uri.Pkcs11Uri | None:
    """The token key a CA directory names, or None for a CA whose key is a file."""
    path = key_uri_path(ca_dir)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return pkcs11uri.parse(text)
    except pkcs11uri.Pkcs11UriError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_key_uri(ca_dir: Path, uri: pkcs11uri.Pkcs11Uri) -> Path:
    path = key_uri_path(ca_dir)
    with open(path, "x") as out:  # never over another CA's reference
        out.write(f"{uri}\n")
    return path


def load_ca_key(
    ca_dir: Path, key_file: Path, ca_cert: x509.Certificate, pins: PinSource
) -> PrivateKey:
    """The CA key: from the token key.uri names, else from key_file; checked to be the
    key of ca_cert (a token key by a signature it verifies)."""
    uri = read_key_uri(ca_dir)
    if uri is None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if key.public_key() != ca_cert.public_key():
            raise ValueError(f"{key_file} does not belong to the CA certificate")
        return key  # type: ignore[return-value]
    if key_file.exists():
        raise ValueError(
            f"{ca_dir} has both {key_file.name} and key.uri: which is the CA key? remove one"
        )
    return open_token_key(uri, ca_cert, pins)


def open_token_key(
    uri: pkcs11uri.Pkcs11Uri, ca_cert: x509.Certificate, pins: PinSource
) -> Pkcs11EcKey | Pkcs11RsaKey:
    module = module_path_for(uri, pins.module)
    key = token_key(uri, module, pins.pin(f"token {uri.token!r}"), ca_cert.public_key())
    # One signature now: a token whose object under that name is another key is refused
    # here, at startup, rather than at the first device (the key verifies each signature).
    probe = b"estcoap: does this token hold the CA key?"
    if isinstance(key, Pkcs11EcKey):
        key.sign(probe, ec.ECDSA(hashes.SHA256()))
    else:
        key.sign(probe, padding.PKCS1v15(), hashes.SHA256())
    return key


def describe_key(ca_dir: Path, key_file: Path) -> str:
    """Where the CA key is, for `ca init` and `ca show`: the file, or the token URI."""
    uri = read_key_uri(ca_dir)
    return f"{key_file} (mode 0600)" if uri is None else f"{uri} (in the token)"
