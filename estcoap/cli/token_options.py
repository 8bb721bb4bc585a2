"""--pin-file and --pkcs11-module: how a command reaches a key in a PKCS#11 token (the CA
key of serve and ca, the RA and TLS keys of gateway and proxy).

No --pin option: a PIN on the command line is in every process listing and shell history.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..ca.pkcs11key import (
    MODULE_ENV,
    PIN_ENV,
    Pkcs11EcKey,
    Pkcs11RsaKey,
    find_token_key,
    module_path_for,
)
from ..ca.pkcs11uri import Pkcs11Uri, Pkcs11UriError, is_pkcs11_uri, parse
from ..ca.signer import PinSource
from ..tls_token_key import TokenKeyRef
from . import CliError, UsageError


def add_token_options(parser: argparse.ArgumentParser, what: str = "the CA key") -> None:
    parser.add_argument(
        "--pin-file",
        type=Path,
        metavar="FILE",
        help=f"the token's user PIN (first line) when {what} is in a token; "
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


def token_tls_key(args: argparse.Namespace, option: str, text: str) -> TokenKeyRef:
    """The TLS key a pkcs11: URI given as OPTION names, with its library and PIN (read once,
    here: before any worker is forked). One-line CliErrors; the URI given is never echoed
    (one with a pin-value is refused), only the one rebuilt from the parts it names."""
    try:
        uri = parse(text)
        module = module_path_for(uri, args.pkcs11_module)
    except (Pkcs11UriError, ValueError) as exc:
        raise CliError(f"{option}: {exc}") from None
    key_only = Pkcs11Uri(uri.token, uri.object, uri.id)  # the engine gets no module path
    try:
        pin = pin_source(args).pin(f"token {uri.token!r} ({option})")
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None
    return TokenKeyRef(str(key_only), module, pin)


def token_signing_key(
    args: argparse.Namespace, option: str, text: str
) -> tuple[Pkcs11EcKey | Pkcs11RsaKey, TokenKeyRef]:
    """A key already in a token, named by a pkcs11: URI given as OPTION: the object that
    signs through python-pkcs11 (CSRs, IDevIDs) and the same key as TLS reaches it (the
    engine). The key is found now, so a wrong token, label or PIN is one CliError before
    anything is sent or written; nothing is ever generated for a URI. Two options naming
    keys of one token (reenroll --client-key and --key) ask for its PIN once."""
    try:
        uri = parse(text)
        module = module_path_for(uri, args.pkcs11_module)
    except (Pkcs11UriError, ValueError) as exc:
        raise CliError(f"{option}: {exc}") from None
    pins: dict[tuple[str, str], str] = args.__dict__.setdefault("_token_pins", {})
    if (module, uri.token) not in pins:
        try:
            pins[module, uri.token] = pin_source(args).pin(f"token {uri.token!r} ({option})")
        except ValueError as exc:
            raise CliError(f"{option}: {exc}") from None
    key_only = Pkcs11Uri(uri.token, uri.object, uri.id)  # no module path: the engine's form
    ref = TokenKeyRef(str(key_only), module, pins[module, uri.token])
    try:
        key = find_token_key(key_only, module, ref.pin, what=option)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return key, ref


def refuse_key_uri(option: str, value: str | None, why: str) -> None:
    """A pkcs11: URI given to an option that takes a file (one it reads, or one it writes)
    is a wrong command line told in one line, never a file name: nothing may read or
    create a file called 'pkcs11:token=...'. The URI is not echoed (it may hold a PIN)."""
    if value is not None and is_pkcs11_uri(str(value)):
        raise UsageError(f"{option} takes a file, not a pkcs11: URI: {why}")
