"""`estcoap psk add|list|remove DIR ...`: pre-shared keys for certificate-less enrollment.

A device with no IDevID, only a key (on a label, or loaded at manufacturing), enrolls
over `serve --coaps-psk` with it (docs/psk.md). Each key is bound to the subject the
device may enroll as, a number of uses (one: a one-time bootstrap key) and optionally
an expiry. Keys are never printed back: `--generate` prints the new key once, alone on
stdout, so a script can take it (`KEY=$(estcoap psk add ca dev-1 --generate)`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import secrets
import sys
from typing import Any

from ..ca import CaPaths, LocalCA, Store, StoreError
from ..ca.psk_table import PskError, check_identity, check_key
from ..codec.names import NameSyntaxError, format_name, parse_name
from ..pskengine import PskUnavailable, parse_psk_key
from . import CliError, UsageError, add_ca_dir, ca_dir, ops, positive_int
from .table import print_table
from .token_options import refuse_key_uri

GENERATED_KEY_BYTES = 16
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "psk", help="pre-shared keys for devices that enroll without a certificate"
    )
    sub = parser.add_subparsers(dest="psk_command", required=True, metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="add a PSK identity (an identity that exists: exit status 1)")
    add_ca_dir(add, after=" IDENTITY")
    add.add_argument("identity", metavar="IDENTITY", help="the PSK identity the device sends")
    key = add.add_mutually_exclusive_group(required=True)
    key.add_argument("--psk-key", metavar="HEX", help="the key, 16 to 32 bytes in hex")
    key.add_argument("--psk-key-file", metavar="FILE", help="read the key (hex) from FILE")
    key.add_argument(
        "--generate",
        action="store_true",
        help=f"make a random {GENERATED_KEY_BYTES}-byte key and print it once (hex, on stdout)",
    )
    # --key, as the issue spelt it, is --psk-key (--key names a certificate's key elsewhere)
    key.add_argument("--key", dest="psk_key", help=argparse.SUPPRESS)
    add.add_argument(
        "--subject",
        metavar="DN",
        help='the only subject the device may enroll as, e.g. "serialNumber=dev-1,CN=dev-1" '
        "(default: CN=IDENTITY)",
    )
    add.add_argument(
        "--uses",
        type=positive_int,
        default=1,
        help="certificates the key may be spent on (1: a one-time bootstrap key)",
    )
    add.add_argument(
        "--expires",
        metavar="WHEN",
        help="after this the key is refused: a duration (30d, 12h, 90m, 2w) or an ISO 8601 "
        "time (default: never)",
    )
    add.set_defaults(func=_add)

    listing = sub.add_parser("list", help="show the PSK identities (never their keys)")
    add_ca_dir(listing)
    listing.set_defaults(func=_list)

    remove = sub.add_parser("remove", help="remove a PSK identity (unknown: exit status 1)")
    add_ca_dir(remove, after=" IDENTITY")
    remove.add_argument("identity", metavar="IDENTITY")
    remove.set_defaults(func=_remove)


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """30d, 12h, 90m, 2w, 3600s from now, or an ISO 8601 time (UTC unless it says)."""
    now = now or dt.datetime.now(dt.UTC)
    found = _DURATION_RE.fullmatch(text.strip())
    if found:
        return now + dt.timedelta(seconds=int(found[1]) * _UNITS[found[2]])
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--expires {text!r}: give a duration (30d, 12h, 90m, 2w) or an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if moment <= now:
        raise UsageError(f"--expires {text!r} is in the past")
    return moment


def _key(args: argparse.Namespace) -> bytes:
    if args.generate:
        return secrets.token_bytes(GENERATED_KEY_BYTES)
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
        return check_key(parse_psk_key(text))
    except (ValueError, PskError) as exc:
        raise UsageError(str(exc)) from None


def _open(ca_dir: str) -> Store:
    try:
        return Store.open(CaPaths.of(ca_dir).store_location(), create=False)
    except (StoreError, ValueError) as exc:  # ValueError: a bad store.url
        raise CliError(str(exc)) from exc


def _add(args: argparse.Namespace) -> int:
    try:
        check_identity(args.identity)
    except PskError as exc:
        raise UsageError(str(exc)) from None
    subject_text = args.subject if args.subject is not None else f"CN={args.identity}"
    try:
        subject = parse_name(subject_text)
    except NameSyntaxError as exc:
        raise UsageError(f"--subject: {exc}") from None
    if not list(subject):
        raise UsageError("--subject: give at least one attribute")
    expires = parse_expiry(args.expires) if args.expires is not None else None
    key = _key(args)
    with _open(ca_dir(args)) as store:
        try:
            record = store.psk_add(
                args.identity,
                key,
                subject=format_name(subject),
                uses=args.uses,
                expires=expires,
            )
        except PskError as exc:
            raise CliError(str(exc)) from None
    if args.generate:
        print(key.hex(), flush=True)  # the only time the key is shown
    until = f", until {record.expires}" if record.expires else ""
    print(
        f"added PSK identity {record.identity!r} for {record.subject}: "
        f"{record.uses_left} use(s){until}",
        file=sys.stderr if args.generate else sys.stdout,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(ca_dir(args)) as store:
        records = store.psk_list()
    print_table(
        ("identity", "subject", "uses left", "expires", "state", "created"),
        [
            (r.identity, r.subject, str(r.uses_left), r.expires or "never", r.state(), r.created)
            for r in records
        ],
    )
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _open(ca_dir(args)) as store:
        if not store.psk_remove(args.identity):
            raise CliError(f"no PSK identity {args.identity!r}")
    print(f"removed PSK identity {args.identity!r}")
    return 0


# ---- serve --coaps-psk ------------------------------------------------------------------


async def start_coaps_psk_front(
    args: argparse.Namespace, service: LocalCA, binds: list[tuple[str, int]]
) -> list[Any]:
    """serve's PSK DTLS front: one tinydtls listener per address, keys from the CA store."""
    from ..coap.psk import start_coaps_psk_server

    servers = []
    try:
        for bind in binds:
            server = await start_coaps_psk_server(
                service,
                bind,
                psk_keys=service.store.psk_usable_key,
                labels=tuple(args.label),
                short_root=args.coap_root,
                max_body=args.max_body,
                request_hook=ops.front_hook(args, "coaps"),
            )
            servers.append(server)
            print(f"serving EST-coaps with PSK DTLS on {server.url}", flush=True)
    except PskUnavailable as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # the any-address, which tinydtls' server cannot bind
        raise UsageError(f"--coaps-psk: {exc}") from None
    return servers
