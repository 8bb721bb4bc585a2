"""`estcoap console user add|list|remove DIR ...`: who may sign in to the operator console.

Console users live in DIR/console-users (mode 0600), apart from the EST users of
`estcoap users`: neither kind of password opens the other's door (docs/console.md).
serve re-reads the file when it changes: an added user can sign in at once, a removed
one is signed out at their next click.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from ..ca.paths import ExposedFileError, require_private
from ..console import users as console_users
from . import CliError
from .table import print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("console", help="manage the operator console's users")
    sub = parser.add_subparsers(dest="console_command", required=True, metavar="SUBCOMMAND")
    user = sub.add_parser("user", help="add, list or remove console users")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    add = users.add_parser(
        "add", help="add a console user or change their password (prompt, or one line of stdin)"
    )
    add.add_argument("dir", metavar="DIR", help="the CA directory")
    add.add_argument("name", metavar="NAME", help="letters, digits, '.', '_' or '-'")
    add.set_defaults(func=_add)

    listing = users.add_parser("list", help="list the console users")
    listing.add_argument("dir", metavar="DIR", help="the CA directory")
    listing.set_defaults(func=_list)

    remove = users.add_parser("remove", help="remove a console user (unknown: exit status 1)")
    remove.add_argument("dir", metavar="DIR", help="the CA directory")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_remove)


def _load(ca_dir: str) -> dict[str, console_users.ConsoleUser]:
    path = console_users.users_path(ca_dir)
    if not path.parent.is_dir():
        raise CliError(f"{ca_dir}: no such directory (run 'estcoap ca init {ca_dir}' first)")
    try:
        require_private(path)
        return console_users.load(path)
    except (ExposedFileError, console_users.ConsoleUsersError) as exc:
        raise CliError(str(exc)) from None


def _read_password(name: str) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for console user {name}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the passwords differ; nothing changed")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _add(args: argparse.Namespace) -> int:
    try:
        name = console_users.check_name(args.name)
        users = _load(args.dir)
        password = console_users.check_new_password(_read_password(name))
    except console_users.ConsoleUsersError as exc:
        raise CliError(str(exc)) from None
    existed = name in users
    users[name] = console_users.ConsoleUser(name, console_users.hash_password(password))
    console_users.save(console_users.users_path(args.dir), users)
    print(f"console user {name} {'password changed' if existed else 'added'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    print_table(("name",), [(name,) for name in sorted(_load(args.dir))])
    return 0


def _remove(args: argparse.Namespace) -> int:
    users = _load(args.dir)
    if args.name not in users:
        raise CliError(f"no console user {args.name!r}")
    del users[args.name]
    console_users.save(console_users.users_path(args.dir), users)
    print(f"console user {args.name} removed")
    return 0
