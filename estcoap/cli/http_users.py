"""HTTP users and auth schemes for the commands that serve EST over HTTPS (serve, proxy),
and `estcoap users add|list|remove FILE ...`, which keeps the users file.

Passwords on the command line are readable by every local user (ps, /proc/PID/cmdline),
so --user still works but warns; a users file (estcoap users add) or the ESTCOAP_USERS
environment variable (readable only by the same user) keep them out of sight.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from ..files import OutputError, check_writable, write_file
from ..https.auth import DEFAULT_SCHEMES, SCHEMES, parse_schemes
from ..https.users import (
    REALM,
    User,
    UsersFileError,
    format_user_line,
    parse_users_file,
    user_from_arg,
)
from . import CliError, UsageError
from .table import print_table

USERS_ENV = "ESTCOAP_USERS"


def add_options(parser: argparse.ArgumentParser, *, user_help: str) -> None:
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help=f"{user_help} (repeatable). The password is visible to every local user: prefer "
        f"--users-file or {USERS_ENV} (one NAME:PASSWORD per line)",
    )
    parser.add_argument(
        "--users-file",
        metavar="FILE",
        help="users with hashed passwords, made with `estcoap users add FILE NAME`",
    )
    parser.add_argument(
        "--http-auth",
        metavar="SCHEMES",
        default=",".join(DEFAULT_SCHEMES),
        help=f"HTTP auth schemes to offer, in order, from {', '.join(SCHEMES)} "
        "(default: %(default)s). libEST clients read only the first challenge and know only "
        "MD5: give them digest-md5,basic",
    )


def warn_password_argument(command: str, option: str, instead: str) -> None:
    print(
        f"estcoap {command}: warning: {option} puts a password on the command line, where "
        f"every local user can read it; use {instead} instead",
        file=sys.stderr,
        flush=True,
    )


def load_users(args: argparse.Namespace, command: str) -> list[User]:
    """--user (with a warning), ESTCOAP_USERS, then --users-file."""
    users = [_user_option(u) for u in args.user]  # a malformed --user: only its error
    if args.user:
        warn_password_argument(command, "--user", f"--users-file FILE or {USERS_ENV}")
    lines = [line for line in os.environ.get(USERS_ENV, "").splitlines() if line.strip()]
    try:
        for line in lines:
            try:
                users.append(user_from_arg(line.strip()))
            except UsersFileError:
                raise CliError(f"{USERS_ENV}: expected NAME:PASSWORD on each line") from None
        if args.users_file:
            users += parse_users_file(args.users_file)
    except UsersFileError as exc:
        raise CliError(str(exc)) from exc
    return users


def schemes(args: argparse.Namespace) -> tuple[str, ...]:
    try:
        return parse_schemes(args.http_auth)
    except ValueError as exc:
        raise UsageError(f"--http-auth: {exc}") from None


def _user_option(text: str) -> User:
    try:
        return user_from_arg(text)
    except UsersFileError:  # never echo the value: it may hold a password
        raise UsageError("--user expects NAME:PASSWORD") from None


# ---- estcoap users add|list|remove ------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    users = subparsers.add_parser("users", help="manage the HTTP users file")
    sub = users.add_subparsers(dest="users_command", required=True, metavar="SUBCOMMAND")
    add = sub.add_parser("add", help="add or replace a user (password read from stdin)")
    add.add_argument("file", metavar="FILE", help="the users file (created mode 0600)")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--password",
        help="the password (default: prompt, or read stdin); on the command line every "
        "local user can read it, so prefer the prompt or stdin",
    )
    add.set_defaults(func=_add)

    listing = sub.add_parser("list", help="show the users in a users file (never a hash)")
    listing.add_argument("file", metavar="FILE", help="the users file")
    listing.set_defaults(func=_list)

    remove = sub.add_parser("remove", help="remove a user (an unknown user: exit status 1)")
    remove.add_argument("file", metavar="FILE", help="the users file")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_remove)


def _lines(path: str, *, missing_ok: bool) -> list[str]:
    """The file's lines, its users checked well-formed (a broken file is not rewritten)."""
    if missing_ok and not Path(path).exists():
        return []
    try:
        parse_users_file(path)
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UsersFileError as exc:
        raise CliError(str(exc)) from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a users file (not UTF-8 text)") from None


def _name_of(line: str) -> str | None:
    line = line.strip()
    return None if not line or line.startswith("#") else line.split(":", 1)[0]


def _write(path: str, lines: list[str]) -> None:
    try:
        write_file(path, ("\n".join(lines) + "\n").encode(), secret=True)
    except OutputError as exc:
        raise CliError(str(exc)) from None


def _add(args: argparse.Namespace) -> int:
    try:  # before the password is asked for: a path we cannot write wastes it
        check_writable(args.file)
    except OutputError as exc:
        raise CliError(str(exc)) from None
    kept = [line for line in _lines(args.file, missing_ok=True) if _name_of(line) != args.name]
    password = args.password
    if password is not None:
        warn_password_argument("users add", "--password", "the prompt or stdin")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("empty password")
    try:
        line = format_user_line(args.name, password)
    except UsersFileError as exc:
        raise UsageError(str(exc)) from None
    _write(args.file, [*kept, line])
    print(f"{args.file}: user {args.name} set (Basic: scrypt; Digest: SHA-256 and MD5 HA1)")
    return 0


def _list(args: argparse.Namespace) -> int:
    _lines(args.file, missing_ok=False)
    users = parse_users_file(args.file)
    print_table(
        ("user", "realm", "schemes"),
        [
            (u.name, u.realm, "basic, digest" if u.realm == REALM else "basic (other realm)")
            for u in users
        ],
    )
    return 0


def _remove(args: argparse.Namespace) -> int:
    lines = _lines(args.file, missing_ok=False)
    kept = [line for line in lines if _name_of(line) != args.name]
    if len(kept) == len(lines):
        raise CliError(f"{args.file}: no user {args.name!r}")
    _write(args.file, kept)
    print(f"{args.file}: user {args.name} removed")
    return 0
