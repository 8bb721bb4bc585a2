"""`estcoap config example COMMAND`: a commented TOML file of COMMAND's options, for
`estcoap COMMAND --config FILE` (estcoap.config)."""

from __future__ import annotations

import argparse
import sys

from .. import config


def register(subparsers: argparse._SubParsersAction) -> None:
    from . import CONFIG_COMMANDS

    cfg = subparsers.add_parser("config", help="config files for serve, gateway, proxy, simulate")
    sub = cfg.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    example = sub.add_parser(
        "example", help="print a commented config file with every key and its default"
    )
    example.add_argument(
        "for_command",
        choices=CONFIG_COMMANDS,
        metavar="COMMAND",
        help=f"one of {', '.join(CONFIG_COMMANDS)}",
    )
    example.set_defaults(func=_example)


def _example(args: argparse.Namespace) -> int:
    from . import build_parser, subcommand

    command = args.for_command
    sys.stdout.write(config.example(subcommand(build_parser(), command), command))
    return 0
