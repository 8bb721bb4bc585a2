"""The `estcoap` command. Each command group lives in its own module with a register().

Rules every command follows (a new command or option follows them too):

* A CA directory: a command that administers one (`ca ...`, `pending ...`, `psk ...`) takes it as
  its first positional argument: `estcoap ca issued DIR`, `estcoap pending approve DIR ID`.
  `serve` names it with `--ca DIR` (it takes no positional arguments). The former
  `--ca DIR` of the ca and pending commands still works and prints a one-line note.
* Keys and certificates, by what they are:
  - a credential this program presents is a pair named after whose it is:
    `--client-cert`/`--client-key`, `--server-cert`/`--server-key`, `--ra-cert`/`--ra-key`,
    `--maker-cert`/`--maker-key`;
  - `--key` is the key a certificate is asked for (enroll; reenroll to rekey), created
    when the file does not exist;
  - what a command writes starts with `--out`: `--out` (its main output, a certificate),
    `--out-cert`, `--out-key`;
  - trust anchors: `--trust` (a client's, for its server), `--trust-clients`,
    `--upstream-trust`.
  A renamed option keeps its former spelling as a hidden alias.
* Every option's default shows in --help (show_defaults adds it).
* A numeric option's type states its range (number(): positive_int, positive_seconds, ...),
  so argparse refuses a value out of it, before the command does anything.
* Errors are one line on stderr, never a traceback. Exit status: 0 done; 1 the
  operation failed, including an unknown serial, user or request id; 2 the command line
  is wrong (unknown option, missing or malformed value), as argparse's own errors.
  `ca revoke` tells what was not revoked apart: 3 no such certificate, 4 revoked already.
  `simulate` exits 1 when no device was provisioned.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .. import config, logsafe
from ..codec.errors import CodecError
from ..runtime import DEFAULT_DRAIN_TIMEOUT
from ..service import EstError

# Modules under estcoap.cli that add subcommands; each has register(subparsers).
COMMAND_MODULES = (
    "estcoap.cli.ca_cmd",
    "estcoap.cli.serve_cmd",
    "estcoap.cli.http_users",
    "estcoap.cli.client_cmd",
    "estcoap.cli.pending_cmd",
    "estcoap.cli.demo_cmd",
    "estcoap.cli.psk_cmd",
    "estcoap.cli.idevid_cmd",
    "estcoap.cli.simulate_cmd",
    "estcoap.cli.gateway_cmd",
    "estcoap.cli.config_cmd",
    "estcoap.cli.console_cmd",
)

# Long-running commands: they log through logsafe (one line per event, repeats collapsed).
SERVER_COMMANDS = ("serve", "gateway", "proxy")
# Commands that take --config FILE (estcoap.config: a TOML file of their options).
CONFIG_COMMANDS = (*SERVER_COMMANDS, "simulate")
LOG_LEVELS = ("debug", "info", "warning", "error")

EXIT_STATUS = (
    "exit status: 0 done; 1 the operation failed (also: unknown serial, user or request id); "
    "2 the command line is wrong; ca revoke: 3 no such certificate, 4 revoked already"
)


class CliError(Exception):
    """A failure to report as one line, exit status 1."""

    exit_status = 1


class UsageError(CliError):
    """A malformed or missing option value, found after parsing: exit status 2, as
    argparse's own errors, so scripts tell a wrong command line from a failed operation."""

    exit_status = 2


class Parser(argparse.ArgumentParser):
    """Every command's parser (subparsers inherit the class): argparse's errors in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def number(
    kind: Callable[[str], Any],
    what: str,
    *,
    least: float | None = None,
    above: float | None = None,
    most: float | None = None,
    below: float | None = None,
) -> Callable[[str], Any]:
    """An argparse type for a numeric option: a finite kind (int or float) >= least, > above,
    <= most and < below. argparse refuses anything else in one line: "argument --X: expected
    WHAT, got 'TEXT'" (exit status 2), before the command does anything."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if (
            value is None
            or not math.isfinite(value)  # nan and inf would get past the bounds below
            or (least is not None and value < least)
            or (above is not None and value <= above)
            or (most is not None and value > most)
            or (below is not None and value >= below)
        ):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = number(int, "a positive integer", least=1)
non_negative_int = number(int, "an integer >= 0", least=0)
positive_seconds = number(float, "seconds > 0", above=0)
non_negative_seconds = number(float, "seconds >= 0", least=0)
# A certificate's lifetime: beyond about 8000 years its notAfter is past the year 9999,
# which no date type holds; a century is more than any certificate needs.
validity_days = number(int, "a number of days from 1 to 36500", least=1, most=36500)


def version() -> str:
    try:
        return importlib.metadata.version("estcoap")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown (not installed)"


def add_ca_dir(parser: argparse.ArgumentParser, after: str = "") -> None:
    """DIR, the CA directory, as the first positional argument; the former `--ca DIR` is
    still accepted (hidden) and notes the new form. `after` is the rest of the new form
    for the note, e.g. " ID". Read it with ca_dir(args)."""
    parser.add_argument("dir", nargs="?", metavar="DIR", help="the CA directory (ca init)")
    parser.add_argument("--ca", dest="deprecated_ca", metavar="DIR", help=argparse.SUPPRESS)
    parser.set_defaults(ca_dir_form=f"{parser.prog} DIR{after}")


def ca_dir(args: argparse.Namespace) -> str:
    if args.deprecated_ca is None:
        if args.dir is None:
            raise UsageError(f"the CA directory is missing: {args.ca_dir_form}")
        return str(args.dir)
    if args.dir is not None:
        raise UsageError(f"give the CA directory once: {args.ca_dir_form}")
    print(f"note: use '{args.ca_dir_form}' (--ca DIR is deprecated)", file=sys.stderr, flush=True)
    return str(args.deprecated_ca)


def add_hidden_alias(parser: argparse.ArgumentParser, old: str, dest: str) -> None:
    """Accept a renamed option's former spelling, without showing it in --help."""
    parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every subcommand parser under it, each once."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(all_parsers(sub))
    return found


def shows_default(action: argparse.Action) -> bool:
    """Whether --help must state this option's default: it takes a value and has one."""
    return (
        bool(action.option_strings)
        and action.nargs != 0
        and action.help is not argparse.SUPPRESS
        and action.default not in (None, argparse.SUPPRESS, [])
    )


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append "(default: X)" to the help of every option that has a default."""
    for each in all_parsers(parser):
        for action in each._actions:
            if shows_default(action) and "%(default)" not in (action.help or ""):
                action.help = (
                    f"{action.help} (default: %(default)s)"
                    if action.help
                    else ("default: %(default)s")
                )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estcoap",
        description="EST over CoAP/DTLS (RFC 9148) and HTTPS (RFC 7030): CA, server, client.",
        epilog="A CA directory is the first argument of the ca and pending commands "
        "(serve: --ca DIR). Credentials are --X-cert/--X-key (client, server, ra, maker); "
        f"outputs start with --out; --key is the key a certificate is for. {EXIT_STATUS}.",
    )
    parser.add_argument("--version", action="version", version=f"estcoap {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for name in SERVER_COMMANDS:
        sub.choices[name].add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default="warning",
            help="warning: problems only; info: also one line per request "
            "and certificate issued; debug: with tracebacks. Repeats are collapsed",
        )
        sub.choices[name].add_argument(
            "--log-format",
            choices=logsafe.LOG_FORMATS,
            default="text",
            help="text: one line per event; json: one JSON object per line (docs/operations.md)",
        )
    for name in SERVER_COMMANDS:
        sub.choices[name].add_argument(
            "--drain-timeout",
            type=non_negative_seconds,
            default=DEFAULT_DRAIN_TIMEOUT,
            metavar="SECONDS",
            help="on SIGTERM/SIGINT: how long requests in flight may take to finish "
            "(nothing new is accepted meanwhile); then every session is closed",
        )
    for name in CONFIG_COMMANDS:
        sub.choices[name].add_argument(
            "--config",
            metavar="FILE",
            help=f"read options from this TOML file (keys: 'estcoap config example {name}'); "
            "options on the command line override it",
        )
    show_defaults(parser)
    return parser


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def read_config(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, list[Any]]:
    """Apply --config FILE (before the command line is parsed, so the command line wins);
    a file that cannot be used is a wrong command line: one line, exit status 2."""
    found = config.find_config(argv, CONFIG_COMMANDS)
    if found is None:
        return {}
    command, path = found
    sub = subcommand(parser, command)
    try:
        return config.apply(sub, config.load(path, sub))
    except config.ConfigError as exc:
        sub.exit(2, f"estcoap {command}: --config {exc}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, over the --config file's settings when one is given."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    from_file = read_config(parser, argv)
    args = parser.parse_args(argv)
    config.replaced_lists(args, from_file)
    return args


def describe(exc: Exception) -> str:
    """One line; an OSError names its file without Python's "[Errno N]"."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command in SERVER_COMMANDS:
        logsafe.install(args.log_level, fmt=args.log_format)
    try:
        result = args.func(args)
    except CliError as exc:
        print(f"estcoap {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except (EstError, CodecError, OSError) as exc:
        print(f"estcoap {args.command}: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
