"""EstClient: the EST logic of a device, over https:// or coaps://.

The URL scheme picks the transport; everything here (formats, proof-of-possession,
retrying a pending request, checking what came back) is the same for both.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..codec import keypackage, pkcs7, spki
from ..codec.csrattrs import (
    CsrAttrItem,
    KeyRequest,
    decode_csrattrs,
    requested_key,
    requested_signature_hash,
    requested_template,
    wants_challenge_password,
)
from ..codec.errors import CodecError
from ..codec.keytypes import PrivateKey
from ..codec.multipart import KeygenParts
from ..codec.names import parse_name
from ..codec.operations import (
    EST_WELL_KNOWN,
    ContentFormat,
    Operation,
    OperationSpec,
    is_label,
    spec_for,
)
from ..codec.pkcs10 import add_attributes, build_csr
from ..revocation import CrlError
from ..tls_token_key import TokenKeyRef
from ..trust import ID_KP_CMC_RA, chains_to, has_eku, is_ca
from .server_revocation import ServerRevocationCheck
from .transport import ChannelBindingTransport, Reply, ReplyKind, ServerCheck, TransportError

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_PENDING_WAIT = 300.0
DEFAULT_MAX_PENDING_ATTEMPTS = 20


class EstClientError(Exception):
    """An EST exchange failed. str() is one line: what failed, then the server's diagnostic."""

    def __init__(self, what: str, *, status: str = "", diagnostic: str = "") -> None:
        self.what = what
        self.status = status
        self.diagnostic = diagnostic
        detail = " ".join(p for p in (status, diagnostic) if p)
        super().__init__(f"{what}: {detail}" if detail else what)


class EstPendingTimeout(EstClientError):
    """The server kept answering 'pending' beyond max_pending_wait / max attempts."""


# Why a client key in a token cannot authenticate DTLS, for whoever refuses it.
TOKEN_KEY_NO_DTLS = (
    "a client key in a PKCS#11 token cannot authenticate DTLS: pyOpenSSL runs its own "
    "OpenSSL, which has no PKCS#11 engine; over coaps:// the client key is a file "
    "(docs/hsm.md)"
)


class CredentialError(ValueError):
    """A certificate, key or pin that cannot be used. str() is one line naming the file
    and what is wrong with it."""


@dataclass(frozen=True)
class Provisioned:
    certificate: x509.Certificate
    private_key: PrivateKey
    chain: list[x509.Certificate]  # issued certificate first
    ca_certificates: list[x509.Certificate]


# ---- inputs -------------------------------------------------------------------


def load_certificates(source: str | Path | x509.Certificate | Sequence[x509.Certificate]):
    """Certificates from a PEM or DER file path, one certificate or a list."""
    if isinstance(source, x509.Certificate):
        return [source]
    if isinstance(source, str | Path):
        path = Path(source)
        data = _credential_bytes(path)
        if b"-----BEGIN" in data:
            if b"-----BEGIN CERTIFICATE-----" not in data:
                raise CredentialError(f"{path}: no certificate in it ({_pem_labels(data)})")
            try:
                return x509.load_pem_x509_certificates(data)
            except ValueError:
                raise CredentialError(
                    f"{path}: a PEM certificate in it is damaged or cut short"
                ) from None
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise CredentialError(f"{path}: not a certificate (neither PEM nor DER)") from None
    return list(source)


def load_private_key(source: str | Path | PrivateKey) -> PrivateKey:
    """An unencrypted private key from a PEM or DER file path, or the key itself."""
    if not isinstance(source, str | Path):
        return source
    path = Path(source)
    data = _credential_bytes(path)
    pem = b"-----BEGIN" in data
    if pem and b"PRIVATE KEY-----" not in data:
        raise CredentialError(f"{path}: no private key in it ({_pem_labels(data)})")
    try:
        if pem:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:  # cryptography's word for "this key needs a password"
        raise CredentialError(f"{path}: the key is encrypted; give it unencrypted") from None
    except UnsupportedAlgorithm:
        raise CredentialError(f"{path}: a key of a type we cannot use") from None
    except ValueError:
        what = (
            "the PEM private key in it is damaged or cut short"
            if pem
            else ("not a private key (neither PEM nor DER)")
        )
        raise CredentialError(f"{path}: {what}") from None
    if not isinstance(key, PrivateKey | ed448.Ed448PrivateKey):
        raise CredentialError(f"{path}: a {type(key).__name__} cannot sign for EST")
    return key  # type: ignore[return-value]


def _credential_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not data.strip():
        raise CredentialError(f"{path}: the file is empty")
    return data


def _pem_labels(data: bytes) -> str:
    """What a PEM file holds instead, e.g. "it holds a PEM PRIVATE KEY"."""
    labels = []
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"-----BEGIN ") and line.endswith(b"-----"):
            label = line[11:-5].decode("ascii", "replace")
            if label not in labels:
                labels.append(label)
    return "it holds a PEM " + " and a ".join(labels) if labels else "no PEM block in it"


def check_key_matches(
    certificate: x509.Certificate,
    key: PrivateKeyTypes,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
) -> None:
    """Refuse a client identity whose key is not the certificate's (OpenSSL would say
    only "key values mismatch", deep inside the TLS or DTLS setup)."""
    if spki.public_key_der(certificate) != spki.public_key_der(key):
        key_text = f"the key in {key_file}" if key_file else "the given key"
        cert_text = f"the certificate in {cert_file}" if cert_file else "the given certificate"
        raise CredentialError(f"{key_text} does not belong to {cert_text}")


def parse_subject(subject: str | x509.Name) -> x509.Name:
    """An RFC 4514 string such as "serialNumber=dev1,CN=dev1,O=Acme" (codec/names.py:
    the attribute names people type). Raises NameSyntaxError, a ValueError of one line."""
    if isinstance(subject, x509.Name):
        return subject
    return parse_name(subject)


def template_subject(attrs: Sequence[CsrAttrItem]) -> x509.Name:
    """The subject a CSR attributes template gives in full; EstClientError otherwise."""
    try:
        template = requested_template(attrs)
        blank = template.blank_subject_oids() if template is not None else ()
        if template is not None and template.subject and not blank:
            return template.fill_subject({})
    except CodecError as exc:
        raise EstClientError("csrattrs: unusable template", diagnostic=str(exc)) from exc
    if blank:
        missing = ", ".join(oid.dotted_string for oid in blank)
        raise EstClientError(f"give a subject: the server's template leaves {missing} to fill")
    raise EstClientError("give a subject: the server's CSR attributes name none")


def generate_key(request: KeyRequest | None = None) -> PrivateKey:
    """A key as csrattrs asks (EC curve, RSA size, Ed25519); P-256 otherwise."""
    if request is not None:
        if request.kind == "rsa":
            return rsa.generate_private_key(65537, request.bits or 2048)
        if request.kind == "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        if request.kind == "ed448":
            return ed448.Ed448PrivateKey.generate()  # type: ignore[return-value]
        if request.kind == "ec":
            return ec.generate_private_key(request.ec_curve() or ec.SECP256R1())
    return ec.generate_private_key(ec.SECP256R1())


def _is_eddsa(key: object) -> bool:
    """EdDSA signs without a separate hash: a requested hash does not apply."""
    return isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normalise_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as lower-case hex: 64 hex digits, in either case, with or
    without colons or spaces between bytes, optionally after "sha256 Fingerprint=" as
    `openssl x509 -fingerprint` prints it."""
    digits = "".join(text.rpartition("=")[2].split()).replace(":", "").lower()
    if len(digits) != 64 or any(ch not in "0123456789abcdef" for ch in digits):
        raise CredentialError(
            f"fingerprint {text!r} is not a SHA-256 fingerprint: give its 64 hex digits"
        )
    return digits


# The content ciphers we take, preferred first (SMIMECapabilities, RFC 8551 s2.5.2).
_CONTENT_CIPHERS = (keypackage.AES256_CBC, keypackage.AES128_CBC)


def _ask_for_sealed_key(
    csr: bytes, key: PrivateKey, shared_key: keypackage.SharedKey | None
) -> bytes:
    """The CSR, asking for the generated key enveloped for the CSR's own key (RFC 7030
    s4.4.1.2) or, given one, with a key shared in advance (s4.4.1.1)."""
    if shared_key is not None:
        named = keypackage.decrypt_key_id_attribute(shared_key.key_id)
    else:
        try:
            recipient = keypackage.Recipient.of_public_key(key.public_key())
        except CodecError as exc:
            raise EstClientError(
                "serverkeygen: this key cannot receive an encrypted key", diagnostic=str(exc)
            ) from exc
        named = keypackage.asymmetric_decrypt_key_id_attribute(recipient.key_id)
    attributes = [named, keypackage.smime_capabilities_attribute(_CONTENT_CIPHERS)]
    return add_attributes(csr, key, attributes)


class _BoundCsr:
    """A CSR whose challengePassword is base64(tls-unique) of the connection that carries
    it (RFC 7030 s3.5). A request that goes out on a new connection (the server closed it
    after a 401, a kept-alive connection had gone, a pending retry) gets it re-made and
    signed again for that connection: the old one would fail proof-of-possession."""

    def __init__(self, build: Callable[[bytes | None], bytes], tls_unique: bytes) -> None:
        self._build = build
        self._last: tuple[bytes, bytes] | None = None
        self.first = self(tls_unique)  # for matching the answer: the key is the same in each

    def __call__(self, tls_unique: bytes) -> bytes:
        if self._last is None or self._last[0] != tls_unique:
            self._last = (tls_unique, self._build(base64.b64encode(tls_unique)))
        return self._last[1]


# ---- the client ------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int | None
    root: str
    label: str | None


def parse_url(url: str) -> _Endpoint:
    """scheme://host[:port][/.well-known/est[/label]]; a bare host means https."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("https", "coaps") or not parts.hostname:
        raise ValueError(f"not an https:// or coaps:// EST URL: {url}")
    path = parts.path.rstrip("/")
    label = None
    # coaps:// without a path: the transport discovers the root (RFC 9148 s4.1), so
    # servers rooted elsewhere (e.g. /est) work too.
    root = path or ("" if parts.scheme == "coaps" else EST_WELL_KNOWN)
    if path.startswith(EST_WELL_KNOWN + "/"):
        rest = path[len(EST_WELL_KNOWN) + 1 :]
        if rest and not is_label(rest):
            raise ValueError(f"give the EST base URL (…/.well-known/est[/label]), not {url}")
        root, label = EST_WELL_KNOWN, rest
    return _Endpoint(parts.scheme, parts.hostname, parts.port, root, label)


class EstClient:
    """An EST client. Use `async with EstClient(url, trust=...) as est:`.

    trust: the explicit trust anchors (PEM path or certificates); None means the
    system's, unless bootstrap=True: then /cacerts is fetched without verifying the
    server, checked against `fingerprint` when given, and kept as the new anchors
    (RFC 7030 s4.1.1). cert/key: a client certificate (PEM path or objects).
    crls: CRL files (PEM or DER) of the trust anchors; check_revocation: follow the server
    certificate's CRL distribution point or OCSP responder. Either refuses a revoked server
    after the handshake, before anything is sent (client/server_revocation.py).
    psk: (identity, key) for certificate-less first enrollment over coaps:// with PSK DTLS
    (RFC 7030 s3.3.3; the `psk` extra): the key authenticates both ends, so neither a
    client certificate nor trust anchors are needed (docs/psk.md).
    ack_timeout: coaps:// with a certificate, the first CoAP retransmission timeout
    (ACK_TIMEOUT, RFC 7252 s4.8) in seconds; None keeps the RFC's 2 s.
    tls_key: when the client key is in a PKCS#11 token, the same key as the TLS stack
    reaches it (OpenSSL's pkcs11 engine, estcoap/tls_token_key.py); key is then the
    object that signs CSRs through the token. https:// only: the DTLS stack has no engines.
    """

    def __init__(
        self,
        url: str,
        *,
        trust: str | Path | Sequence[x509.Certificate] | None = None,
        cert: str | Path | x509.Certificate | Sequence[x509.Certificate] | None = None,
        key: str | Path | PrivateKey | None = None,
        user: str | None = None,
        password: str | None = None,
        bootstrap: bool = False,
        fingerprint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_pending_wait: float = DEFAULT_MAX_PENDING_WAIT,
        max_pending_attempts: int = DEFAULT_MAX_PENDING_ATTEMPTS,
        tls12: bool = False,
        on_pending: Callable[[int], None] | None = None,
        server_name: str | None = None,
        block_size: int | None = None,
        handshake_timeout: float | None = None,
        single_certificate: bool = False,
        crls: Sequence[str | Path] = (),
        check_revocation: bool = False,
        psk: tuple[str, bytes] | None = None,
        ack_timeout: float | None = None,
        tls_key: TokenKeyRef | None = None,
    ) -> None:
        self.endpoint = parse_url(url)
        if psk is not None and self.endpoint.scheme != "coaps":
            raise ValueError("a PSK is for coaps:// (PSK DTLS); over https use a certificate")
        if tls_key is not None and self.endpoint.scheme == "coaps":
            raise ValueError(TOKEN_KEY_NO_DTLS)
        self.tls_key = tls_key
        self.psk = psk
        self.label = self.endpoint.label
        self.trust = load_certificates(trust) if trust is not None else None
        self.cert_chain = load_certificates(cert) if cert is not None else []
        self.key = load_private_key(key) if key is not None else None
        if self.cert_chain and self.key is None:
            raise ValueError("a client certificate needs its private key")
        if self.cert_chain and self.key is not None:
            check_key_matches(
                self.cert_chain[0],
                self.key,
                cert if isinstance(cert, str | Path) else None,
                key if isinstance(key, str | Path) else None,
            )
        self.user, self.password = user, password
        self.bootstrap = bootstrap
        self.pinned_fingerprint = (
            normalise_fingerprint(fingerprint) if fingerprint is not None else None
        )
        self.bootstrap_fingerprint: str | None = None  # set after a bootstrap /cacerts
        self.ca_certificates: list[x509.Certificate] = []
        self.timeout = timeout
        self.max_pending_wait = max_pending_wait
        self.max_pending_attempts = max_pending_attempts
        self.tls12 = tls12
        self.on_pending = on_pending
        # For a relay or an address in the URL: the name the server certificate must carry.
        self.server_name = server_name
        self.block_size = block_size  # coaps: the largest Block1/Block2 size to use
        self.handshake_timeout = handshake_timeout  # coaps: DTLS handshake bound (else timeout)
        self.ack_timeout = ack_timeout  # coaps: CoAP ACK_TIMEOUT (RFC 7252 s4.8), None = 2 s
        self._transport: ChannelBindingTransport | None = None
        # coaps: ask for the issued certificate alone (287) rather than 281, which every
        # server has (RFC 9148 s4.3); cleared when this server refuses 287.
        self._single_certificate = single_certificate
        self.crls = list(crls)
        self.check_revocation = check_revocation
        self._server_check: ServerRevocationCheck | None = None

    async def __aenter__(self) -> EstClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._transport is not None:
            transport, self._transport = self._transport, None
            await transport.close()

    # ---- transports ------------------------------------------------------------

    def _new_transport(self, *, verify: bool = True) -> ChannelBindingTransport:
        ep = self.endpoint
        if ep.scheme == "coaps" and self.psk is not None:
            from .psk_transport import PskCoapsTransport

            identity, psk_key = self.psk
            return PskCoapsTransport(
                self._coaps_url(),
                identity=identity,
                key=psk_key,
                timeout=self.timeout,
                block_size=self.block_size,
                handshake_timeout=self.handshake_timeout,
            )
        if ep.scheme == "coaps":
            from .coaps_transport import CoapsTransport

            if not self.cert_chain or self.key is None:
                raise EstClientError(
                    "EST-coaps needs a client certificate",
                    diagnostic="RFC 9148 s3 requires one: give the device's IDevID (or a "
                    "certificate EST issued) and its key",
                )

            return CoapsTransport(
                self._coaps_url(),
                server_check=self._revocation_check() if verify else None,
                trust_anchors=self.trust or [],
                certificate_chain=self.cert_chain,
                private_key=self.key,
                timeout=self.timeout,
                server_name=self.server_name,
                block_size=self.block_size,
                handshake_timeout=self.handshake_timeout,
                ack_timeout=self.ack_timeout,
            )
        from .https_transport import HttpsTransport, client_ssl_context

        ctx = client_ssl_context(
            trust=self.trust,
            verify=verify,
            cert_chain=self.cert_chain,
            key=self.tls_key or self.key,
            tls12_only=self.tls12,
        )
        return HttpsTransport(
            ep.host,
            ep.port or 443,
            root=ep.root,
            ssl_context=ctx,
            server_name=self.server_name,
            user=self.user,
            password=self.password,
            timeout=self.timeout,
            server_check=self._revocation_check() if verify else None,
        )

    def _coaps_url(self) -> str:
        ep = self.endpoint
        host = f"[{ep.host}]" if ":" in ep.host else ep.host
        port = f":{ep.port}" if ep.port else ""
        return f"coaps://{host}{port}{ep.root}"

    def _revocation_check(self) -> ServerCheck | None:
        """The server revocation check, built once the anchors are known (after bootstrap)."""
        if not self.crls and not self.check_revocation:
            return None
        if self._server_check is None:
            if not self.trust:
                raise EstClientError(
                    "checking the server's revocation needs explicit trust anchors (--trust)"
                )
            try:
                self._server_check = ServerRevocationCheck(
                    self.trust, self.crls, online=self.check_revocation, timeout=self.timeout
                )
            except CrlError as exc:
                raise EstClientError("unusable CRL", diagnostic=str(exc)) from None
        return self._server_check.check

    async def transport(self) -> ChannelBindingTransport:
        if self._transport is None:
            if self.trust is None and self.bootstrap:
                await self._bootstrap()
            self._transport = self._new_transport()
        return self._transport

    async def _bootstrap(self) -> None:
        if self.endpoint.scheme != "https":
            raise EstClientError("bootstrap needs https: EST-coaps needs explicit trust anchors")
        transport = self._new_transport(verify=False)
        try:
            reply = await self._exchange(transport, spec_for(Operation.CACERTS), None)
        finally:
            await transport.close()
        certs = self._certificates(reply, "cacerts")
        if self.pinned_fingerprint is not None:
            match = [c for c in certs if fingerprint(c) == self.pinned_fingerprint]
            if not match:
                got = ", ".join(fingerprint(c) for c in certs)
                raise EstClientError(
                    "bootstrap refused",
                    diagnostic=f"no CA certificate has the pinned "
                    f"SHA-256 fingerprint {self.pinned_fingerprint} (got {got})",
                )
        roots = [c for c in certs if c.subject == c.issuer]
        self.bootstrap_fingerprint = fingerprint((roots or certs)[-1])
        self.trust = certs
        self.ca_certificates = certs

    async def _exchange(
        self,
        transport: ChannelBindingTransport,
        spec: OperationSpec,
        body: bytes | _BoundCsr | None,
        accept: ContentFormat | None = None,
    ):
        try:
            if isinstance(body, _BoundCsr):
                return await transport.call_bound(spec, self.label, body, accept)
            return await transport.call(spec, self.label, body, accept)
        except (TransportError, OSError) as exc:
            raise EstClientError(f"{spec.long_name} failed", diagnostic=str(exc)) from exc

    async def _call(
        self,
        spec: OperationSpec,
        body: bytes | _BoundCsr | None = None,
        accept: ContentFormat | None = None,
    ) -> Reply:
        """One EST request; a pending answer is repeated identically, bounded in time and count."""
        deadline = time.monotonic() + self.max_pending_wait
        attempts = 0
        while True:
            reply = await self._exchange(await self.transport(), spec, body, accept)
            if reply.kind is ReplyKind.OK:
                return reply
            if reply.kind is ReplyKind.ERROR:
                raise EstClientError(
                    f"{spec.long_name} refused", status=reply.status, diagnostic=reply.diagnostic
                )
            attempts += 1
            wait = max(1, reply.retry_after)
            if attempts > self.max_pending_attempts or time.monotonic() + wait > deadline:
                raise EstPendingTimeout(
                    f"{spec.long_name} still pending",
                    diagnostic=f"gave up after {attempts} attempts (retry asked in {wait} s)",
                )
            if self.on_pending is not None:
                self.on_pending(wait)
            await asyncio.sleep(wait)

    async def _pop_channel(self) -> bytes:
        """tls-unique of the connection the next request will use (RFC 7030 s3.5)."""
        transport = await self.transport()
        tls_unique = await transport.tls_unique()
        if tls_unique is None and self.endpoint.scheme == "https" and not self.tls12:
            # TLS 1.3 has no tls-unique: reconnect capped at TLS 1.2.
            self.tls12 = True
            await self.close()
            transport = await self.transport()
            tls_unique = await transport.tls_unique()
        if tls_unique is None:
            raise EstClientError("proof-of-possession impossible: the channel has no tls-unique")
        return tls_unique

    # ---- answers -------------------------------------------------------------------

    @classmethod
    def _certificates(cls, reply: Reply, what: str) -> list[x509.Certificate]:
        return [cert for cert, _ in cls._certificates_with_der(reply, what)]

    @staticmethod
    def _certificates_with_der(reply: Reply, what: str) -> list[tuple[x509.Certificate, bytes]]:
        try:
            if reply.content_format is ContentFormat.PKIX_CERT:
                return [(x509.load_der_x509_certificate(reply.body), reply.body)]
            return pkcs7.decode_certs_only_with_der(reply.body)
        except (CodecError, ValueError) as exc:
            raise EstClientError(f"{what}: undecodable answer", diagnostic=str(exc)) from exc

    @staticmethod
    def _issued_first(
        certs: list[tuple[x509.Certificate, bytes]],
        encoded_key: bytes | None,
        public_der: Callable[[], bytes],
        what: str,
    ) -> list[x509.Certificate]:
        """Put the certificate for our key first (spki.index_of_key says which, and what
        encoded_key and public_der are); refuse an answer that has none."""
        index = spki.index_of_key(certs, encoded_key, public_der)
        if index is None:
            raise EstClientError(f"{what}: the server returned no certificate for our key")
        return [certs[index][0]] + [c for i, (c, _) in enumerate(certs) if i != index]

    # ---- operations ----------------------------------------------------------------

    async def cacerts(self) -> list[x509.Certificate]:
        """The CA certificates (RFC 7030 s4.1); kept in .ca_certificates."""
        certs = self._certificates(await self._call(spec_for(Operation.CACERTS)), "cacerts")
        self.ca_certificates = certs
        return certs

    async def csrattrs(self) -> tuple[CsrAttrItem, ...]:
        """What the server wants in a CSR; empty when it has no wishes (204 or 404)."""
        try:
            reply = await self._call(spec_for(Operation.CSRATTRS))
        except EstClientError as exc:
            if exc.status in ("404", "4.04"):
                return ()
            raise
        if not reply.body:
            return ()
        try:
            return decode_csrattrs(reply.body)
        except CodecError as exc:
            raise EstClientError("csrattrs: undecodable answer", diagnostic=str(exc)) from exc

    async def _make_csr(
        self,
        csr: bytes | None,
        key: PrivateKey | None,
        subject: str | x509.Name | None,
        sans: Sequence[x509.GeneralName],
        pop: bool,
        challenge_password: bytes | None,
        signature_hash: hashes.HashAlgorithm | None = None,
        seal: Callable[[bytes], bytes] | None = None,
    ) -> bytes | _BoundCsr:
        """The CSR to send; with pop, one that is re-made for each connection carrying it.
        seal: what to add to the built CSR (the sealed-key request of serverkeygen)."""
        if csr is not None:
            return csr
        if key is None or subject is None:
            raise ValueError("give a CSR, or a key and a subject to build one")
        name = parse_subject(subject)

        def build(password: bytes | None) -> bytes:
            der = build_csr(
                key,
                name,
                sans=sans,
                challenge_password=password,
                signature_hash=signature_hash,
            )
            return seal(der) if seal is not None else der

        if pop:
            return _BoundCsr(build, await self._pop_channel())
        return build(challenge_password)

    async def enroll(
        self,
        csr: bytes | None = None,
        *,
        key: PrivateKey | None = None,
        subject: str | x509.Name | None = None,
        sans: Sequence[x509.GeneralName] = (),
        pop: bool = False,
        challenge_password: bytes | None = None,
        signature_hash: hashes.HashAlgorithm | None = None,
    ) -> list[x509.Certificate]:
        """simpleenroll: the issued certificate first, then the chain the server sent."""
        der = await self._make_csr(csr, key, subject, sans, pop, challenge_password, signature_hash)
        return await self._enroll(Operation.SIMPLEENROLL, der)

    async def reenroll(
        self,
        csr: bytes | None = None,
        *,
        key: PrivateKey | None = None,
        pop: bool = False,
    ) -> list[x509.Certificate]:
        """simplereenroll with the current client certificate: same Subject and SAN;
        key=None renews with the current key, a new key rekeys (RFC 7030 s4.2.2)."""
        if csr is not None:
            return await self._enroll(Operation.SIMPLEREENROLL, csr)
        if not self.cert_chain or self.key is None:
            raise EstClientError("re-enrollment needs the current certificate and its key")
        current = self.cert_chain[0]
        try:
            san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sans: list[x509.GeneralName] = list(san.value)
        except x509.ExtensionNotFound:
            sans = []
        made = await self._make_csr(None, key or self.key, current.subject, sans, pop, None)
        return await self._enroll(Operation.SIMPLEREENROLL, made)

    async def _enroll(self, operation: Operation, csr: bytes | _BoundCsr) -> list[x509.Certificate]:
        spec = spec_for(operation)
        if self.endpoint.scheme == "coaps":
            # 281, which every EST-coaps server has (RFC 9148 s4.3), unless the caller asked
            # for the issued certificate alone (287): a server without it (4.06) gets 281
            # then, and this client asks it for 281 from then on.
            reply = None
            if self._single_certificate:
                try:
                    reply = await self._call(spec, csr, ContentFormat.PKIX_CERT)
                except EstClientError as exc:
                    if exc.status != "4.06":
                        raise
                    self._single_certificate = False
            if reply is None:
                reply = await self._call(spec, csr, ContentFormat.PKCS7_CERTS_ONLY)
        else:
            reply = await self._call(spec, csr)
        certs = self._certificates_with_der(reply, spec.long_name)
        sent = csr.first if isinstance(csr, _BoundCsr) else csr
        return self._issued_first(
            certs,
            spki.of_csr(sent),
            lambda: spki.public_key_der(x509.load_der_x509_csr(sent)),
            spec.long_name,
        )

    async def serverkeygen(
        self,
        csr: bytes | None = None,
        *,
        subject: str | x509.Name | None = None,
        sans: Sequence[x509.GeneralName] = (),
        key: PrivateKey | None = None,
        pop: bool = False,
        encrypted: bool = False,
        shared_key: keypackage.SharedKey | None = None,
    ) -> tuple[PrivateKey, list[x509.Certificate]]:
        """serverkeygen: the server makes the key. The CSR (signed with `key`, or a
        throwaway key) only carries the identity; returns (new key, certificates).

        encrypted=True asks for the key enveloped for the key that signs the CSR (RFC 7030
        s4.4.1.2): the CSR names it in AsymmetricDecryptKeyIdentifier and lists the
        content ciphers we take in SMIMECapabilities. The answer is decrypted with that
        key, and whoever signed the key package must chain to our trust anchors.

        shared_key asks instead for the key enveloped with a symmetric key shared with the
        server in advance (DecryptKeyIdentifier, RFC 7030 s4.4.1.1).
        """
        if (encrypted or shared_key is not None) and csr is not None:
            raise ValueError("an encrypted key needs the CSR built here: give a subject")
        if encrypted and shared_key is not None:
            raise ValueError("ask for encrypted=True or a shared_key, not both")
        transport_key = key or generate_key()
        seal = None
        if encrypted or shared_key is not None:
            seal = partial(_ask_for_sealed_key, key=transport_key, shared_key=shared_key)
        der = await self._make_csr(csr, transport_key, subject, sans, pop, None, seal=seal)
        spec = spec_for(Operation.SERVERKEYGEN)
        reply = await self._call(spec, der)
        try:
            parts = KeygenParts.from_core(reply.body)
        except CodecError as exc:
            raise EstClientError("serverkeygen: undecodable answer", diagnostic=str(exc)) from exc
        opener = shared_key if shared_key is not None else transport_key if encrypted else None
        pkcs8 = self._received_key(parts, opener)
        try:
            new_key = serialization.load_der_private_key(pkcs8, password=None)
        except ValueError as exc:
            raise EstClientError("serverkeygen: undecodable key", diagnostic=str(exc)) from exc
        cert_reply = Reply(ReplyKind.OK, body=parts.certificate, content_format=parts.cert_format)
        certs = self._certificates_with_der(cert_reply, spec.long_name)
        public_der = spki.public_key_der(new_key)
        return new_key, self._issued_first(certs, public_der, lambda: public_der, spec.long_name)  # type: ignore[return-value]

    def _received_key(
        self, parts: KeygenParts, opener: PrivateKey | keypackage.SharedKey | None
    ) -> bytes:
        """The PKCS#8 key of an answer; opened and its signer checked when we asked for that."""
        if parts.key_format is ContentFormat.PKCS8:
            if opener is not None:
                raise EstClientError(
                    "serverkeygen: asked for an encrypted key, the server sent it in clear"
                )
            return parts.key
        if opener is None:
            raise EstClientError(
                "serverkeygen: the server sent an encrypted key we did not ask for"
            )
        try:
            if isinstance(opener, keypackage.SharedKey):
                opened = keypackage.open_key(parts.key, shared_key=opener)
            else:
                opened = keypackage.open_key(parts.key, recipient_key=opener)
        except CodecError as exc:
            raise EstClientError("serverkeygen: cannot open the key", diagnostic=str(exc)) from exc
        if not self._may_sign_keys(opened.signer, opened.certificates):
            raise EstClientError(
                "serverkeygen: the key package's signer is not trusted to generate keys",
                diagnostic=f"signed by {opened.signer.subject.rfc4514_string()}",
            )
        return opened.pkcs8

    def _may_sign_keys(self, signer: x509.Certificate, carried: Sequence[x509.Certificate]) -> bool:
        """The CA itself (one of our anchors), or a CA or registration authority that
        chains to them: not any end entity of the same PKI."""
        anchors = self.trust or self.ca_certificates
        if not anchors:
            return False
        if signer in anchors:
            return True
        chain = (signer, *(c for c in carried if c != signer))
        return chains_to(chain, anchors) and (is_ca(signer) or has_eku(signer, ID_KP_CMC_RA))

    async def provision(
        self,
        subject: str | x509.Name | None = None,
        *,
        sans: Sequence[x509.GeneralName] = (),
        key: PrivateKey | None = None,
        pop: bool | None = None,
    ) -> Provisioned:
        """cacerts, csrattrs, a key and CSR as the server asks (PoP included), enroll.
        Without a subject, the one the server's CSR attributes template gives (RFC 9908;
        estcoap's CA names a device's identity there)."""
        ca = await self.cacerts()
        attrs = await self.csrattrs()
        if subject is None:
            subject = template_subject(attrs)
        if key is None:
            key = generate_key(requested_key(attrs))
        want_pop = wants_challenge_password(attrs) if pop is None else pop
        chain = await self.enroll(
            key=key,
            subject=subject,
            sans=sans,
            pop=want_pop,
            signature_hash=None if _is_eddsa(key) else requested_signature_hash(attrs),
        )
        return Provisioned(chain[0], key, chain, ca)
