"""`estcoap idevid maker` and `estcoap idevid issue`: a throwaway device maker and its
IDevIDs, so a deployment can be tried (and simulated) before real devices exist."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from ..ca.pkcs11uri import is_pkcs11_uri
from ..client import load_certificates, load_private_key
from ..client.api import CredentialError, check_key_matches
from ..files import OutputError, certificates_pem, check_writable, private_key_pem, write_secret
from ..idevid import DeviceMaker
from . import CliError
from .token_options import add_token_options, refuse_key_uri, token_signing_key

_WRITTEN = "it names a file to write"


def register(subparsers: argparse._SubParsersAction) -> None:
    idevid = subparsers.add_parser("idevid", help="a test device maker and its IDevIDs")
    sub = idevid.add_subparsers(dest="idevid_command", required=True, metavar="SUBCOMMAND")

    maker = sub.add_parser("maker", help="create a device maker's CA (certificate and key)")
    maker.add_argument("--out-cert", required=True, metavar="PEM", help="its certificate")
    maker.add_argument("--out-key", required=True, metavar="KEY", help="its key (mode 0600)")
    maker.add_argument("--name", default="estcoap test device maker", help="its common name")
    maker.set_defaults(func=_maker)

    issue = sub.add_parser("issue", help="issue one device's IDevID (subject serialNumber)")
    issue.add_argument(
        "--maker-cert",
        required=True,
        metavar="PEM",
        help="the device maker's certificate (idevid maker)",
    )
    issue.add_argument(
        "--maker-key",
        required=True,
        metavar="KEY|URI",
        help="its private key: a file, or a pkcs11: URI of a key in a token (docs/hsm.md)",
    )
    issue.add_argument("--serial", required=True, help="the device's serial number")
    issue.add_argument("--out-cert", required=True, metavar="PEM", help="the IDevID")
    issue.add_argument("--out-key", required=True, metavar="KEY", help="its key (mode 0600)")
    add_token_options(issue, "--maker-key")
    issue.set_defaults(func=_issue)


def _refuse_existing(*paths: str) -> None:
    """Before anything is made: outputs new and writable (no key without its certificate)."""
    for path in paths:
        if Path(path).exists():
            raise CliError(f"{path} exists; not overwriting it")
        try:
            check_writable(path)
        except OutputError as exc:
            raise CliError(str(exc)) from None


def _maker(args: argparse.Namespace) -> int:
    refuse_key_uri("--out-key", args.out_key, f"{_WRITTEN} (the maker's key is made here)")
    refuse_key_uri("--out-cert", args.out_cert, _WRITTEN)
    _refuse_existing(args.out_cert, args.out_key)
    maker = DeviceMaker.create(args.name)
    write_secret(args.out_key, private_key_pem(maker.private_key), overwrite=False)
    Path(args.out_cert).write_bytes(certificates_pem([maker.certificate]))
    print(
        f"device maker {maker.certificate.subject.rfc4514_string()}: "
        f"{args.out_cert}, key {args.out_key} (mode 0600)"
    )
    return 0


def _issue(args: argparse.Namespace) -> int:
    refuse_key_uri("--out-key", args.out_key, f"{_WRITTEN} (the device's key is made here)")
    refuse_key_uri("--out-cert", args.out_cert, _WRITTEN)
    refuse_key_uri("--maker-cert", args.maker_cert, "it names the maker's certificate")
    _refuse_existing(args.out_cert, args.out_key)
    try:
        cert = load_certificates(args.maker_cert)[0]
    except CredentialError as exc:
        raise CliError(f"--maker-cert {exc}") from None
    try:
        key = (
            token_signing_key(args, "--maker-key", args.maker_key)[0]
            if is_pkcs11_uri(args.maker_key)
            else load_private_key(args.maker_key)
        )
    except CredentialError as exc:
        raise CliError(f"--maker-key {exc}") from None
    try:
        check_key_matches(cert, key, args.maker_cert, args.maker_key)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CliError(f"--maker-key {args.maker_key}: a device maker's key is an EC key")
    maker = DeviceMaker(cert, key)
    idevid, idevid_key = maker.issue_idevid(args.serial)
    write_secret(args.out_key, private_key_pem(idevid_key), overwrite=False)
    Path(args.out_cert).write_bytes(certificates_pem([idevid]))
    print(f"IDevID {idevid.subject.rfc4514_string()}: {args.out_cert}, key {args.out_key}")
    return 0
