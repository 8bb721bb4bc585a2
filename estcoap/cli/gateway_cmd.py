"""`estcoap gateway` (EST-coaps devices -> an HTTPS EST server, RFC 9148 s5) and
`estcoap proxy` (EST over HTTPS -> an HTTPS EST server, an RFC 7030 RA).

Both build the same Upstream service from the same --upstream* options and put a
different front before it. They print one ready line, then serve until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from cryptography import x509

from .. import runtime as reload_items
from .. import workers
from ..ca.pkcs11uri import is_pkcs11_uri
from ..client import load_certificates, load_private_key
from ..client.api import CredentialError, check_key_matches
from ..revocation import CrlError, RevocationChecker
from ..runtime import Runtime
from ..runtime import front_for as runtime_front
from ..serving import settle_heap
from ..tls_token_key import TokenKeyError, TokenKeyRef
from . import CliError, UsageError, http_users, ops, positive_int, positive_seconds
from .serve_cmd import claim_ports, listen_error, parse_host_port, worker_metrics
from .token_options import add_token_options, refuse_key_uri, token_tls_key

# The upstream's credentials, kept out of the command line (which every local user can read).
UPSTREAM_USER_ENV = "ESTCOAP_UPSTREAM_USER"


def register(subparsers: argparse._SubParsersAction) -> None:
    gw = subparsers.add_parser(
        "gateway", help="serve EST-coaps to devices, forwarding to an HTTPS EST server"
    )
    gw.add_argument(
        "--coaps", required=True, metavar="HOST:PORT", help="serve EST-coaps (DTLS) here"
    )
    gw.add_argument("--short-root", metavar="PATH", help="also serve and advertise e.g. /est")
    gw.add_argument(
        "--coaps-psk",
        metavar="HOST:PORT",
        help="also serve devices that have a pre-shared key instead of a certificate, over "
        "PSK DTLS here (needs --psk-file and the psk extra; docs/psk.md)",
    )
    gw.add_argument(
        "--psk-file",
        metavar="FILE",
        help="the PSK devices, one a line: IDENTITY KEYHEX SUBJECT (mode 0600; spent keys "
        "are recorded in FILE.spent)",
    )
    _add_common(gw)
    gw.set_defaults(func=_gateway)

    proxy = subparsers.add_parser(
        "proxy", help="serve EST over HTTPS, forwarding to another HTTPS EST server (RA)"
    )
    proxy.add_argument("--https", required=True, metavar="HOST:PORT", help="serve EST here")
    http_users.add_options(proxy, user_help="an HTTP Basic/Digest user allowed to enroll")
    _add_common(proxy)
    proxy.set_defaults(func=_proxy)


def _add_common(parser: argparse.ArgumentParser) -> None:
    up = parser.add_argument_group("upstream (the RFC 7030 EST server)")
    up.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="e.g. https://est.example:8443/.well-known/est",
    )
    up.add_argument(
        "--upstream-trust",
        action="append",
        default=[],
        metavar="PEM",
        help="trust anchors for the upstream's TLS certificate (default: the system's)",
    )
    up.add_argument("--ra-cert", metavar="PEM", help="our RA certificate chain (id-kp-cmcRA)")
    up.add_argument(
        "--ra-key",
        metavar="KEY",
        help="its private key: a PEM file, or a pkcs11: URI of a key in a token (docs/hsm.md)",
    )
    up.add_argument(
        "--upstream-user",
        metavar="NAME:PASSWORD",
        help="HTTP Basic/Digest credentials for the upstream; visible to every "
        f"local user: prefer {UPSTREAM_USER_ENV}=NAME:PASSWORD",
    )
    up.add_argument(
        "--upstream-user-file",
        metavar="FILE",
        help="a file whose first line is NAME:PASSWORD for the upstream (keep it 0600; the "
        "config file can then be committed)",
    )
    up.add_argument(
        "--upstream-timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="per request; a slower upstream gives the device 5.04 / 504",
    )
    up.add_argument(
        "--upstream-connections",
        type=positive_int,
        default=8,
        metavar="N",
        help="keep-alive connections to the upstream at most",
    )
    add_token_options(parser, "--ra-key or --server-key")
    ops.add_options(parser)
    workers.add_options(parser)
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="auto: uvloop when installed (pip install 'estcoap[fast]'), else asyncio's",
    )
    up.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME[=UPSTREAM]",
        help="serve label NAME, forwarded as UPSTREAM (default the same; empty = no label)",
    )
    dev = parser.add_argument_group("devices")
    dev.add_argument(
        "--server-cert", required=True, metavar="PEM", help="our server certificate chain"
    )
    dev.add_argument(
        "--server-key",
        required=True,
        metavar="KEY",
        help="its private key (the proxy's may be a pkcs11: URI; the gateway's DTLS key not)",
    )
    dev.add_argument(
        "--trust-clients",
        action="append",
        default=[],
        metavar="PEM",
        help="CAs whose device certificates may enroll, e.g. IDevID makers (repeatable); "
        "the upstream CA is added for re-enrollment",
    )
    dev.add_argument(
        "--crl",
        action="append",
        default=[],
        metavar="FILE",
        help="a CRL (PEM or DER) of a --trust-clients CA or of the upstream CA: devices whose "
        "certificate it lists are refused 4.03/403 (repeatable; reloaded when the file "
        "changes; a stale or badly signed one refuses that CA's devices, docs/revocation.md)",
    )
    dev.add_argument(
        "--require-pop",
        action="store_true",
        help="require tls-unique proof-of-possession from devices",
    )


# ---- building the pieces ---------------------------------------------------------


def _certs(paths: list[str], option: str) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for path in paths:
        try:
            out.extend(load_certificates(path))
        except CredentialError as exc:  # names the file and what is wrong with it
            raise CliError(f"{option} {exc}") from None
    return out


def _identity(
    prefix: str, cert_path: str, key_path: str, token: TokenKeyRef | None = None
) -> tuple[list[x509.Certificate], Any]:
    """--PREFIX-cert and --PREFIX-key loaded and checked to belong together, before any
    socket (OpenSSL would say only "key values mismatch", in a traceback). A key in a
    token (token, resolved from the URI by _token_keys) is checked against the
    certificate when it is put on its TLS context, which happens before any socket too."""
    chain = _certs([cert_path], f"--{prefix}-cert")
    if token is not None:
        return chain, token
    try:
        key = load_private_key(key_path)
    except CredentialError as exc:
        raise CliError(f"--{prefix}-key {exc}") from None
    try:
        check_key_matches(chain[0], key, cert_path, key_path)
    except CredentialError as exc:
        raise CliError(str(exc)) from None
    return chain, key


def parse_labels(items: list[str]) -> dict[str, str | None]:
    labels: dict[str, str | None] = {}
    for item in items:
        name, sep, upstream = item.partition("=")
        if not name:
            raise UsageError(f"--label needs a name, got {item!r}")
        labels[name] = (upstream or None) if sep else name
    return labels


def upstream_credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(NAME, PASSWORD) for the upstream from --upstream-user (warned about), the
    --upstream-user-file or ESTCOAP_UPSTREAM_USER, in that order; (None, None) without."""
    if args.upstream_user:
        http_users.warn_password_argument(args.command, "--upstream-user", UPSTREAM_USER_ENV)
    credentials = (
        args.upstream_user
        or _first_line(args.upstream_user_file)
        or os.environ.get(UPSTREAM_USER_ENV)
    )
    if not credentials:
        return None, None
    user, sep, password = credentials.partition(":")
    if not sep or not user or not password:
        origin = (
            "--upstream-user"
            if args.upstream_user
            else args.upstream_user_file or UPSTREAM_USER_ENV
        )
        error = UsageError if args.upstream_user else CliError
        raise error(f"{origin} expects NAME:PASSWORD")
    return user, password


def _first_line(path: str | None) -> str | None:
    """The first line of a secret's file (never echoed), None when no file is given."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise CliError(f"--upstream-user-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"--upstream-user-file {path}: not UTF-8 text") from None


def build_upstream(args: argparse.Namespace) -> Any:
    # Imported here: the gateway pulls in aiocoap and the fronts, which other commands skip.
    from ..gateway import UpstreamSettings, open_upstream, parse_upstream_url

    try:
        parse_upstream_url(args.upstream)
    except ValueError as exc:
        raise UsageError(f"--upstream: {exc}") from None
    if (args.ra_cert is None) != (args.ra_key is None):
        raise UsageError("--ra-cert and --ra-key go together")
    user, password = upstream_credentials(args)
    ra_chain, ra_key = (
        _identity("ra", args.ra_cert, args.ra_key, args.ra_token) if args.ra_cert else ([], None)
    )
    settings = UpstreamSettings(
        url=args.upstream,
        trust=_certs(args.upstream_trust, "--upstream-trust") or None,
        ra_chain=ra_chain,
        ra_key=ra_key,
        user=user,
        password=password,
        timeout=args.upstream_timeout,
        connections=args.upstream_connections,
        labels=parse_labels(args.label),
    )
    trust_clients = _certs(args.trust_clients, "--trust-clients")
    _identity("server", args.server_cert, args.server_key, args.server_token)
    try:
        return open_upstream(
            settings,
            trust_clients=trust_clients,
            require_pop=args.require_pop,
        )
    except TokenKeyError as exc:  # the RA key's context is made here
        raise CliError(f"--ra-key: {exc}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from exc


async def attach_crls(upstream: Any, args: argparse.Namespace) -> None:
    """The --crl files, verified against the device anchors (makers and the upstream CA,
    fetched first for that), become the Upstream's revocation check."""
    if not args.crl:
        return
    from ..gateway.wiring import learn_upstream_ca

    await learn_upstream_ca(upstream)  # a CRL of the upstream CA is verified by its key
    try:
        upstream.revocation = RevocationChecker(upstream.client_trust_anchors(), args.crl)
    except CrlError as exc:
        await upstream.transport.close()
        raise CliError(f"--crl {exc}") from None


async def _start_gateway(args: argparse.Namespace) -> Any:
    from ..gateway import start_gateway
    from ..gateway.loop import loop_name

    host, port = parse_host_port(args.coaps, "--coaps")
    upstream = build_upstream(args)
    await attach_crls(upstream, args)
    try:
        running = await start_gateway(
            upstream,
            [(host, port)],
            cert_chain=args.server_cert,
            key=args.server_key,
            short_root=args.short_root,
            request_hook=ops.front_hook(args, "gateway"),
        )
    except ValueError as exc:
        await upstream.transport.close()
        if not upstream.client_trust_anchors():  # say it with the flag, not the parameter
            raise CliError(
                "no trust anchors for device certificates: give --trust-clients PEM (the "
                "upstream's CA, trusted for re-enrollment, could not be fetched)"
            ) from None
        raise CliError(str(exc)) from exc
    except OSError as exc:
        await upstream.transport.close()
        raise listen_error([(host, port)], "udp", exc) from None
    if running.warning:
        print(f"estcoap gateway: warning: {running.warning}", file=sys.stderr, flush=True)
    loop = loop_name(asyncio.get_running_loop())
    print(f"gateway: serving EST-coaps on {running.url} -> {args.upstream} ({loop})", flush=True)
    if args.coaps_psk is not None:
        await _start_psk(args, running)
    return running


async def _start_psk(args: argparse.Namespace, running: Any) -> None:
    """--coaps-psk: the PSK devices of --psk-file over PSK DTLS, forwarded like the rest."""
    from ..gateway.psk_devices import PskDevices, PskFileError
    from ..gateway.wiring import start_psk_front
    from ..pskengine import PskUnavailable, require_dtlssocket

    bind = parse_host_port(args.coaps_psk, "--coaps-psk")
    try:
        require_dtlssocket()
        devices = PskDevices(args.psk_file)
        server = await start_psk_front(running, bind, devices, short_root=args.short_root)
    except (PskUnavailable, PskFileError) as exc:
        await running.close()
        raise CliError(str(exc)) from None
    except ValueError as exc:  # the any-address, which tinydtls' server cannot bind
        await running.close()
        raise UsageError(f"--coaps-psk: {exc}") from None
    except OSError as exc:
        await running.close()
        raise listen_error([bind], "udp", exc) from None
    print(
        f"gateway: serving EST-coaps with PSK DTLS on {server.url} -> {args.upstream}", flush=True
    )


async def _start_proxy(args: argparse.Namespace) -> Any:
    from ..gateway import start_proxy
    from ..gateway.loop import loop_name

    users = http_users.load_users(args, "proxy")
    schemes = http_users.schemes(args)
    host, port = parse_host_port(args.https, "--https")
    upstream = build_upstream(args)
    await attach_crls(upstream, args)
    try:
        running = await start_proxy(
            upstream,
            host,
            port,
            cert_chain=args.server_cert,
            key=args.server_token or args.server_key,
            users=users,
            http_auth=schemes,
            request_hook=ops.front_hook(args, "proxy"),
        )
    except TokenKeyError as exc:
        await upstream.transport.close()
        raise CliError(f"--server-key: {exc}") from None
    except OSError as exc:
        await upstream.transport.close()
        raise listen_error([(host, port)], "tcp", exc) from None
    if running.warning:
        print(f"estcoap proxy: warning: {running.warning}", file=sys.stderr, flush=True)
    loop = loop_name(asyncio.get_running_loop())
    print(f"proxy: serving EST over HTTPS on {running.url} -> {args.upstream} ({loop})", flush=True)
    return running


async def _serve(start: Any, args: argparse.Namespace) -> None:
    runtime = Runtime(args.command, args.drain_timeout)
    runtime.install()
    ops.begin(args)
    running = await start(args)
    ops.watch(args, "upstream", running.upstream)
    ops.watch(args, "coaps" if args.command == "gateway" else "https", running.server)
    _watch_certificates(args)
    for started in await ops.listen(args):
        runtime.after_fronts(started.close)
    front = runtime_front(running.server)
    if front is not None:
        runtime.add_front(front)
    if running.psk_server is not None:
        runtime.after_fronts(running.psk_server.close)
    runtime.after_fronts(running.upstream.transport.close)  # answers in flight need it
    _reloadable(runtime, args, running.upstream)
    workers.ready()
    settle_heap()
    try:
        await runtime.wait()
        await runtime.drain()
    finally:
        await runtime.close()  # after an error; nothing left to do after drain()


def _watch_certificates(args: argparse.Namespace) -> None:
    """The expiry of the certificates the process presents (--metrics)."""
    ops.watch_certificate_files(args, server=args.server_cert, ra=args.ra_cert)


def _reloadable(runtime: Runtime, args: argparse.Namespace, upstream: Any) -> None:
    """What SIGHUP reads again (estcoap.runtime): the device anchors (with the upstream CA
    learnt at start), the CRLs and, for the proxy, the users."""
    runtime.reloadable(
        "trust anchors",
        reload_items.trust_anchors(
            args.trust_clients, upstream, runtime.fronts, lambda: list(upstream.upstream_cas)
        ),
    )
    runtime.reloadable("CRLs", reload_items.crls(lambda: upstream.revocation))
    if args.command == "proxy":
        fronts = runtime.fronts
        runtime.reloadable(
            "users",
            reload_items.users(
                lambda: http_users.load_users(args, "proxy"),
                lambda: [getattr(f, "authenticator", None) for f in fronts],
            ),
        )


def _gateway(args: argparse.Namespace) -> int:
    if (args.coaps_psk is None) != (args.psk_file is None):
        raise UsageError("--coaps-psk and --psk-file go together")
    if args.coaps_psk is not None and args.workers > 1:
        # Each process learns the keys another spent only when --psk-file changes: a
        # one-time key must not be usable once more on another worker.
        raise UsageError("--coaps-psk takes one process: its spent keys are not shared yet")
    refuse_key_uri("--psk-file", args.psk_file, "it lists the devices' pre-shared keys")
    if is_pkcs11_uri(args.server_key):  # not echoed: a URI may carry a pin-value
        raise CliError(
            "--server-key: the gateway's DTLS key cannot be in a PKCS#11 token: pyOpenSSL "
            "runs its own OpenSSL, which has no PKCS#11 engine (docs/hsm.md)"
        )
    _token_keys(args)
    return _run(_start_gateway, args)


def _proxy(args: argparse.Namespace) -> int:
    _token_keys(args)
    return _run(_start_proxy, args)


def _token_keys(args: argparse.Namespace) -> None:
    """args.ra_token and args.server_token: the keys given as pkcs11: URIs, with their
    library and PIN, read here once, before workers are forked (a prompt in each of N
    workers would be N prompts)."""
    args.ra_token = args.server_token = None
    if args.ra_key is not None and is_pkcs11_uri(args.ra_key):
        args.ra_token = token_tls_key(args, "--ra-key", args.ra_key)
    if is_pkcs11_uri(args.server_key):
        args.server_token = token_tls_key(args, "--server-key", args.server_key)


def _run(start: Any, args: argparse.Namespace) -> int:
    if args.workers == 1:
        return _run_one(start, args)
    claim_ports(args, {"coaps": "udp", "coaps_psk": "udp", "https": "tcp"})
    return workers.serve(
        args.command,
        args.workers,
        lambda number: _run_one(start, args, number),
        drain_timeout=args.drain_timeout,
    )


def _run_one(start: Any, args: argparse.Namespace, number: int = 0) -> int:
    from ..gateway.loop import run

    worker_metrics(args, number)
    try:
        run(_serve(start, args), args.event_loop)
    except ValueError as exc:  # uvloop asked for but not installed
        raise CliError(str(exc)) from exc
    return 0
