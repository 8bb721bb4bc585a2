"""`estcoap serve --ca DIR [--https HOST:PORT] [--coaps HOST:PORT] ...` (users: http_users).

The service (a LocalCA) is built once; each front (--https, --coaps) is
started by its own starter in FRONTS and shares it. To add a front: add its option
in _add_front_options() and a starter `async def start(args, service, binds)` returning
the objects it started (each with `async close()`) to FRONTS under the option's name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from .. import runtime as reload_items
from .. import workers
from ..ca import LocalCA
from ..ca.local import (
    KEY_RETENTION_SECONDS,
    MAX_PENDING,
    MAX_PENDING_PER_REQUESTER,
    RETRY_AFTER_SECONDS,
    VALIDITY_DAYS,
)
from ..ca.ocsp import OcspResponder, store_lookup
from ..ca.ocsp_token import load_responder
from ..ca.paths import require_private
from ..ca.pkcs11key import Pkcs11Unavailable
from ..ca.pkcs11uri import is_pkcs11_uri
from ..ca.policy import IssuancePolicy, PolicyError
from ..ca.revocation_http import (
    DEFAULT_CRL_PATH,
    CurrentCrl,
    revocation_app,
    start_revocation_http,
)
from ..ca.shared_keys import SharedKeysError, load_shared_keys
from ..client import load_certificates, load_private_key
from ..client.api import CredentialError, check_key_matches
from ..codec.keytypes import PrivateKey
from ..https import (
    DEFAULT_MAX_BODY,
    start_https_server,
)
from ..revocation import CrlError
from ..runtime import Runtime
from ..runtime import front_for as runtime_front
from ..serving import release_free_memory, settle_heap
from ..tls_token_key import TokenKeyError
from . import CliError, UsageError, http_users, number, ops, positive_int, validity_days
from .ca_cmd import duration, require_writable_store
from .psk_cmd import start_coaps_psk_front
from .token_options import add_token_options, pin_source, refuse_key_uri, token_tls_key

HOUSEKEEPING_SECONDS = 30.0

# Retry-After becomes CoAP's Max-Age, a uint of at most 4 bytes (RFC 7252 s5.10.5); 0 would
# have clients ask again at once, in a loop.
retry_after_seconds = number(int, "seconds from 1 to 4294967295", least=1, most=2**32 - 1)
# Held as a timedelta subtracted from now: a century stays far from the date types' limits.
key_retention_seconds = number(int, "seconds from 0 to 3153600000", least=0, most=3_153_600_000)

# A front starter serves the service on its binds and returns what it started (each has close()).
FrontStarter = Callable[[argparse.Namespace, LocalCA, list[tuple[str, int]]], Awaitable[list[Any]]]


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve EST from the built-in CA")
    serve.add_argument("--ca", required=True, metavar="DIR", help="the CA directory (ca init)")
    add_token_options(serve)  # when the CA key is in a PKCS#11 token (docs/hsm.md)
    _add_front_options(serve)
    _add_revocation_options(serve)
    _add_console_options(serve)
    ops.add_options(serve)
    workers.add_options(serve)
    http_users.add_options(serve, user_help="an HTTP Basic/Digest user")
    serve.add_argument(
        "--trust-clients",
        action="append",
        default=[],
        metavar="PEM",
        help="CA certificates whose client certificates may enroll (repeatable)",
    )
    serve.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="an additional CA label: /.well-known/est/NAME/... (repeatable)",
    )
    serve.add_argument(
        "--shared-keys",
        metavar="FILE",
        help="keys shared with clients in advance, 'KEY_ID_HEX KEY_HEX' per line: "
        "serverkeygen envelopes the key with the one a CSR names (RFC 7030 s4.4.1.1)",
    )
    serve.add_argument(
        "--crl",
        action="append",
        default=[],
        metavar="FILE",
        help="a CRL (PEM or DER) of a --trust-clients CA (a device maker) or of this CA: "
        "the certificates it lists are refused (repeatable; reloaded when the file changes; "
        "a stale or badly signed one refuses that CA's devices, docs/revocation.md)",
    )
    serve.add_argument(
        "--approval",
        choices=("auto", "manual"),
        default="auto",
        help="manual: requests wait for 'estcoap pending approve'",
    )
    serve.add_argument(
        "--policy",
        metavar="FILE",
        help="the issuance policy (TOML, docs/policy.md): what each device, user and RA may "
        "have issued. Default: a device gets its IDevID's identity, users and RAs any name. "
        "'open': any authenticated client gets any name (a lab only)",
    )
    serve.add_argument(
        "--require-pop",
        action="store_true",
        help="require tls-unique proof-of-possession (caps HTTPS at TLS 1.2)",
    )
    serve.add_argument(
        "--max-body",
        type=positive_int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="the largest request body accepted",
    )
    serve.add_argument(
        "--retry-after",
        type=retry_after_seconds,
        default=RETRY_AFTER_SECONDS,
        metavar="SECONDS",
        help="manual approval: when a client should ask again",
    )
    serve.add_argument(
        "--validity-days",
        type=validity_days,
        default=VALIDITY_DAYS,
        metavar="N",
        help="lifetime of the certificates issued",
    )
    serve.add_argument(
        "--durable-commits",
        action="store_true",
        help="fsync each issued certificate's record (survives power loss; ~0.4 ms more per "
        "enrollment). Without it a crash of the process loses nothing, an OS crash may lose "
        "the last records",
    )
    serve.add_argument(
        "--max-pending-per-requester",
        type=positive_int,
        default=MAX_PENDING_PER_REQUESTER,
        metavar="N",
        help="manual approval: undecided requests one client may have queued (RAs are "
        "exempt); more are refused with 4.03/403",
    )
    serve.add_argument(
        "--max-pending",
        type=positive_int,
        default=MAX_PENDING,
        metavar="N",
        help="manual approval: undecided requests in all",
    )
    serve.add_argument(
        "--key-retention",
        type=key_retention_seconds,
        default=KEY_RETENTION_SECONDS,
        metavar="SECONDS",
        help="manual approval: how long a delivered server-generated key stays in the store "
        "for a repeated request, then it is erased (0: the first answer is the only one)",
    )
    serve.set_defaults(func=_serve)


def _add_front_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--https",
        action="append",
        metavar="HOST:PORT",
        help="serve EST over HTTPS here (repeatable)",
    )
    parser.add_argument(
        "--https-cert",
        metavar="PEM",
        help="the HTTPS front's certificate chain instead of the CA directory's server.pem "
        "(with --https-key)",
    )
    parser.add_argument(
        "--https-key",
        metavar="KEY",
        help="its private key: a PEM file (0600), or a pkcs11: URI of a key in a token "
        "(docs/hsm.md)",
    )
    parser.add_argument(
        "--coaps",
        action="append",
        metavar="HOST:PORT",
        help="serve EST-coaps (RFC 9148, DTLS; port 5684) here; repeat for IPv4 and IPv6: "
        "one DTLS transport with a UDP socket per address",
    )
    parser.add_argument(
        "--coaps-psk",
        action="append",
        metavar="HOST:PORT",
        help="also serve EST-coaps over PSK DTLS here, for devices with a pre-shared key "
        "instead of a certificate ('estcoap psk add'; docs/psk.md; needs the psk extra)",
    )
    parser.add_argument(
        "--coap-root",
        metavar="PATH",
        help="also serve EST-coaps at a shorter root (e.g. /est) and advertise it in discovery",
    )


def parse_host_port(text: str, option: str = "HOST:PORT") -> tuple[str, int]:
    """HOST:PORT, with IPv6 as [ADDR]:PORT; option names where it came from."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{option}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


_LISTEN_ERRORS = {
    errno.EADDRINUSE: "address in use",
    errno.EADDRNOTAVAIL: "no such address on this host",
    errno.EACCES: "permission denied",
}


def listen_error(binds: list[tuple[str, int]], protocol: str, exc: OSError) -> CliError:
    """One line naming where: "cannot listen on HOST:PORT (udp): address in use", whatever
    the event loop's words (uvloop's OSError has no errno; its cause has)."""
    cause = exc if exc.errno is not None or exc.__cause__ is None else exc.__cause__
    code = getattr(cause, "errno", None)
    reason = _LISTEN_ERRORS.get(code or 0) or getattr(cause, "strerror", None) or str(exc)
    where = ", ".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in binds
    )
    return CliError(f"cannot listen on {where} ({protocol}): {reason}")


# ---- service and fronts ---------------------------------------------------------


def build_service(args: argparse.Namespace) -> LocalCA:
    trust: list[x509.Certificate] = []
    for path in args.trust_clients:
        try:
            with open(path, "rb") as fh:
                trust.extend(x509.load_pem_x509_certificates(fh.read()))
        except ValueError as exc:
            raise CliError(f"{path}: not a PEM certificate file: {exc}") from exc
    refuse_key_uri("--shared-keys", args.shared_keys, "its keys are secrets both ends hold")
    try:
        shared_keys = load_shared_keys(args.shared_keys) if args.shared_keys else None
    except SharedKeysError as exc:
        raise CliError(str(exc)) from exc
    try:
        policy = IssuancePolicy.load(args.policy) if args.policy else None
    except PolicyError as exc:
        raise CliError(str(exc)) from exc
    if policy is not None and policy.is_open:
        print(f"estcoap serve: WARNING: {policy.describe()}", file=sys.stderr, flush=True)
    require_writable_store(args.ca)
    try:
        service = LocalCA.open(
            args.ca,
            approval=args.approval,
            require_pop=args.require_pop,
            labels=args.label,
            trust_clients=trust,
            validity_days=args.validity_days,
            durable_commits=args.durable_commits,
            retry_after=args.retry_after,
            shared_keys=shared_keys,
            max_pending_per_requester=args.max_pending_per_requester,
            max_pending=args.max_pending,
            key_retention=args.key_retention,
            policy=policy,
            pins=pin_source(args),
        )
    except (ValueError, Pkcs11Unavailable) as exc:
        raise CliError(str(exc)) from exc
    try:
        service.revocation.add_crl_files(args.crl)
    except CrlError as exc:
        service.close()
        raise CliError(f"--crl {exc}") from None
    return service


async def start_https_front(
    args: argparse.Namespace, service: LocalCA, binds: list[tuple[str, int]]
) -> list[Any]:
    users = http_users.load_users(args, "serve")
    schemes = http_users.schemes(args)
    servers = []
    https_key = getattr(args, "https_token", None) or args.https_key or service.paths.server_key
    for host, port in binds:
        try:
            server = await start_https_server(
                service,
                host,
                port,
                cert_chain=args.https_cert or service.paths.server_cert,
                key=https_key,
                users=users,
                max_body=args.max_body,
                require_pop=args.require_pop,
                http_auth=schemes,
                request_hook=_front_hook(args, "https"),
            )
        except TokenKeyError as exc:
            raise CliError(f"--https-key: {exc}") from None
        servers.append(server)
        ops.watch(args, "https", server)
        print(f"serving EST over HTTPS on {server.url}", flush=True)
    return servers


async def start_coaps_front(
    args: argparse.Namespace, service: LocalCA, binds: list[tuple[str, int]]
) -> list[Any]:
    # Deferred import: the DTLS stack is only loaded when a CoAPs front is asked for.
    from ..coap.server import start_coaps_server

    try:
        server = await start_coaps_server(
            service,
            binds,
            cert_chain=service.paths.server_cert,
            key=service.paths.server_key,
            trust_anchors=service.client_trust_anchors(),
            labels=args.label,
            short_root=args.coap_root,
            max_body=args.max_body,
            request_hook=_front_hook(args, "coaps"),
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    ops.watch(args, "coaps", server)
    _console_watch_dtls(args, server)
    for url in server.urls:
        print(f"serving EST-coaps on {url}", flush=True)
    return [server]


FRONTS: dict[str, FrontStarter] = {
    "https": start_https_front,
    "coaps": start_coaps_front,
    "coaps_psk": start_coaps_psk_front,
}


async def run(args: argparse.Namespace) -> None:
    wanted: list[tuple[str, list[str]]] = [
        (name, values) for name in FRONTS if (values := getattr(args, name, None))
    ]
    if not wanted:
        raise UsageError("give at least one front: --https HOST:PORT and/or --coaps HOST:PORT")
    service = build_service(args)
    ops.begin(args)
    ops.watch(args, "ca", service)
    runtime = Runtime("serve", args.drain_timeout)
    runtime.install()  # before the fronts: a SIGTERM during the start stops it once up
    drained = False
    try:
        # Before the fronts: a client told of a revocation URL can use it at once.
        for started in await start_revocation_publishing(args, service):
            runtime.after_fronts(started.close)
        # Before the fronts too: once a front's port is bound the console's is.
        for started in await start_console_front(args, service):
            runtime.after_fronts(started.close)
        for name, values in wanted:
            binds = [parse_host_port(value, f"--{name.replace('_', '-')}") for value in values]
            try:
                started_fronts = await FRONTS[name](args, service, binds)
            except OSError as exc:
                protocol = "udp" if name.startswith("coaps") else "tcp"
                raise listen_error(binds, protocol, exc) from None
            for started in started_fronts:
                front = runtime_front(started)
                if front is not None:
                    runtime.add_front(front)
                else:
                    runtime.after_fronts(started.close)
        for started in await ops.listen(args):
            runtime.after_fronts(started.close)
        _reloadable(runtime, args, service)
        workers.ready()
        settle_heap()
        housekeeping = asyncio.create_task(_housekeeping(service))
        await runtime.wait()
        housekeeping.cancel()
        await runtime.drain()
        drained = True
    finally:
        if not drained:
            await runtime.close()
        service.close()


def _reloadable(runtime: Runtime, args: argparse.Namespace, service: LocalCA) -> None:
    """What SIGHUP reads again (estcoap.runtime)."""
    fronts = runtime.fronts
    runtime.reloadable(
        "trust anchors",
        reload_items.trust_anchors(
            args.trust_clients, service, fronts, lambda: [service.ca_certificate]
        ),
    )
    runtime.reloadable("CRLs", reload_items.crls(lambda: service.revocation))
    runtime.reloadable(
        "users",
        reload_items.users(
            lambda: http_users.load_users(args, "serve"),
            lambda: [getattr(f, "authenticator", None) for f in fronts],
        ),
    )
    if args.shared_keys:
        runtime.reloadable(
            "shared keys",
            reload_items.from_file(args.shared_keys, load_shared_keys, service.set_shared_keys),
        )
    if args.policy and args.policy != "open":
        runtime.reloadable(
            "issuance policy",
            reload_items.from_file(args.policy, IssuancePolicy.load, _set_policy(service)),
        )


def _set_policy(service: LocalCA) -> Callable[[IssuancePolicy], None]:
    def apply(policy: IssuancePolicy) -> None:
        service.policy = policy

    return apply


async def _housekeeping(service: LocalCA, period: float = HOUSEKEEPING_SECONDS) -> None:
    """Erase delivered server-generated keys once their retention is over, even when no
    request comes to trigger it; give the memory freed since back to the OS (without it
    RSS stays at its peak after a burst: serving.release_free_memory)."""
    while True:
        await asyncio.sleep(period)
        try:
            await asyncio.to_thread(service.forget_delivered_keys)
        except Exception as exc:  # a busy or broken store: say so, try again next time
            print(f"estcoap serve: housekeeping failed: {exc}", file=sys.stderr, flush=True)
        release_free_memory()


def _serve(args: argparse.Namespace) -> int:
    _https_identity(args)
    try:
        secret = workers.cookie_secret(args.ca)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.workers == 1:
        from ..dtls.cookie import share_secret

        share_secret(secret)
        asyncio.run(run(args))
        return 0
    claim_ports(args, {"https": "tcp", "coaps": "udp", "coaps_psk": "udp"})
    return workers.serve(
        "serve",
        args.workers,
        lambda number: _serve_worker(args, number),
        drain_timeout=args.drain_timeout,
        secret=secret,
    )


def _https_identity(args: argparse.Namespace) -> None:
    """--https-cert and --https-key, checked before any worker is forked: a key file
    private and the certificate's, a key in a token resolved with its PIN (read once)."""
    args.https_token = None
    if (args.https_cert is None) != (args.https_key is None):
        raise UsageError("--https-cert and --https-key go together")
    if args.https_key is None:
        return
    if is_pkcs11_uri(args.https_key):  # checked against the certificate when loaded
        args.https_token = token_tls_key(args, "--https-key", args.https_key)
        return
    try:
        require_private(Path(args.https_key))
        chain = load_certificates(args.https_cert)
        check_key_matches(
            chain[0], load_private_key(args.https_key), args.https_cert, args.https_key
        )
    except (CredentialError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _serve_worker(args: argparse.Namespace, number: int) -> int:
    """Worker `number` of serve --workers: the listeners that exist once are worker 0's."""
    if number > 0:
        args.console, args.console_plain_http = None, False
        args.crl_http = args.ocsp = None
    worker_metrics(args, number)
    asyncio.run(run(args))
    return 0


def worker_metrics(args: argparse.Namespace, number: int) -> None:
    """--metrics HOST:PORT is PORT + number in worker number (port 0: each picks one)."""
    if getattr(args, "metrics", None):
        host, port = parse_host_port(args.metrics, "--metrics")
        if port:
            args.metrics = workers.with_port(args.metrics, port + number)


def claim_ports(args: argparse.Namespace, options: dict[str, str]) -> None:
    """Before the workers fork: each listen address of options (attribute -> "tcp"/"udp")
    is checked and a port 0 replaced by a free port, so that every worker binds the same."""
    import socket

    for name, protocol in options.items():
        values = getattr(args, name, None)
        if not values:
            continue
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        claimed = []
        for value in [values] if isinstance(values, str) else values:
            bind = parse_host_port(value, f"--{name.replace('_', '-')}")
            try:
                claimed.append(workers.with_port(value, workers.claim_port(*bind, kind)))
            except OSError as exc:
                raise listen_error([bind], protocol, exc) from None
        setattr(args, name, claimed[0] if isinstance(values, str) else claimed)


# ---- revocation: the CRL and OCSP over plain HTTP (docs/revocation.md) -----------------


def _add_revocation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crl-http",
        metavar="HOST:PORT",
        help="serve the CA's current CRL over plain HTTP here (DER, at --crl-path), "
        "re-signed within seconds of each revocation and at half its validity",
    )
    parser.add_argument(
        "--crl-path",
        default=DEFAULT_CRL_PATH,
        metavar="PATH",
        help="where --crl-http serves the CRL",
    )
    parser.add_argument(
        "--crl-next-update",
        type=duration,
        default="7d",
        metavar="DURATION",
        help="the served CRL's validity (7d, 12h, ...)",
    )
    parser.add_argument(
        "--crl-url",
        type=_http_url,
        metavar="URL",
        help="certificates issued name this CRL distribution point (e.g. the --crl-http "
        "address and --crl-path as others reach them)",
    )
    parser.add_argument(
        "--ocsp",
        metavar="HOST:PORT",
        help="answer OCSP (RFC 6960) over plain HTTP here: POST, or GET with the base64 "
        "request after --ocsp-path; may be the --crl-http address",
    )
    parser.add_argument("--ocsp-path", default="/", metavar="PATH", help="where --ocsp answers")
    parser.add_argument(
        "--ocsp-signer",
        choices=("auto", "ca", "responder"),
        default="auto",
        help="who signs OCSP answers: the CA's key, or the delegated responder of "
        "'ca issue-ocsp' (auto: the responder when the CA directory has one)",
    )
    parser.add_argument(
        "--ocsp-url",
        type=_http_url,
        metavar="URL",
        help="certificates issued name this OCSP responder (authority information access)",
    )


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// URL, got {text!r}")
    return text


class _Background:
    """A task that serve cancels on the way out, like a front's close()."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_revocation_publishing(args: argparse.Namespace, service: LocalCA) -> list[Any]:
    """Name the revocation URLs in what the CA issues; serve the CRL and OCSP listeners
    asked for (one listener when both name the same address)."""
    service.publish_revocation(crl_url=args.crl_url, ocsp_url=args.ocsp_url)
    if not args.crl_http and not args.ocsp:
        return []
    ca_cert, ca_key = service.ca_certificate, service.signing_key
    crl = ocsp = None
    started: list[Any] = []
    if args.crl_http:
        crl = CurrentCrl(service.store, ca_cert, ca_key, next_update=args.crl_next_update)
        await asyncio.to_thread(crl.refresh)
        started.append(_Background(asyncio.create_task(crl.keep_current())))
    if args.ocsp:
        ocsp = _ocsp_responder(args, service, ca_key)
    binds = {
        "crl": parse_host_port(args.crl_http, "--crl-http") if args.crl_http else None,
        "ocsp": parse_host_port(args.ocsp, "--ocsp") if args.ocsp else None,
    }
    shared = binds["crl"] == binds["ocsp"]
    apps = []
    if shared:
        apps.append(
            (
                binds["crl"],
                revocation_app(
                    crl=crl, crl_path=args.crl_path, ocsp=ocsp, ocsp_path=args.ocsp_path
                ),
            )
        )
    else:
        if binds["crl"]:
            apps.append((binds["crl"], revocation_app(crl=crl, crl_path=args.crl_path)))
        if binds["ocsp"]:
            apps.append((binds["ocsp"], revocation_app(ocsp=ocsp, ocsp_path=args.ocsp_path)))
    try:
        for bind, app in apps:
            assert bind is not None
            try:
                listener = await start_revocation_http(*bind, app)
            except OSError as exc:
                raise listen_error([bind], "tcp", exc) from None
            started.append(listener)
            if crl is not None and bind == binds["crl"]:
                print(f"serving the CRL on {listener.url(args.crl_path)}", flush=True)
            if ocsp is not None and bind == binds["ocsp"]:
                print(
                    f"serving OCSP on {listener.url(args.ocsp_path)} (signed by {ocsp.describe()})",
                    flush=True,
                )
    except BaseException:
        for thing in reversed(started):
            await thing.close()
        raise
    return started


def _ocsp_responder(
    args: argparse.Namespace, service: LocalCA, ca_key: PrivateKey
) -> OcspResponder:
    paths = service.paths
    delegated = args.ocsp_signer == "responder" or (
        args.ocsp_signer == "auto" and paths.ocsp_cert.exists()
    )
    signer_cert = signer_key = None
    if delegated:
        try:  # its key in ocsp.key, or in a token (ocsp.uri: ca/ocsp_token.py)
            responder = load_responder(paths, pin_source(args))
            signer_cert, signer_key = responder.certificate, responder.key
        except FileNotFoundError as exc:
            raise CliError(
                f"{exc.filename}: no OCSP responder (run 'estcoap ca issue-ocsp {paths.dir}')"
            ) from None
        except ValueError as exc:
            raise CliError(f"the OCSP responder in {paths.dir}: {exc}") from None
    try:
        return OcspResponder(
            service.ca_certificate,
            ca_key,
            store_lookup(service.store),
            signer_cert=signer_cert,
            signer_key=signer_key,
        )
    except ValueError as exc:
        raise CliError(f"{exc} ({paths.ocsp_cert})") from None


# ---- the operator console (estcoap.console, docs/console.md) ---------------------------


def _add_console_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--console",
        metavar="HOST:PORT",
        help="serve the operator console (approvals, certificates, revocation, fleet) here, "
        "over HTTPS with the server certificate; users: 'estcoap console user add DIR NAME'",
    )
    parser.add_argument(
        "--console-plain-http",
        action="store_true",
        help="serve the console over plain HTTP (a loopback --console address only: tests)",
    )


async def start_console_front(args: argparse.Namespace, service: LocalCA) -> list[Any]:
    """The console over the service's store; it counts the fronts' requests (args.console_
    tally, handed to each front by _front_hook) for its fleet page."""
    args.console_server = None
    if not getattr(args, "console", None):
        if getattr(args, "console_plain_http", False):
            raise UsageError("--console-plain-http needs --console HOST:PORT")
        return []
    from ..console import PlainHttpRefused, RequestTally, start_console, users_path

    host, port = parse_host_port(args.console, "--console")
    tally = args.console_tally = RequestTally()
    try:
        server = await start_console(
            service.store,
            host,
            port,
            users_file=users_path(service.paths.dir),
            cert_chain=service.paths.server_cert,
            key=service.paths.server_key,
            plain_http=args.console_plain_http,
            tally=tally,
        )
    except PlainHttpRefused as exc:
        raise UsageError(f"--console-plain-http: {exc}") from None
    except OSError as exc:
        raise listen_error([(host, port)], "tcp", exc) from None
    args.console_server = server
    if not users_path(service.paths.dir).exists():
        print(
            f"estcoap serve: the console has no users yet: estcoap console user add "
            f"{service.paths.dir} NAME",
            file=sys.stderr,
            flush=True,
        )
    print(f"serving the console on {server.url}", flush=True)
    return [server]


def _front_hook(args: argparse.Namespace, front: str) -> Any:
    """The metrics' request hook, and the console's tally beside it when --console is on."""
    hook = ops.front_hook(args, front)
    tally = getattr(args, "console_tally", None)
    if tally is None:
        return hook
    from ..console import BothHooks

    return BothHooks(hook, tally.front(front))


def _console_watch_dtls(args: argparse.Namespace, server: Any) -> None:
    console = getattr(args, "console_server", None)
    if console is not None:
        transport = server.transport
        console.watch_dtls_sessions(
            lambda: sum(1 for remote in list(transport.sessions.values()) if remote.established)
        )
