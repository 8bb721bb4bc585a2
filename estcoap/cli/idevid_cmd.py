"""`estcoap idevid maker` and `estcoap idevid issue`: a throwaway device maker and its
IDevIDs, so a deployment can be tried (and simulated) before real devices exist."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..files import certificates_pem, private_key_pem, write_secret
from ..idevid import DeviceMaker
from . import CliError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    idevid = subparsers.add_parser("idevid", help="a test device maker and its IDevIDs")
    sub = idevid.add_subparsers(dest="idevid_command", required=True, metavar="SUBCOMMAND")

    maker = sub.add_parser("maker", help="create a device maker's CA (certificate and key)")
    maker.add_argument("--out-cert", required=True, metavar="PEM")
    maker.add_argument("--out-key", required=True, metavar="KEY")
    maker.add_argument("--name", default="estcoap test device maker", help="its common name")
    maker.set_defaults(func=_maker)

    issue = sub.add_parser("issue", help="issue one device's IDevID (subject serialNumber)")
    issue.add_argument("--maker-cert", required=True, metavar="PEM")
    issue.add_argument("--maker-key", required=True, metavar="KEY")
    issue.add_argument("--serial", required=True, help="the device's serial number")
    issue.add_argument("--out-cert", required=True, metavar="PEM")
    issue.add_argument("--out-key", required=True, metavar="KEY")
    issue.set_defaults(func=_issue)


def _refuse_existing(*paths: str) -> None:
    for path in paths:
        if Path(path).exists():
            raise CliError(f"{path} exists; not overwriting it")


def _maker(args: argparse.Namespace) -> int:
    _refuse_existing(args.out_cert, args.out_key)
    maker = DeviceMaker.create(args.name)
    write_secret(args.out_key, private_key_pem(maker.private_key), overwrite=False)
    Path(args.out_cert).write_bytes(certificates_pem([maker.certificate]))
    print(f"device maker {maker.certificate.subject.rfc4514_string()}: "
          f"{args.out_cert}, key {args.out_key} (mode 0600)")  # fmt: skip
    return 0


def _issue(args: argparse.Namespace) -> int:
    _refuse_existing(args.out_cert, args.out_key)
    try:
        cert = x509.load_pem_x509_certificate(Path(args.maker_cert).read_bytes())
        key = serialization.load_pem_private_key(Path(args.maker_key).read_bytes(), None)
    except ValueError as exc:
        raise CliError(f"cannot read the device maker's certificate or key: {exc}") from exc
    if key.public_key() != cert.public_key():
        raise CliError(f"{args.maker_key} does not belong to {args.maker_cert}")
    maker = DeviceMaker(cert, key)  # type: ignore[arg-type]
    idevid, idevid_key = maker.issue_idevid(args.serial)
    write_secret(args.out_key, private_key_pem(idevid_key), overwrite=False)
    Path(args.out_cert).write_bytes(certificates_pem([idevid]))
    print(f"IDevID {idevid.subject.rfc4514_string()}: {args.out_cert}, key {args.out_key}")
    return 0
