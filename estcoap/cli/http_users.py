"""HTTP users and auth schemes for the commands that serve EST over HTTPS (serve, proxy).

Passwords on the command line are readable by every local user (ps, /proc/PID/cmdline),
so --user still works but warns; a users file (estcoap users add) or the ESTCOAP_USERS
environment variable (readable only by the same user) keep them out of sight.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..https.auth import DEFAULT_SCHEMES, SCHEMES, parse_schemes
from ..https.users import User, UsersFileError, parse_users_file, user_from_arg
from . import CliError

USERS_ENV = "ESTCOAP_USERS"


def add_options(parser: argparse.ArgumentParser, *, user_help: str) -> None:
    parser.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD",
        help=f"{user_help} (repeatable). The password is visible to every local user: prefer "
        f"--users-file or {USERS_ENV} (one NAME:PASSWORD per line)",
    )  # fmt: skip
    parser.add_argument(
        "--users-file", metavar="FILE",
        help="users with hashed passwords, made with `estcoap users add FILE NAME`",
    )  # fmt: skip
    parser.add_argument(
        "--http-auth", metavar="SCHEMES", default=",".join(DEFAULT_SCHEMES),
        help=f"HTTP auth schemes to offer, in order, from {', '.join(SCHEMES)} "
        "(default: %(default)s). libEST clients read only the first challenge and know only "
        "MD5: give them digest-md5,basic",
    )  # fmt: skip


def warn_password_argument(command: str, option: str, instead: str) -> None:
    print(
        f"estcoap {command}: warning: {option} puts a password on the command line, where "
        f"every local user can read it; use {instead} instead",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def load_users(args: argparse.Namespace, command: str) -> list[User]:
    """--user (with a warning), ESTCOAP_USERS, then --users-file."""
    if args.user:
        warn_password_argument(command, "--user", f"--users-file FILE or {USERS_ENV}")
    lines = [line for line in os.environ.get(USERS_ENV, "").splitlines() if line.strip()]
    try:
        users = [user_from_arg(u) for u in args.user]
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
        raise CliError(f"--http-auth: {exc}") from exc
