"""`estcoap ca init|issue-ra|issue-ocsp|list|show|export|revoke|crl DIR ...`: create,
inspect and revoke with the built-in CA.

Every subcommand takes the CA directory as its first argument (estcoap.cli's rule); `ca
list` (and its former name `ca issued`) still accepts the former `--ca DIR`, with a note.
`ca revoke` has exit statuses of its own: 3 no such certificate, 4 revoked already.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from ..ca import (
    KEY_TYPES,
    CaExistsError,
    CaPaths,
    IssuedRecord,
    Store,
    StoreError,
    init_ca,
    pkcs11uri,
)
from ..ca.create import OCSP_RESPONDER_DAYS, issue_ocsp_responder
from ..ca.crl import build_crl, encode, parse_duration
from ..ca.ocsp_token import forget_token_responder, issue_token_responder
from ..ca.paths import ExposedFileError
from ..ca.pkcs11key import Pkcs11Unavailable
from ..ca.ra import issue_ra, write_ra
from ..ca.signer import describe_key
from ..ca.store import (
    END_ENTITY_REASONS,
    AlreadyRevoked,
    RevocationRecord,
    UnknownCertificate,
    absolute_location,
    is_server_url,
    redact,
    sqlite_path,
)
from ..ca.store_migrate import MigrationError, migrate_store
from ..files import OutputError, check_writable, write_file
from ..service import ServiceUnavailable
from . import CliError, UsageError, add_ca_dir, ca_dir, validity_days
from .table import print_table
from .token_options import add_token_options, pin_source, refuse_key_uri


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ca", help="create and inspect the built-in CA")
    sub = parser.add_subparsers(dest="ca_command", required=True, metavar="SUBCOMMAND")

    init = sub.add_parser("init", help="create a CA directory: CA, server certificate, store")
    init.add_argument("dir", metavar="DIR", help="directory to create the CA in")
    init.add_argument(
        "--hostname",
        action="append",
        required=True,
        metavar="NAME",
        help="server name or IP address for the server certificate (repeatable)",
    )
    init.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256", help="the CA's key")
    init.add_argument(
        "--validity-days",
        type=validity_days,
        default=3650,
        metavar="N",
        help="the CA certificate's lifetime",
    )
    init.add_argument("--name", default="estcoap CA", help="the CA's common name")
    init.add_argument(
        "--ocsp-responder",
        action="store_true",
        help="also a delegated OCSP responder certificate (as 'ca issue-ocsp')",
    )
    init.add_argument(
        "--key-uri",
        metavar="URI",
        help="generate the CA key in a PKCS#11 token (RFC 7512, e.g. "
        "'pkcs11:token=estca;object=ca-key'); writes key.uri, no ca.key (docs/hsm.md)",
    )
    init.add_argument(
        "--store",
        metavar="URL",
        help="keep the store there instead of DIR/est.sqlite3: postgresql://USER@HOST/DB "
        "(several instances share it; the password from PGPASSFILE, ~/.pgpass or "
        "?passfile=PATH, not the URL) or sqlite:PATH; written to DIR/store.url (0600), "
        "where every command finds it",
    )
    add_token_options(init)
    init.set_defaults(func=_init)

    ra = sub.add_parser(
        "issue-ra", help="issue a Registration Authority certificate (for a gateway or proxy)"
    )
    ra.add_argument("dir", metavar="DIR", help="the CA directory")
    ra.add_argument("--out-cert", required=True, metavar="PEM", help="where to write the chain")
    ra_key = ra.add_mutually_exclusive_group(required=True)
    ra_key.add_argument("--out-key", metavar="KEY", help="where to write the key")
    ra_key.add_argument(
        "--key-uri",
        metavar="URI",
        help="generate the key in a PKCS#11 token instead (RFC 7512, e.g. "
        "'pkcs11:token=gw;object=ra-key'), for gateway/proxy --ra-key URI (docs/hsm.md); "
        "--pin-file is that token's PIN",
    )
    ra.add_argument("--name", default="estcoap RA", help="the RA's common name")
    ra.add_argument(
        "--hostname",
        action="append",
        default=[],
        metavar="NAME",
        help="also a server certificate for this name or address (repeatable)",
    )
    ra.add_argument(
        "--validity-days",
        type=validity_days,
        default=365,
        metavar="N",
        help="the RA certificate's lifetime",
    )
    add_token_options(ra)
    ra.set_defaults(func=_issue_ra)

    for name, help_text in (
        ("list", "list the certificates this CA issued, each valid, expired or revoked"),
        ("issued", "the former name of 'ca list'"),
    ):
        listing = sub.add_parser(name, help=help_text)
        add_ca_dir(listing)
        listing.add_argument(
            "--status",
            choices=("valid", "expired", "revoked"),
            help="only the certificates with this status",
        )
        listing.set_defaults(func=_list)

    revoke = sub.add_parser(
        "revoke",
        help="revoke an issued certificate (exit status 3: no such certificate; 4: "
        "revoked already; nothing changes then)",
        description="Revoke a certificate this CA issued, by SERIAL or --cert FILE. "
        f"Reasons (RFC 5280): {', '.join(REASON_NAMES)}. Not cACompromise or "
        "aACompromise (this CA issues end-entity certificates), not certificateHold (a "
        "revocation here is final). Exit status: 0 revoked; 3 no such certificate in the "
        "CA's records; 4 revoked already; 1 and 2 as every command.",
    )
    revoke.add_argument("dir", metavar="DIR", help="the CA directory")
    revoke.add_argument("serial", nargs="?", metavar="SERIAL", help="hex, as 'ca list' lists it")
    revoke.add_argument("--cert", metavar="FILE", help="the certificate (PEM or DER) instead")
    revoke.add_argument(
        "--reason",
        type=revocation_reason,
        default="unspecified",
        metavar="REASON",
        help=f"why: {', '.join(REASON_NAMES)}",
    )
    revoke.add_argument(
        "--invalidity-date",
        type=iso_datetime,
        metavar="ISO8601",
        help="when the key was, or may have been, compromised (e.g. 2025-03-01T12:00Z; "
        "without a zone: UTC)",
    )
    revoke.set_defaults(func=_revoke)

    crl = sub.add_parser("crl", help="write a CRL signed by the CA (X.509 v2, RFC 5280)")
    crl.add_argument("dir", metavar="DIR", help="the CA directory")
    crl.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    crl.add_argument(
        "--format",
        choices=("pem", "der"),
        help="default: der for a FILE ending in .der or .crl, else pem",
    )
    crl.add_argument(
        "--next-update",
        type=duration,
        default="7d",
        metavar="DURATION",
        help="how long it is valid: 7d, 12h, 30m, 2w (at most 366d)",
    )
    crl.add_argument(
        "--label",
        metavar="NAME",
        help="only the certificates issued under this CA label (default: all of them)",
    )
    add_token_options(crl)
    crl.set_defaults(func=_crl)

    ocsp = sub.add_parser(
        "issue-ocsp",
        help="issue a delegated OCSP responder certificate (ocsp.pem, ocsp.key in DIR; "
        "replaces an earlier one)",
    )
    ocsp.add_argument("dir", metavar="DIR", help="the CA directory")
    ocsp.add_argument(
        "--key-uri",
        metavar="URI",
        help="generate the responder's key in a PKCS#11 token instead (RFC 7512, e.g. "
        "'pkcs11:token=ca;object=ocsp-key'): DIR gets ocsp.uri, not ocsp.key (docs/hsm.md)",
    )
    ocsp.add_argument("--name", default="estcoap OCSP responder", help="its common name")
    ocsp.add_argument(
        "--validity-days",
        type=validity_days,
        default=OCSP_RESPONDER_DAYS,
        metavar="N",
        help="its lifetime: short, since clients do not check its revocation "
        "(id-pkix-ocsp-nocheck); issue a new one before it ends",
    )
    add_token_options(ocsp)
    ocsp.set_defaults(func=_issue_ocsp)

    show = sub.add_parser(
        "show", help="describe one issued certificate (an unknown serial: exit status 1)"
    )
    show.add_argument("dir", metavar="DIR", help="the CA directory")
    show.add_argument("serial", metavar="SERIAL", help="hex, as 'ca issued' lists it")
    show.set_defaults(func=_show)

    export = sub.add_parser(
        "export", help="write one issued certificate (an unknown serial: exit status 1)"
    )
    export.add_argument("dir", metavar="DIR", help="the CA directory")
    export.add_argument("serial", metavar="SERIAL", help="hex, as 'ca issued' lists it")
    export.add_argument("--out", metavar="FILE", help="write it here (default: stdout)")
    export.add_argument("--der", action="store_true", help="DER instead of PEM")
    export.set_defaults(func=_export)

    audit = sub.add_parser(
        "audit",
        help="the audit trail: every issuance, revocation, approval and denial, "
        "with who asked, who decided and when",
    )
    audit.add_argument("dir", metavar="DIR", help="the CA directory")
    audit.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only what happened since: an ISO 8601 time (2026-03-01, 2026-03-01T12:00Z) "
        "or a duration back from now (7d, 12h, 30m)",
    )
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    audit.set_defaults(func=_audit)

    migrate = sub.add_parser(
        "migrate-store",
        help="copy a CA's store to another backend (SQLite to PostgreSQL, ...) and use it",
        description="Copies every record of SOURCE (issued, pending, revoked, CRL numbers, "
        "PSKs, audit trail: ids and serials kept) into TARGET, which must be empty, checks "
        "the counts, then writes TARGET into DIR/store.url so every command and serve use "
        "it. Stop the CA's servers first: what they record meanwhile is not copied.",
    )
    migrate.add_argument("dir", metavar="DIR", help="the CA directory")
    migrate.add_argument("source", metavar="SOURCE", help="sqlite:PATH or postgresql://...")
    migrate.add_argument("target", metavar="TARGET", help="sqlite:PATH or postgresql://...")
    migrate.set_defaults(func=_migrate_store)


def require_writable_store(directory: str | Path) -> None:
    """Refuse a CA whose store cannot be written, before it issues anything: SQLite opens
    a read-only database without complaint and fails only at the first record, when a
    certificate is already signed (the client would get 5.00/500, the RA a traceback).
    The directory must take new files too: SQLite keeps its journal (-wal, -shm) there.
    A database server's store (PostgreSQL) says so itself when written to."""
    try:
        location = CaPaths.of(directory).store_location()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if is_server_url(location):
        return
    store = sqlite_path(location)
    if not store.exists():
        return  # Store.open says there is no CA here
    for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
        if path.exists() and not os.access(path, os.W_OK):
            raise CliError(
                f"the CA store {path} is read-only: the CA could not record what it issues"
            )
    if not os.access(store.parent, os.W_OK | os.X_OK):
        raise CliError(
            f"the CA directory {store.parent} is read-only: the store keeps its journal there"
        )


def _open_store(directory: str) -> Store:
    try:
        return Store.open(CaPaths.of(directory).store_location(), create=False)
    except (StoreError, ValueError) as exc:  # ValueError: a bad store.url
        raise CliError(str(exc)) from exc


def _migrate_store(args: argparse.Namespace) -> int:
    paths = CaPaths.of(args.dir)
    if not paths.ca_cert.exists():
        raise CliError(f"{paths.dir}: no CA here (run 'estcoap ca init {paths.dir}' first)")
    try:
        counts = migrate_store(args.source, args.target)
    except (MigrationError, StoreError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    try:
        target = absolute_location(args.target)
        write_file(paths.store_url, f"{target}\n".encode(), secret=True)
    except OutputError as exc:
        raise CliError(f"copied, but {exc}; write the target URL in {paths.store_url}") from None
    copied = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"copied {redact(args.source)} to {redact(args.target)}: {copied}")
    print(f"{paths.dir} now uses {redact(args.target)} ({paths.store_url})")
    return 0


def _init(args: argparse.Namespace) -> int:
    try:
        paths = init_ca(
            args.dir,
            args.hostname,
            args.key_type,
            ca_name=args.name,
            validity_days=args.validity_days,
            ocsp_responder=args.ocsp_responder,
            key_uri=args.key_uri,
            pins=pin_source(args),
            store_url=args.store,
        )
    except (
        CaExistsError,
        StoreError,
        ValueError,
        ServiceUnavailable,
        Pkcs11Unavailable,
    ) as exc:
        raise CliError(str(exc)) from exc
    print(f"created CA in {paths.dir}")
    print(f"  CA certificate      {paths.ca_cert}")
    print(f"  CA key              {describe_key(paths.dir, paths.ca_key)}")
    print(f"  server certificate  {paths.server_cert} (for {', '.join(args.hostname)})")
    print(f"  server key          {paths.server_key} (mode 0600)")
    where = paths.store if args.store is None else f"{redact(args.store)} (in {paths.store_url})"
    print(f"  store               {where}")
    if args.ocsp_responder:
        print(f"  OCSP responder      {paths.ocsp_cert}, key {paths.ocsp_key} (mode 0600)")
    return 0


def _issue_ra(args: argparse.Namespace) -> int:
    refuse_key_uri("--out-key", args.out_key, "for a key in a token give --key-uri URI instead")
    key_uri = None
    if args.key_uri is not None:
        try:
            key_uri = pkcs11uri.parse(args.key_uri)
        except pkcs11uri.Pkcs11UriError as exc:  # the URI is not echoed: it may hold a PIN
            raise UsageError(f"--key-uri: {exc}") from None
    for path in (args.out_cert, args.out_key):
        if path is None:
            continue
        if Path(path).exists():
            raise CliError(f"{path} exists; refusing to overwrite it")
        try:  # before issuing: a certificate recorded but not written is lost
            check_writable(path)
        except OutputError as exc:
            raise CliError(str(exc)) from None
    require_writable_store(args.dir)
    try:
        identity = issue_ra(
            args.dir,
            name=args.name,
            hostnames=args.hostname,
            validity_days=args.validity_days,
            pins=pin_source(args),
            key_uri=key_uri,
        )
        write_ra(identity, args.out_cert, args.out_key)
    except (StoreError, ValueError, ServiceUnavailable) as exc:
        raise CliError(str(exc)) from exc
    serial = format(identity.certificate.serial_number, "x")
    print(f"issued RA certificate {serial} (clientAuth, id-kp-cmcRA) for CN={args.name}")
    print(f"  certificate chain   {args.out_cert}")
    if identity.key_uri is not None:
        print(f"  key                 {identity.key_uri} (in the token)")
    else:
        print(f"  key                 {args.out_key} (mode 0600)")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open_store(ca_dir(args)) as store:
        records = store.issued_list()
        revoked = {r.serial: r for r in store.revoked_list()}
    now = dt.datetime.now(dt.UTC)
    rows = []
    for r in records:
        status = _status(r, revoked.get(r.serial), now)
        if args.status is None or status.startswith(args.status):
            rows.append(
                (
                    r.serial,
                    status,
                    r.operation,
                    r.kind,
                    r.label or "-",
                    r.subject,
                    r.not_after[:19],
                    r.requester,
                )
            )
    print_table(
        ("serial", "status", "operation", "kind", "label", "subject", "not after", "requester"),
        rows,
    )
    return 0


def _status(record: IssuedRecord, revocation: RevocationRecord | None, now: dt.datetime) -> str:
    if revocation is not None:
        return f"revoked ({revocation.reason})"
    if dt.datetime.fromisoformat(record.not_after) <= now:
        return "expired"
    return "valid"


def _serial(text: str) -> str:
    """The store's spelling of a serial: lower-case hex; colons and 0x are allowed."""
    serial = text.strip().lower().replace(":", "").removeprefix("0x").lstrip("0") or "0"
    if not all(c in "0123456789abcdef" for c in serial):
        raise UsageError(f"SERIAL {text!r} is not hexadecimal (see 'estcoap ca issued')")
    return serial


def _find(args: argparse.Namespace) -> tuple[IssuedRecord, IssuedRecord | None]:
    serial = _serial(args.serial)
    with _open_store(args.dir) as store:
        record = store.find_issued(serial)
        if record is None:
            raise CliError(f"no certificate with serial {serial} in {args.dir}")
        return record, store.successor_of(record.serial)


def _show(args: argparse.Namespace) -> int:
    record, successor = _find(args)
    with _open_store(args.dir) as store:
        revocation = store.revocation_of(record.serial)
    fields = (
        ("serial", record.serial),
        ("subject", record.subject),
        ("SAN", record.san or "-"),
        ("valid", f"{record.not_before} to {record.not_after}"),
        ("operation", record.operation),
        ("kind", record.kind),
        ("label", record.label or "-"),
        ("requester", record.requester),
        ("renewed from", record.renewed_from or "-"),
        ("renewed by", successor.serial if successor else "-"),
        ("pending id", "-" if record.pending_id is None else str(record.pending_id)),
        ("issued", record.created),
        ("server key kept", "yes" if record.key_der else "no"),
        ("status", _status(record, revocation, dt.datetime.now(dt.UTC))),
        ("revoked", _describe_revocation(revocation) if revocation else "-"),
    )
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.out:
        try:
            check_writable(args.out)
        except OutputError as exc:
            raise CliError(str(exc)) from None
    elif args.der and sys.stdout.isatty():
        raise UsageError("DER is binary: give --out FILE, or redirect stdout")
    record, _ = _find(args)
    encoding = serialization.Encoding.DER if args.der else serialization.Encoding.PEM
    data = record.certificate.public_bytes(encoding)
    if args.out:
        try:
            write_file(args.out, data)
        except OutputError as exc:
            raise CliError(str(exc)) from None
        print(f"wrote certificate {record.serial} ({record.subject}) to {args.out}")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


# ---- revocation ------------------------------------------------------------------------

REASON_NAMES = tuple(reason.value for reason in END_ENTITY_REASONS)
_REASONS_REFUSED = {
    x509.ReasonFlags.ca_compromise: "this CA issues end-entity certificates, not CAs",
    x509.ReasonFlags.aa_compromise: "this CA issues no attribute certificates",
    x509.ReasonFlags.certificate_hold: "a revocation here is final (no holds)",
    x509.ReasonFlags.remove_from_crl: "it belongs to delta CRLs, which this CA does not make",
}


class NoSuchCertificate(CliError):
    exit_status = 3


class RevokedAlready(CliError):
    exit_status = 4


def revocation_reason(text: str) -> x509.ReasonFlags:
    """An RFC 5280 reason name (any case): one of REASON_NAMES; the others refused with why."""
    for reason in x509.ReasonFlags:
        if reason.value.lower() == text.strip().lower():
            if reason in _REASONS_REFUSED:
                raise argparse.ArgumentTypeError(
                    f"{reason.value} is not accepted: {_REASONS_REFUSED[reason]}"
                )
            return reason
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(REASON_NAMES)}, got {text!r}")


def iso_datetime(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date and time such as 2025-03-01T12:00Z, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def duration(text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(text: str) -> dt.datetime:
    """A moment: ISO 8601, or a duration back from now."""
    if text[:1].isdigit() and text[-1:].isalpha() and "-" not in text:
        return dt.datetime.now(dt.UTC) - duration(text)
    return iso_datetime(text)


def _audit(args: argparse.Namespace) -> int:
    with _open_store(args.dir) as store:
        records = store.audit_list(args.since)
    if args.json:
        for record in records:
            print(json.dumps(record.as_dict()))
        return 0
    print_table(
        ("when", "event", "serial", "request", "subject", "asked by", "decided by", "detail"),
        [
            (
                r.at,
                r.event,
                r.serial or "-",
                str(r.request_id or "-"),
                r.subject,
                r.requested_by,
                r.decided_by,
                r.detail,
            )
            for r in records
        ],
    )
    return 0


def who() -> str:
    """Who runs this command, for the records (cli:USER)."""
    return _who()


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no name for this uid (a container, say)
        return f"cli:uid {os.getuid()}"


def _revoke(args: argparse.Namespace) -> int:
    if (args.serial is None) == (args.cert is None):
        raise UsageError("give the certificate to revoke: SERIAL or --cert FILE (one of them)")
    paths = CaPaths.of(args.dir)
    serial = _serial(args.serial) if args.serial is not None else _serial_of_file(args, paths)
    require_writable_store(args.dir)
    with _open_store(args.dir) as store:
        try:
            record = store.revoke(
                serial,
                reason=args.reason,
                invalidity_date=args.invalidity_date,
                revoked_by=_who(),
            )
        except UnknownCertificate as exc:
            raise NoSuchCertificate(f"{exc}; nothing was revoked") from None
        except AlreadyRevoked as exc:
            raise RevokedAlready(str(exc)) from None
        except StoreError as exc:
            raise CliError(str(exc)) from None
        issued = store.find_issued(serial)
    subject = issued.subject if issued is not None else "?"
    print(f"revoked certificate {record.serial} ({subject}): {record.reason}")
    print(
        "  the CRL that serve publishes and its OCSP answers say so within seconds; "
        "a CRL file made before ('ca crl') does not"
    )
    return 0


def _serial_of_file(args: argparse.Namespace, paths: CaPaths) -> str:
    """The serial of --cert FILE, which must be this CA's (signed by it, in its records
    as this very certificate): exit status 3 otherwise."""
    try:
        data = Path(args.cert).read_bytes()
    except OSError as exc:
        raise CliError(f"{args.cert}: {exc.strerror}") from None
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError:
        raise CliError(f"{args.cert}: not a PEM or DER certificate") from None
    try:
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except FileNotFoundError:
        raise CliError(f"no CA in {args.dir} (run 'estcoap ca init {args.dir}' first)") from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise NoSuchCertificate(
            f"{args.cert} was not issued by this CA; nothing was revoked"
        ) from None
    serial = format(cert.serial_number, "x")
    with _open_store(args.dir) as store:
        record = store.find_issued(serial)
    if record is None or record.cert_der != cert.public_bytes(serialization.Encoding.DER):
        raise NoSuchCertificate(
            f"{args.cert} is not in the records of {args.dir}; nothing was revoked"
        )
    return serial


def _describe_revocation(revocation: RevocationRecord) -> str:
    text = f"{revocation.reason} at {revocation.revoked_at} by {revocation.revoked_by}"
    if revocation.invalidity_date:
        text += f", invalid since {revocation.invalidity_date}"
    return text


def _crl(args: argparse.Namespace) -> int:
    try:
        check_writable(args.out)
    except OutputError as exc:
        raise CliError(str(exc)) from None
    pem = (args.format or ("der" if args.out.endswith((".der", ".crl")) else "pem")) == "pem"
    paths = CaPaths.of(args.dir)
    try:
        ca_cert, ca_key = paths.load_ca(pin_source(args))
    except (ExposedFileError, ValueError) as exc:
        raise CliError(str(exc)) from None
    require_writable_store(args.dir)  # the CRL number is recorded
    with _open_store(args.dir) as store:
        revoked = store.revoked_list(args.label)
        number = store.next_crl_number(args.label)
    crl = build_crl(
        revoked,
        ca_cert=ca_cert,
        ca_key=ca_key,  # type: ignore[arg-type]
        number=number,
        next_update=args.next_update,
    )
    try:
        write_file(args.out, encode(crl, pem=pem))
    except OutputError as exc:
        raise CliError(str(exc)) from None
    scope = f"label {args.label}" if args.label else "all labels"
    print(
        f"wrote CRL number {number} ({scope}, {len(revoked)} revoked, next update "
        f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC) to {args.out}"
    )
    return 0


def _issue_ocsp(args: argparse.Namespace) -> int:
    key_uri = None
    if args.key_uri is not None:
        try:
            key_uri = pkcs11uri.parse(args.key_uri)
        except pkcs11uri.Pkcs11UriError as exc:  # the URI is not echoed: it may hold a PIN
            raise UsageError(f"--key-uri: {exc}") from None
    require_writable_store(args.dir)
    try:
        if key_uri is None:
            cert = issue_ocsp_responder(
                args.dir, name=args.name, validity_days=args.validity_days, pins=pin_source(args)
            )
            forget_token_responder(args.dir)
        else:
            cert, key_uri = issue_token_responder(
                args.dir,
                key_uri,
                name=args.name,
                validity_days=args.validity_days,
                pins=pin_source(args),
            )
    except (StoreError, ValueError, OutputError, ServiceUnavailable) as exc:
        raise CliError(str(exc)) from None
    paths = CaPaths.of(args.dir)
    print(
        f"issued OCSP responder certificate {cert.serial_number:x} (id-kp-OCSPSigning, "
        f"until {cert.not_valid_after_utc:%Y-%m-%d}) for CN={args.name}"
    )
    print(f"  certificate         {paths.ocsp_cert}")
    if key_uri is None:
        print(f"  key                 {paths.ocsp_key} (mode 0600)")
    else:
        print(f"  key                 {key_uri} (in the token; named in {paths.ocsp_key_uri})")
    print("  a running 'estcoap serve --ocsp' uses it from its next start")
    return 0
