"""`estcoap ca init|issue-ra|issued|show|export DIR ...`: create and inspect the built-in CA.

Every subcommand takes the CA directory as its first argument (estcoap.cli's rule); `ca
issued` still accepts the former `--ca DIR`, with a note.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ..ca import KEY_TYPES, CaExistsError, CaPaths, IssuedRecord, Store, StoreError, init_ca
from ..ca.ra import issue_ra, write_ra
from ..files import OutputError, check_writable, write_file
from . import CliError, UsageError, add_ca_dir, ca_dir, positive_int
from .table import print_table


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    init.add_argument("--validity-days", type=positive_int, default=3650, metavar="N",
                      help="the CA certificate's lifetime")  # fmt: skip
    init.add_argument("--name", default="estcoap CA", help="the CA's common name")
    init.set_defaults(func=_init)

    ra = sub.add_parser(
        "issue-ra", help="issue a Registration Authority certificate (for a gateway or proxy)"
    )
    ra.add_argument("dir", metavar="DIR", help="the CA directory")
    ra.add_argument("--out-cert", required=True, metavar="PEM", help="where to write the chain")
    ra.add_argument("--out-key", required=True, metavar="KEY", help="where to write the key")
    ra.add_argument("--name", default="estcoap RA", help="the RA's common name")
    ra.add_argument(
        "--hostname", action="append", default=[], metavar="NAME",
        help="also a server certificate for this name or address (repeatable)",
    )  # fmt: skip
    ra.add_argument("--validity-days", type=positive_int, default=365, metavar="N",
                    help="the RA certificate's lifetime")  # fmt: skip
    ra.set_defaults(func=_issue_ra)

    issued = sub.add_parser("issued", help="list the certificates this CA issued")
    add_ca_dir(issued)
    issued.set_defaults(func=_issued)

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


def require_writable_store(directory: str | Path) -> None:
    """Refuse a CA whose store cannot be written, before it issues anything: SQLite opens
    a read-only database without complaint and fails only at the first record, when a
    certificate is already signed (the client would get 5.00/500, the RA a traceback).
    The directory must take new files too: SQLite keeps its journal (-wal, -shm) there."""
    store = CaPaths.of(directory).store
    if not store.exists():
        return  # Store.open says there is no CA here
    for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
        if path.exists() and not os.access(path, os.W_OK):
            raise CliError(f"the CA store {path} is read-only: the CA could not record "
                           "what it issues")  # fmt: skip
    if not os.access(store.parent, os.W_OK | os.X_OK):
        raise CliError(f"the CA directory {store.parent} is read-only: the store keeps its "
                       "journal there")  # fmt: skip


def _open_store(directory: str) -> Store:
    try:
        return Store.open(CaPaths.of(directory).store, create=False)
    except StoreError as exc:
        raise CliError(str(exc)) from exc


def _init(args: argparse.Namespace) -> int:
    try:
        paths = init_ca(
            args.dir,
            args.hostname,
            args.key_type,
            ca_name=args.name,
            validity_days=args.validity_days,
        )
    except (CaExistsError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"created CA in {paths.dir}")
    print(f"  CA certificate      {paths.ca_cert}")
    print(f"  CA key              {paths.ca_key} (mode 0600)")
    print(f"  server certificate  {paths.server_cert} (for {', '.join(args.hostname)})")
    print(f"  server key          {paths.server_key} (mode 0600)")
    print(f"  store               {paths.store}")
    return 0


def _issue_ra(args: argparse.Namespace) -> int:
    for path in (args.out_cert, args.out_key):
        if Path(path).exists():
            raise CliError(f"{path} exists; refusing to overwrite it")
        try:  # before issuing: a certificate recorded but not written is lost
            check_writable(path)
        except OutputError as exc:
            raise CliError(str(exc)) from None
    require_writable_store(args.dir)
    try:
        identity = issue_ra(
            args.dir, name=args.name, hostnames=args.hostname, validity_days=args.validity_days
        )
        write_ra(identity, args.out_cert, args.out_key)
    except (StoreError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    serial = format(identity.certificate.serial_number, "x")
    print(f"issued RA certificate {serial} (clientAuth, id-kp-cmcRA) for CN={args.name}")
    print(f"  certificate chain   {args.out_cert}")
    print(f"  key                 {args.out_key} (mode 0600)")
    return 0


def _issued(args: argparse.Namespace) -> int:
    with _open_store(ca_dir(args)) as store:
        records = store.issued_list()
    print_table(
        ("serial", "operation", "kind", "label", "subject", "not after", "requester"),
        [
            (
                r.serial,
                r.operation,
                r.kind,
                r.label or "-",
                r.subject,
                r.not_after[:19],
                r.requester,
            )
            for r in records
        ],
    )
    return 0


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
