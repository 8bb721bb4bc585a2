"""Is the EST server's certificate revoked? Checked after the (D)TLS handshake, before the
client sends anything (credentials, CSR) on the channel: libEST's "CRL checks when
verifying the server identity".

Two sources, either or both:
* CRL files the user gives (`--crl FILE`): estcoap.revocation verifies each against the
  trust anchors, exactly as a server checks its clients.
* `--check-revocation`: the server certificate's own pointers, its CRL distribution
  point (fetched over http://) or else its OCSP responder (AIA, RFC 6960, asked by POST
  with a nonce). No answer, a bad signature or "unknown" is a refusal: a check that can
  be switched off by blocking the responder would not be one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ..revocation import CLOCK_SKEW, CrlError, RevocationChecker, parse_crl, verify_crl
from ..trust import has_eku, issued_by
from .http1 import ResponseReader
from .transport import ServerRevoked

FETCH_TIMEOUT = 10.0


class ServerRevocationCheck:
    """What the client checks the server's chain (leaf first) against.

    anchors: the client's trust anchors (CRLs and OCSP answers must be signed by one of
    them, or by a responder one of them certified). crl_files: the user's CRLs. online:
    follow the certificate's CRL distribution point or OCSP responder.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        crl_files: Sequence[str | Path] = (),
        *,
        online: bool = False,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.anchors = list(anchors)
        self.crls = RevocationChecker(self.anchors, crl_files) if crl_files else None
        self.online = online
        self.timeout = timeout

    async def check(self, chain: Sequence[x509.Certificate]) -> None:
        """ServerRevoked (one line) when the server must not be talked to."""
        if not chain:
            return
        if self.crls is not None:
            found = self.crls.check(chain)
            if found is not None:
                raise ServerRevoked(f"server {found.describe()}")
        if self.online:
            await self._check_online(chain)

    async def _check_online(self, chain: Sequence[x509.Certificate]) -> None:
        leaf = chain[0]
        issuer = self._issuer_of(leaf, chain[1:])
        crl_urls, ocsp_urls = _pointers(leaf)
        who = f"server certificate {leaf.serial_number:x}"
        if not crl_urls and not ocsp_urls:
            raise ServerRevoked(
                f"{who} names no CRL distribution point or OCSP responder: cannot "
                "--check-revocation (give its CRL with --crl instead)"
            )
        problems: list[str] = []
        for url in crl_urls:
            try:
                data = await http_fetch(url, timeout=self.timeout)
                crl = verify_crl(parse_crl(data, url), [issuer], url)
            except (CrlError, OSError, ValueError, TimeoutError) as exc:
                problems.append(f"{url}: {exc or type(exc).__name__}")
                continue
            entry = crl.revoked.get(leaf.serial_number)
            if entry is not None:
                raise ServerRevoked(f"{who} is revoked ({entry[0]}) since {entry[1]} ({url})")
            return
        for url in ocsp_urls:
            try:
                status = await ask_ocsp(url, leaf, issuer, timeout=self.timeout)
            except (OSError, ValueError, TimeoutError) as exc:
                problems.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if status is None:
                return
            raise ServerRevoked(f"{who} {status} ({url})")
        raise ServerRevoked(f"cannot check the revocation of the {who}: {'; '.join(problems)}")

    def _issuer_of(
        self, leaf: x509.Certificate, rest: Sequence[x509.Certificate]
    ) -> x509.Certificate:
        for candidate in [*rest, *self.anchors]:
            if issued_by(leaf, candidate):
                return candidate
        raise ServerRevoked(
            f"cannot check the revocation of the server certificate: its issuer "
            f"{leaf.issuer.rfc4514_string()} is not among the trust anchors"
        )


def _pointers(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(CRL distribution point URLs over http, OCSP responder URLs) of a certificate."""
    crl_urls: list[str] = []
    ocsp_urls: list[str] = []
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        points = x509.CRLDistributionPoints([])
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                "http://"
            ):
                crl_urls.append(name.value)
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        access = x509.AuthorityInformationAccess([])
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            ocsp_urls.append(location.value)
    return crl_urls, ocsp_urls


async def http_fetch(
    url: str,
    *,
    body: bytes | None = None,
    content_type: str = "",
    timeout: float = FETCH_TIMEOUT,
) -> bytes:
    """GET (or POST body) over plain HTTP/1.1, as CRL and OCSP fetches are (RFC 5280 s4.2.1.13,
    RFC 6960 A.1: their answers are signed, so no TLS is needed); the body of a 200."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    method = "POST" if body is not None else "GET"
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, port)
        try:
            writer.write(head.encode("ascii") + b"\r\n" + (body or b""))
            await writer.drain()
            frames = ResponseReader()
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    frames.eof = True
                else:
                    frames.feed(chunk)
                response = frames.next_response(method)
                if response is not None:
                    break
                if not chunk:
                    raise ValueError("connection closed before a complete answer")
        finally:
            writer.close()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status} {response.reason}".strip())
    return response.body


async def ask_ocsp(
    url: str,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    timeout: float = FETCH_TIMEOUT,
    now: dt.datetime | None = None,
) -> str | None:
    """None when the responder says good; else what it says ("is revoked (reason) since
    ...", "is unknown to its OCSP responder"). ValueError for an answer we cannot trust."""
    nonce = os.urandom(16)
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, issuer, hashes.SHA1())  # SHA-1 CertID: what responders index
        .add_extension(x509.OCSPNonce(nonce), critical=False)
        .build()
    )
    data = await http_fetch(
        url,
        body=request.public_bytes(Encoding.DER),
        content_type="application/ocsp-request",
        timeout=timeout,
    )
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        raise ValueError("not an OCSP response") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ValueError(f"OCSP responder answered {response.response_status.name}")
    _verify_ocsp_signature(response, issuer)
    if response.serial_number != cert.serial_number:
        raise ValueError("the OCSP answer is about another certificate")
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    if echoed is not None and echoed != nonce:  # RFC 8954: a responder may leave it out
        raise ValueError("the OCSP answer carries another request's nonce")
    now = now or dt.datetime.now(dt.UTC)
    if response.this_update_utc > now + CLOCK_SKEW:
        raise ValueError("the OCSP answer's thisUpdate is in the future")
    if response.next_update_utc is not None and now > response.next_update_utc:
        raise ValueError("the OCSP answer is stale (past its nextUpdate)")
    status = response.certificate_status
    if status is ocsp.OCSPCertStatus.GOOD:
        return None
    if status is ocsp.OCSPCertStatus.REVOKED:
        reason = response.revocation_reason.value if response.revocation_reason else "unspecified"
        when = response.revocation_time_utc
        since = f" since {when:%Y-%m-%dT%H:%M:%SZ}" if when else ""
        return f"is revoked ({reason}){since}"
    return "is unknown to its OCSP responder"


def _verify_ocsp_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """Signed by the issuer itself, or by a responder it certified for OCSP signing."""
    signers = [issuer] + [
        c
        for c in response.certificates
        if has_eku(c, ExtendedKeyUsageOID.OCSP_SIGNING) and issued_by(c, issuer)
    ]
    for signer in signers:
        if _signature_valid(signer, response):
            return
    raise ValueError("the OCSP answer is not signed by the issuer or a responder it certified")


def _signature_valid(signer: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        else:
            key.verify(response.signature, response.tbs_response_bytes)  # type: ignore[call-arg,union-attr]
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True
