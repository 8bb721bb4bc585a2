"""--pin-file and --pkcs11-module: how a command reaches a CA key in a PKCS#11 token.

No --pin option: a PIN on the command line is in every process listing and shell history.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..ca.pkcs11key import MODULE_ENV, PIN_ENV
from ..ca.signer import PinSource


def add_token_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pin-file",
        type=Path,
        metavar="FILE",
        help=f"the token's user PIN (first line) when the CA key is in a token; "
        f"else ${PIN_ENV}, else a prompt",
    )
    parser.add_argument(
        "--pkcs11-module",
        metavar="PATH",
        help=f"the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so); "
        f"else the key URI's module-path, else ${MODULE_ENV}",
    )


def pin_source(args: argparse.Namespace) -> PinSource:
    return PinSource(pin_file=args.pin_file, module=args.pkcs11_module)
