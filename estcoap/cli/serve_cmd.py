"""`estcoap serve --ca DIR [--https HOST:PORT] [--coaps HOST:PORT] ...` (users: http_users).

The service (a LocalCA) is built once; each front (--https, --coaps) is
started by its own starter in FRONTS and shares it. To add a front: add its option
in _add_front_options() and a starter `async def start(args, service, binds)` returning
the objects it started (each with `async close()`) to FRONTS under the option's name.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from ..ca import LocalCA
from ..ca.local import (
    KEY_RETENTION_SECONDS,
    MAX_PENDING,
    MAX_PENDING_PER_REQUESTER,
    RETRY_AFTER_SECONDS,
    VALIDITY_DAYS,
)
from ..ca.policy import IssuancePolicy, PolicyError
from ..ca.shared_keys import SharedKeysError, load_shared_keys
from ..https import (
    DEFAULT_MAX_BODY,
    start_https_server,
)
from ..serving import release_free_memory, settle_heap
from . import CliError, UsageError, http_users, positive_int
from .ca_cmd import require_writable_store

HOUSEKEEPING_SECONDS = 30.0

# A front starter serves the service on its binds and returns what it started (each has close()).
FrontStarter = Callable[[argparse.Namespace, LocalCA, list[tuple[str, int]]], Awaitable[list[Any]]]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser("serve", help="serve EST from the built-in CA")
    serve.add_argument("--ca", required=True, metavar="DIR", help="the CA directory (ca init)")
    _add_front_options(serve)
    http_users.add_options(serve, user_help="an HTTP Basic/Digest user")
    serve.add_argument(
        "--trust-clients", action="append", default=[], metavar="PEM",
        help="CA certificates whose client certificates may enroll (repeatable)",
    )  # fmt: skip
    serve.add_argument(
        "--label", action="append", default=[], metavar="NAME",
        help="an additional CA label: /.well-known/est/NAME/... (repeatable)",
    )  # fmt: skip
    serve.add_argument(
        "--shared-keys", metavar="FILE",
        help="keys shared with clients in advance, 'KEY_ID_HEX KEY_HEX' per line: "
        "serverkeygen envelopes the key with the one a CSR names (RFC 7030 s4.4.1.1)",
    )  # fmt: skip
    serve.add_argument("--approval", choices=("auto", "manual"), default="auto",
                       help="manual: requests wait for 'estcoap pending approve'")  # fmt: skip
    serve.add_argument(
        "--policy", metavar="FILE",
        help="the issuance policy (TOML, docs/policy.md): what each device, user and RA may "
        "have issued. Default: a device gets its IDevID's identity, users and RAs any name. "
        "'open': any authenticated client gets any name (a lab only)",
    )  # fmt: skip
    serve.add_argument(
        "--require-pop", action="store_true",
        help="require tls-unique proof-of-possession (caps HTTPS at TLS 1.2)",
    )  # fmt: skip
    serve.add_argument("--max-body", type=positive_int, default=DEFAULT_MAX_BODY,
                       metavar="BYTES", help="the largest request body accepted")  # fmt: skip
    serve.add_argument("--retry-after", type=int, default=RETRY_AFTER_SECONDS, metavar="SECONDS",
                       help="manual approval: when a client should ask again")  # fmt: skip
    serve.add_argument("--validity-days", type=positive_int, default=VALIDITY_DAYS, metavar="N",
                       help="lifetime of the certificates issued")  # fmt: skip
    serve.add_argument(
        "--durable-commits", action="store_true",
        help="fsync each issued certificate's record (survives power loss; ~0.4 ms more per "
        "enrollment). Without it a crash of the process loses nothing, an OS crash may lose "
        "the last records",
    )  # fmt: skip
    serve.add_argument(
        "--max-pending-per-requester", type=int, default=MAX_PENDING_PER_REQUESTER, metavar="N",
        help="manual approval: undecided requests one client may have queued (RAs are "
        "exempt); more are refused with 4.03/403",
    )  # fmt: skip
    serve.add_argument(
        "--max-pending", type=int, default=MAX_PENDING, metavar="N",
        help="manual approval: undecided requests in all",
    )  # fmt: skip
    serve.add_argument(
        "--key-retention", type=int, default=KEY_RETENTION_SECONDS, metavar="SECONDS",
        help="manual approval: how long a delivered server-generated key stays in the store "
        "for a repeated request, then it is erased (0: the first answer is the only one)",
    )  # fmt: skip
    serve.set_defaults(func=_serve)


def _add_front_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--https", action="append", metavar="HOST:PORT",
        help="serve EST over HTTPS here (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--coaps", action="append", metavar="HOST:PORT",
        help="serve EST-coaps (RFC 9148, DTLS; port 5684) here; repeat for IPv4 and IPv6: "
        "one DTLS transport with a UDP socket per address",
    )  # fmt: skip
    parser.add_argument(
        "--coap-root", metavar="PATH",
        help="also serve EST-coaps at a shorter root (e.g. /est) and advertise it in discovery",
    )  # fmt: skip


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
        return LocalCA.open(
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
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc


async def start_https_front(
    args: argparse.Namespace, service: LocalCA, binds: list[tuple[str, int]]
) -> list[Any]:
    users = http_users.load_users(args, "serve")
    schemes = http_users.schemes(args)
    servers = []
    for host, port in binds:
        server = await start_https_server(
            service,
            host,
            port,
            cert_chain=service.paths.server_cert,
            key=service.paths.server_key,
            users=users,
            max_body=args.max_body,
            require_pop=args.require_pop,
            http_auth=schemes,
        )
        servers.append(server)
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
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    for url in server.urls:
        print(f"serving EST-coaps on {url}", flush=True)
    return [server]


FRONTS: dict[str, FrontStarter] = {"https": start_https_front, "coaps": start_coaps_front}


async def run(args: argparse.Namespace) -> None:
    wanted: list[tuple[str, list[str]]] = [
        (name, values) for name in FRONTS if (values := getattr(args, name, None))
    ]
    if not wanted:
        raise UsageError("give at least one front: --https HOST:PORT and/or --coaps HOST:PORT")
    service = build_service(args)
    running: list[Any] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for name, values in wanted:
            binds = [parse_host_port(value, f"--{name}") for value in values]
            try:
                running.extend(await FRONTS[name](args, service, binds))
            except OSError as exc:
                raise listen_error(binds, "udp" if name == "coaps" else "tcp", exc) from None
        settle_heap()
        housekeeping = asyncio.create_task(_housekeeping(service))
        await stop.wait()
        housekeeping.cancel()
    finally:
        for front in reversed(running):
            await front.close()
        service.close()


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
    asyncio.run(run(args))
    return 0
