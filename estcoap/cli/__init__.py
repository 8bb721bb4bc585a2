"""The `estcoap` command. Each command group lives in its own module with a register()."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import logsafe
from ..codec.errors import CodecError
from ..service import EstError

# Modules under estcoap.cli that add subcommands; each has register(subparsers).
COMMAND_MODULES = (
    "estcoap.cli.ca_cmd",
    "estcoap.cli.serve_cmd",
    "estcoap.cli.client_cmd",
    "estcoap.cli.pending_cmd",
    "estcoap.cli.demo_cmd",
    "estcoap.cli.idevid_cmd",
    "estcoap.cli.simulate_cmd",
    "estcoap.cli.gateway_cmd",
)

# Long-running commands: they log through logsafe (one line per event, repeats collapsed).
SERVER_COMMANDS = ("serve", "gateway", "proxy")
LOG_LEVELS = ("debug", "info", "warning", "error")


class CliError(Exception):
    """A failure to report as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estcoap",
        description="EST over CoAP/DTLS (RFC 9148) and HTTPS (RFC 7030): CA, server, client.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for name in SERVER_COMMANDS:
        sub.choices[name].add_argument(
            "--log-level", choices=LOG_LEVELS, default="warning",
            help="warning (default): problems only; info: also one line per request refused "
            "or certificate issued; debug: with tracebacks. Repeats are collapsed",
        )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in SERVER_COMMANDS:
        logsafe.install(args.log_level)
    try:
        result = args.func(args)
    except (CliError, EstError, CodecError, OSError) as exc:
        print(f"estcoap {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
