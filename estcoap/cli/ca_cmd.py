"""`estcoap ca init DIR ...`, `estcoap ca issue-ra DIR ...` and `estcoap ca issued --ca DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..ca import KEY_TYPES, CaExistsError, CaPaths, Store, StoreError, init_ca
from ..ca.ra import issue_ra, write_ra
from . import CliError
from .table import print_table


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("ca", help="create and inspect the built-in CA")
    sub = parser.add_subparsers(dest="ca_command", required=True, metavar="SUBCOMMAND")

    init = sub.add_parser("init", help="create a CA directory: CA, server certificate, store")
    init.add_argument("dir", help="directory to create the CA in")
    init.add_argument(
        "--hostname",
        action="append",
        required=True,
        metavar="NAME",
        help="server name or IP address for the server certificate (repeatable)",
    )
    init.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    init.add_argument("--validity-days", type=int, default=3650, metavar="N")
    init.add_argument("--name", default="estcoap CA", help="the CA's common name")
    init.set_defaults(func=_init)

    ra = sub.add_parser(
        "issue-ra", help="issue a Registration Authority certificate (for a gateway or proxy)"
    )
    ra.add_argument("dir", help="the CA directory")
    ra.add_argument("--out-cert", required=True, metavar="PEM", help="where to write the chain")
    ra.add_argument("--out-key", required=True, metavar="KEY", help="where to write the key")
    ra.add_argument("--name", default="estcoap RA", help="the RA's common name")
    ra.add_argument(
        "--hostname", action="append", default=[], metavar="NAME",
        help="also a server certificate for this name or address (repeatable)",
    )  # fmt: skip
    ra.add_argument("--validity-days", type=int, default=365, metavar="N")
    ra.set_defaults(func=_issue_ra)

    issued = sub.add_parser("issued", help="list the certificates this CA issued")
    issued.add_argument("--ca", required=True, metavar="DIR", help="the CA directory")
    issued.set_defaults(func=_issued)


def _init(args: argparse.Namespace) -> int:
    if args.validity_days <= 0:
        raise CliError("--validity-days must be positive")
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
    try:
        with Store.open(CaPaths.of(args.ca).store, create=False) as store:
            records = store.issued_list()
    except StoreError as exc:
        raise CliError(str(exc)) from exc
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
