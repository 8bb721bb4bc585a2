"""Client commands: cacerts, csrattrs, enroll, reenroll, serverkeygen (https:// or coaps://).

A key option (--key, --client-key) takes a file or an RFC 7512 pkcs11: URI of a key
already in a token (docs/hsm.md): the CSR is then signed in the token, and the TLS client
key is reached through OpenSSL's pkcs11 engine. Nothing is generated for a URI, and no
output may be named like one: a URI is never taken for a file name.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..ca.pkcs11uri import is_pkcs11_uri
from ..client import (
    EstClient,
    EstClientError,
    fingerprint,
    generate_key,
    load_certificates,
    load_private_key,
    parse_subject,
)
from ..client.api import (
    TOKEN_KEY_NO_DTLS,
    CredentialError,
    check_key_matches,
    normalise_fingerprint,
    parse_url,
    template_subject,
)
from ..client.transport import ServerNotTrusted
from ..codec.csrattrs import (
    CsrAttribute,
    CsrAttrItem,
    requested_key,
    requested_signature_hash,
    wants_challenge_password,
)
from ..codec.keypackage import KeyPackageError, SharedKey
from ..codec.keytypes import PrivateKey
from ..codec.names import format_name
from ..files import OutputError, check_writable, rescue, write_file
from ..pskengine import PskUnavailable, parse_psk_key, require_dtlssocket
from ..tls_token_key import TokenKeyRef
from . import (
    CliError,
    UsageError,
    add_hidden_alias,
    non_negative_seconds,
    positive_seconds,
)
from .token_options import add_token_options, refuse_key_uri, token_signing_key


def register(subparsers: argparse._SubParsersAction) -> None:
    cacerts = _command(subparsers, "cacerts", "fetch the CA certificates", _cacerts)
    cacerts.add_argument("--out", metavar="FILE", help="write them here (default: stdout, PEM)")

    _command(subparsers, "csrattrs", "show what the server wants in a CSR", _csrattrs)

    enroll = _command(subparsers, "enroll", "get a certificate for a key (simpleenroll)", _enroll)
    enroll.add_argument(
        "--key",
        required=True,
        metavar="KEYFILE|URI",
        help="the private key; a P-256 key is created (mode 0600) when the file does not "
        "exist; or a pkcs11: URI of a key already in a token (docs/hsm.md)",
    )
    enroll.add_argument("--subject", help=_SUBJECT_HELP)
    enroll.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="TYPE:VALUE",
        help="DNS:name, IP:addr, URI:uri or EMAIL:addr (repeatable)",
    )
    enroll.add_argument("--out", required=True, metavar="CERT")
    enroll.add_argument("--pop", action="store_true", help="link the CSR to the TLS channel")

    reenroll = _command(subparsers, "reenroll", "renew or rekey (simplereenroll)", _reenroll)
    reenroll.add_argument("--out", required=True, metavar="CERT")
    reenroll.add_argument(
        "--key",
        dest="new_key",
        metavar="KEYFILE|URI",
        help="rekey: the new certificate's key (a file, created when missing, or a pkcs11: "
        "URI); default: renew the --client-key's",
    )
    add_hidden_alias(reenroll, "--new-key", "new_key")
    reenroll.add_argument("--pop", action="store_true")

    skg = _command(subparsers, "serverkeygen", "let the server make key and certificate", _skg)
    skg.add_argument("--subject", help=_SUBJECT_HELP)
    skg.add_argument("--san", action="append", default=[], metavar="TYPE:VALUE")
    skg.add_argument("--out", required=True, metavar="CERT")
    skg.add_argument("--out-key", required=True, metavar="KEY")
    skg.add_argument("--pop", action="store_true")
    skg.add_argument(
        "--encrypted",
        action="store_true",
        help="ask for the key enveloped for this request's own key (RFC 7030 s4.4.1.2)",
    )
    skg.add_argument(
        "--shared-key",
        metavar="KEY_ID_HEX:KEY_HEX",
        help="ask for the key enveloped with a key shared with the server (RFC 7030 s4.4.1.1)",
    )


def _command(subparsers, name: str, help_text: str, func) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text)
    p.add_argument("url", help="https://HOST:PORT[/.well-known/est[/LABEL]] or coaps://...")
    p.add_argument("--trust", metavar="PEM", help="trust anchors for the server (explicit TA)")
    p.add_argument(
        "--bootstrap", action="store_true", help="no trust anchors yet: fetch /cacerts unverified"
    )
    p.add_argument("--fingerprint", metavar="HEX", help="pinned SHA-256 of the CA certificate")
    p.add_argument("--user", metavar="NAME:PASSWORD", help="HTTP Basic/Digest credentials")
    p.add_argument(
        "--client-cert", metavar="PEM", help="our client certificate (chain), to authenticate with"
    )
    p.add_argument(
        "--client-key",
        metavar="KEY|URI",
        help="its private key: a file, or over https:// a pkcs11: URI (docs/hsm.md)",
    )
    add_hidden_alias(p, "--cert", "client_cert")  # the former names (estcoap.cli's naming rule)
    add_hidden_alias(p, "--cert-key", "client_key")
    p.add_argument(
        "--psk-identity",
        metavar="ID",
        help="coaps:// with PSK DTLS instead of a certificate: this PSK identity "
        "(docs/psk.md; needs the psk extra)",
    )
    p.add_argument("--psk-key", metavar="HEX", help="its pre-shared key, in hex")
    p.add_argument("--psk-key-file", metavar="FILE", help="read the pre-shared key (hex) from FILE")
    p.add_argument("--der", action="store_true", help="write DER instead of PEM")
    p.add_argument(
        "--crl",
        action="append",
        default=[],
        metavar="FILE",
        help="a CRL (PEM or DER) of a --trust CA: refuse a server whose certificate "
        "it lists, before sending anything (repeatable)",
    )
    p.add_argument(
        "--check-revocation",
        action="store_true",
        help="refuse a revoked server certificate: fetch its CRL distribution point "
        "or ask its OCSP responder, before sending anything",
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="per request, and for the TLS or DTLS handshake",
    )
    add_token_options(p, "--key or --client-key")
    p.add_argument(
        "--max-pending-wait",
        type=non_negative_seconds,
        default=300.0,
        metavar="SECONDS",
        help="how long to keep asking while the server says 'pending' (0: ask once)",
    )
    p.set_defaults(func=lambda args: _run(name, func, args))
    return p


_SUBJECT_HELP = (
    'RFC 4514, e.g. "serialNumber=dev1,CN=dev1,O=Acme" (CN, serialNumber, O, OU, C, L, ST, '
    "DC, UID, emailAddress, title ... or dotted OIDs); default: the subject the server's "
    "CSR attributes template names (estcoap's CA names a device's identity there)"
)


def _subject(text: str | None) -> x509.Name | None:
    """--subject, refused in one line before anything is made or sent."""
    try:
        return parse_subject(text) if text is not None else None
    except ValueError as exc:
        raise UsageError(f"--subject: {exc}") from None


async def _subject_or_template(est: EstClient, subject: x509.Name | None) -> x509.Name:
    return subject if subject is not None else template_subject(await est.csrattrs())


def _run(name: str, func, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(func(args))
    except EstClientError as exc:
        hint = _trust_hint(args) if isinstance(exc.__cause__, ServerNotTrusted) else ""
        raise CliError(f"{exc}{hint}") from None
    except ValueError as exc:
        raise CliError(f"{name} failed: {exc}") from None


def _trust_hint(args: argparse.Namespace) -> str:
    """What to do about a server certificate we do not trust, in the same line."""
    if args.url.startswith("coaps:"):
        return "; give the server's CA with --trust FILE (over https, cacerts --bootstrap gets it)"
    return "; give the server's CA with --trust FILE, or get it with --bootstrap --fingerprint HEX"


def _client(args: argparse.Namespace) -> EstClient:
    """The client from the options, every input checked before anything is written or sent."""
    try:
        parse_url(args.url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    user = password = None
    if args.user:
        user, sep, password = args.user.partition(":")
        if not sep:
            raise UsageError("--user needs NAME:PASSWORD")
    if bool(args.client_cert) != bool(args.client_key):
        raise UsageError("--client-cert and --client-key go together")
    if args.trust is None and not args.bootstrap and args.fingerprint:
        raise UsageError("--fingerprint is checked during --bootstrap; add --bootstrap")
    if (args.crl or args.check_revocation) and args.trust is None and not args.bootstrap:
        raise UsageError("--crl and --check-revocation need --trust (or --bootstrap)")
    if args.fingerprint is not None:
        try:
            normalise_fingerprint(args.fingerprint)
        except CredentialError:
            raise UsageError(
                f"--fingerprint {args.fingerprint!r} is not a SHA-256 fingerprint "
                "(64 hex digits, colons allowed)"
            ) from None
    psk = _psk(args)
    trust = _credential("--trust", load_certificates, args.trust)
    cert = _credential("--client-cert", load_certificates, args.client_cert)
    key, tls_key = _client_key(args)
    if cert and key is not None:
        try:
            check_key_matches(cert[0], key, args.client_cert, args.client_key)
        except CredentialError as exc:
            raise CliError(str(exc)) from None

    def pending(wait: int) -> None:
        print(f"pending: the server asks to retry in {wait} s", file=sys.stderr, flush=True)

    return EstClient(
        args.url,
        trust=trust,
        cert=cert,
        key=key,
        user=user,
        password=password,
        bootstrap=args.bootstrap,
        fingerprint=args.fingerprint,
        timeout=args.timeout,
        max_pending_wait=args.max_pending_wait,
        on_pending=pending,
        crls=args.crl,
        check_revocation=args.check_revocation,
        psk=psk,
        tls_key=tls_key,
    )


def _client_key(args: argparse.Namespace) -> tuple[PrivateKey | None, TokenKeyRef | None]:
    """--client-key: the key from its file, or (a pkcs11: URI, https:// only) the token's
    key and the same key as TLS reaches it."""
    if args.client_key is None or not is_pkcs11_uri(args.client_key):
        return _credential("--client-key", load_private_key, args.client_key), None
    if args.url.startswith("coaps:"):
        raise CliError(f"--client-key: {TOKEN_KEY_NO_DTLS}")
    return token_signing_key(args, "--client-key", args.client_key)


def _psk(args: argparse.Namespace) -> tuple[str, bytes] | None:
    """(identity, key) from --psk-identity and --psk-key or --psk-key-file, else None."""
    given = args.psk_key is not None or args.psk_key_file is not None
    if args.psk_identity is None:
        if given:
            raise UsageError("--psk-key and --psk-key-file need --psk-identity")
        return None
    if args.psk_key is not None and args.psk_key_file is not None:
        raise UsageError("give the PSK once: --psk-key or --psk-key-file")
    if not given:
        raise UsageError("--psk-identity needs --psk-key HEX or --psk-key-file FILE")
    if not args.url.startswith("coaps:"):
        raise UsageError("a PSK is for coaps:// (PSK DTLS); over https use a certificate")
    if args.client_cert:
        raise UsageError("give either a PSK or --client-cert, not both")
    text = args.psk_key
    refuse_key_uri(
        "--psk-key-file",
        args.psk_key_file,
        "a pre-shared key is a secret both ends hold, hex in a file",
    )
    if args.psk_key_file is not None:
        try:
            with open(args.psk_key_file, encoding="ascii") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--psk-key-file {args.psk_key_file}: cannot read it: {exc}") from None
    try:
        key = parse_psk_key(text)
    except ValueError as exc:
        raise UsageError(f"--psk-key: {exc}") from None
    try:
        require_dtlssocket()
    except PskUnavailable as exc:
        raise CliError(str(exc)) from None
    return args.psk_identity, key


def _credential(option: str, load, path: str | None):
    """load(path), a refusal naming the option and the file ("--trust ca.pem: ...")."""
    if path is None:
        return None
    try:
        return load(path)
    except CredentialError as exc:
        raise CliError(f"{option} {exc}") from None


# ---- files ----------------------------------------------------------------------


def _certs_bytes(certs: Sequence[x509.Certificate], der: bool) -> bytes:
    if der:
        return certs[0].public_bytes(serialization.Encoding.DER)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _inputs(args: argparse.Namespace, key: str | None = None) -> dict[str, str | None]:
    """The files a client command reads, by the option that names them."""
    return {
        "--key": key,
        "--trust": args.trust,
        "--client-cert": args.client_cert,
        "--client-key": args.client_key,
    }


def _check_outputs(outputs: dict[str, str], inputs: dict[str, str | None]) -> None:
    """Before any request: each output writable, none the same file as another or as an
    input (an issued certificate must not be lost, nor written over its own key)."""
    seen: dict[str, str] = {}
    for option, input_path in inputs.items():
        if input_path and not is_pkcs11_uri(input_path):
            seen[os.path.realpath(input_path)] = f"{option} {input_path}"
    for option, path in outputs.items():
        refuse_key_uri(option, path, "it names a file to write")
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{option} {path} is the same file as {seen[real]}")
        seen[real] = f"{option} {path}"
        try:
            check_writable(path)
        except OutputError as exc:
            raise CliError(f"{option}: {exc}") from None


def _save(results: Sequence[tuple[str, str, bytes, bool]]) -> None:
    """Write (what, path, data, secret) in order. When a write fails after the server
    has issued, what is left goes to a safe place rather than being lost."""
    for index, (_, path, data, secret) in enumerate(results):
        try:
            write_file(path, data, secret=secret)
        except OutputError as exc:
            saved = [f"the {what} in {rescue(p, d)}" for what, p, d, _ in results[index:]]
            raise CliError(f"{exc}; saved {' and '.join(saved)}") from None


def _key_bytes(key, der: bool) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER if der else serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_file(args: argparse.Namespace, option: str, path: str):
    """The key a pkcs11: URI names in a token, else the file's, else a P-256 key created
    there when the file does not exist (never for a URI: a missing token key is an error)."""
    if is_pkcs11_uri(path):
        return token_signing_key(args, option, path)[0]
    der = args.der
    if os.path.exists(path):
        return _credential(option, load_private_key, path)
    key = generate_key()
    try:
        write_file(path, _key_bytes(key, der), secret=True)
    except OutputError as exc:
        raise CliError(f"{option}: {exc}") from None
    print(f"created a P-256 key in {path}")
    return key


def parse_san(text: str) -> x509.GeneralName:
    kind, sep, value = text.partition(":")
    kind = kind.upper()
    if not sep or not value:
        raise UsageError(f"--san wants TYPE:VALUE, got {text!r}")
    if kind == "DNS":
        return x509.DNSName(value)
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError as exc:
            raise UsageError(f"--san {text}: {exc}") from None
    if kind == "URI":
        return x509.UniformResourceIdentifier(value)
    if kind == "EMAIL":
        return x509.RFC822Name(value)
    raise UsageError(f"--san type must be DNS, IP, URI or EMAIL, got {kind!r}")


# ---- commands ---------------------------------------------------------------------


async def _cacerts(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.out:
        _check_outputs({"--out": args.out}, _inputs(args))
    async with client as est:
        certs = await est.cacerts()
        if est.bootstrap_fingerprint:
            print(
                f"CA certificate SHA-256 fingerprint: {est.bootstrap_fingerprint}", file=sys.stderr
            )
    if args.out:
        if args.der and len(certs) > 1:
            raise CliError("--der writes one certificate; the server sent several (use PEM)")
        _save([("CA certificates", args.out, _certs_bytes(certs, args.der), False)])
        print(f"wrote {len(certs)} CA certificate(s) to {args.out}")
    else:
        for cert in certs:
            sys.stdout.write(cert.public_bytes(serialization.Encoding.PEM).decode())
    for cert in certs:
        print(f"  {cert.subject.rfc4514_string()}  sha256 {fingerprint(cert)}", file=sys.stderr)
    return 0


def _describe(item: CsrAttrItem) -> str:
    name = getattr(item.oid, "_name", "") or ""
    label = (
        f"{item.oid.dotted_string} ({name})"
        if name and name != "Unknown OID"
        else (item.oid.dotted_string)
    )
    if isinstance(item, CsrAttribute):
        values = ", ".join(v.hex() for v in item.values)
        return f"attribute {label}: {values}"
    return f"oid {label}"


async def _csrattrs(args: argparse.Namespace) -> int:
    async with _client(args) as est:
        items = await est.csrattrs()
    if not items:
        print("the server asks for no particular CSR attributes")
        return 0
    for item in items:
        print(_describe(item))
    key = requested_key(items)
    if key is not None:
        curve = key.ec_curve()
        detail = curve.name if curve is not None else (key.bits or "")
        print(f"key: {key.kind} {detail}".rstrip())
    digest = requested_signature_hash(items)
    if digest is not None:
        print(f"signature hash: {digest.name}")
    if wants_challenge_password(items):
        print("challengePassword: requested (proof-of-possession)")
    return 0


async def _enroll(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)  # refused before the key file is made
    client = _client(args)
    sans = [parse_san(s) for s in args.san]
    _check_outputs({"--out": args.out}, _inputs(args, args.key))
    key = _key_file(args, "--key", args.key)
    async with client as est:
        subject = await _subject_or_template(est, subject)
        chain = await est.enroll(key=key, subject=subject, sans=sans, pop=args.pop)
    _save([("issued certificate", args.out, _certs_bytes(chain, args.der), False)])
    print(
        f"wrote {format_name(chain[0].subject)} (serial {chain[0].serial_number:x}) to {args.out}"
    )
    return 0


async def _reenroll(args: argparse.Namespace) -> int:
    if not args.client_cert:
        raise UsageError("reenroll needs --client-cert and --client-key (the certificate to renew)")
    client = _client(args)
    _check_outputs({"--out": args.out}, _inputs(args, args.new_key))
    new_key = _key_file(args, "--key", args.new_key) if args.new_key else None
    async with client as est:
        chain = await est.reenroll(key=new_key, pop=args.pop)
    _save([("issued certificate", args.out, _certs_bytes(chain, args.der), False)])
    kind = "rekeyed" if new_key is not None else "renewed"
    print(
        f"{kind} {chain[0].subject.rfc4514_string()} (serial {chain[0].serial_number:x}) "
        f"into {args.out}"
    )
    return 0


def _shared_key(text: str | None) -> SharedKey | None:
    if text is None:
        return None
    key_id, _, key = text.partition(":")
    try:
        return SharedKey(bytes.fromhex(key_id), bytes.fromhex(key))
    except (ValueError, KeyPackageError) as exc:
        raise UsageError(
            f"--shared-key wants KEY_ID_HEX:KEY_HEX (a 16, 24 or 32-byte key): {exc}"
        ) from None


async def _skg(args: argparse.Namespace) -> int:
    subject = _subject(args.subject)
    client = _client(args)
    sans = [parse_san(s) for s in args.san]
    shared_key = _shared_key(args.shared_key)
    outputs = {"--out-key": args.out_key, "--out": args.out}
    _check_outputs(outputs, _inputs(args))
    async with client as est:
        key, chain = await est.serverkeygen(
            subject=await _subject_or_template(est, subject),
            sans=sans,
            pop=args.pop,
            encrypted=args.encrypted,
            shared_key=shared_key,
        )
    _save(
        [
            ("server-generated key", args.out_key, _key_bytes(key, args.der), True),
            ("issued certificate", args.out, _certs_bytes(chain, args.der), False),
        ]
    )
    print(f"wrote {format_name(chain[0].subject)} to {args.out} and its key to {args.out_key}")
    return 0
