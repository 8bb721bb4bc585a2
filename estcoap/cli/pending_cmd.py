"""`estcoap pending list|approve|deny DIR ...`: decide manually approved requests offline.

The CA directory is the first argument (estcoap.cli's rule); the former `--ca DIR` still
works, with a note.
"""

from __future__ import annotations

import argparse

from ..ca import CaPaths, Store, StoreError
from . import CliError, add_ca_dir, ca_dir
from .ca_cmd import who
from .table import print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pending", help="list, approve or deny pending requests")
    sub = parser.add_subparsers(dest="pending_command", required=True, metavar="SUBCOMMAND")

    listing = sub.add_parser("list", help="show requests waiting for a decision (and decided ones)")
    add_ca_dir(listing)
    listing.add_argument(
        "--state", choices=("pending", "approved", "denied"), help="only requests in this state"
    )
    listing.set_defaults(func=_list)

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        decide = sub.add_parser(
            name, help=f"{verb} a pending request (an unknown id: exit status 1)"
        )
        add_ca_dir(decide, after=" ID")
        decide.add_argument("id", type=int, metavar="ID", help="request id from 'pending list'")
        decide.set_defaults(func=_decide, decision=name)


def _open(ca_dir: str) -> Store:
    try:
        return Store.open(CaPaths.of(ca_dir).store_location(), create=False)
    except (StoreError, ValueError) as exc:  # ValueError: a bad store.url
        raise CliError(str(exc)) from exc


def _list(args: argparse.Namespace) -> int:
    with _open(ca_dir(args)) as store:
        records = store.pending_list(args.state)
    print_table(
        ("id", "state", "operation", "label", "subject", "requester", "created"),
        [
            (str(r.id), r.state, r.operation, r.label or "-", r.subject, r.requester, r.created)
            for r in records
        ],
    )
    return 0


def _decide(args: argparse.Namespace) -> int:
    with _open(ca_dir(args)) as store:
        try:
            decide = store.approve if args.decision == "approve" else store.deny
            record = decide(args.id, decided_by=who())  # the audit trail: who decided
        except StoreError as exc:
            raise CliError(str(exc)) from exc
    print(f"request {record.id} ({record.operation}, {record.subject}) {record.state}")
    return 0
