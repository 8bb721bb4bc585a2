"""`estcoap simulate URL ...`: provision a fleet of virtual devices and report the figures."""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..idevid import DeviceMaker
from ..simulate import FleetSettings, Impairment
from ..simulate.report import PlotUnavailable, all_failed, check_plotting, plot, summary
from ..simulate.report import write_json as write_report
from . import (
    CliError,
    UsageError,
    add_hidden_alias,
    non_negative_int,
    number,
    positive_int,
    positive_seconds,
    simulate_scale,
)
from .token_options import refuse_key_uri

BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024)
probability = number(float, "a probability in [0, 1)", least=0, below=1)
delay_ms = number(float, "milliseconds, 0 to 60000", least=0, most=60_000)


def _block_size(text: str) -> int:
    if not text.isdigit() or int(text) not in BLOCK_SIZES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(map(str, BLOCK_SIZES))}")
    return int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser(
        "simulate",
        help="provision a fleet of virtual devices and measure the server",
        description="Each virtual device gets a key and an IDevID from the device-maker CA, "
        "then runs crts, att, sen (and sren) through a relay on loopback that counts every "
        "datagram and applies the impairments (coaps:// only).",
        epilog="exit status: 0 when at least one device was provisioned (the summary counts "
        "the failures); 1 when none was, or the run could not start; 2 a wrong command line.",
    )
    sim.add_argument("url", metavar="URL", help="coaps://HOST:PORT[/path] or https://HOST:PORT")
    sim.add_argument("--trust", required=True, metavar="PEM", help="the server's trust anchors")
    sim.add_argument(
        "--maker-cert",
        metavar="PEM",
        help="the device maker's CA certificate: it issues each device's IDevID "
        "(required; made by 'estcoap idevid maker')",
    )
    sim.add_argument("--maker-key", metavar="KEY", help="its private key (required)")
    add_hidden_alias(sim, "--idevid-ca", "maker_cert")
    add_hidden_alias(sim, "--idevid-ca-key", "maker_key")
    sim.add_argument(
        "--devices",
        type=positive_int,
        default=100,
        metavar="N",
        help="virtual devices to provision",
    )
    sim.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="C",
        help="devices in flight at once (default 50; with --rate 1000)",
    )
    sim.add_argument(
        "--loss",
        type=probability,
        default=0.0,
        metavar="P",
        help="drop each datagram with probability P, each direction",
    )
    sim.add_argument(
        "--duplicate",
        type=probability,
        default=0.0,
        metavar="P",
        help="send each datagram twice with probability P",
    )
    sim.add_argument(
        "--reorder",
        type=probability,
        default=0.0,
        metavar="P",
        help="hold a datagram until the next one passes it (at most 50 ms)",
    )
    sim.add_argument(
        "--delay", type=delay_ms, default=0.0, metavar="MS", help="added one-way delay"
    )
    sim.add_argument("--block-size", type=_block_size, metavar="B", help="CoAP block size")
    sim.add_argument("--reenroll", action="store_true", help="also run sren on each device")
    sim.add_argument(
        "--psk",
        action="store_true",
        help="a PSK fleet: no IDevIDs; each device gets its own one-time key, added to the CA "
        "store of --ca before the run (and removed after), and enrolls at URL over PSK DTLS "
        "(serve --coaps-psk; docs/psk.md)",
    )
    sim.add_argument("--ca", metavar="DIR", help="with --psk: the CA directory of the server")
    sim.add_argument(
        "--reenroll-url",
        metavar="URL",
        help="with --psk --reenroll: the server's certificate DTLS URL (coaps://), for sren",
    )
    sim.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        metavar="S",
        help="per request; DTLS handshakes get 0.9 of it",
    )
    sim.add_argument(
        "--ack-timeout",
        type=positive_seconds,
        default=2.0,
        metavar="S",
        help="CoAP's first retransmission timeout (ACK_TIMEOUT, RFC 7252 s4.8, whose value "
        "is the default), doubled on each retry",
    )
    sim.add_argument(
        "--retries",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="repeat a step that timed out, on a new session",
    )
    sim.add_argument(
        "--seed", type=non_negative_int, metavar="N", help="seed the impairment's random numbers"
    )
    sim.add_argument("--json", metavar="FILE", help="write the report here")
    sim.add_argument("--plot", metavar="FILE", help="draw latency and throughput (matplotlib)")
    simulate_scale.add_options(sim)
    sim.set_defaults(func=_simulate)


def _load_certs(path: str, what: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
        certs = x509.load_pem_x509_certificates(data)
    except OSError as exc:
        raise CliError(f"{what} {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise CliError(f"{what} {path}: not a PEM certificate file") from None
    return certs


def _load_maker(cert_path: str, key_path: str) -> DeviceMaker:
    refuse_key_uri(
        "--maker-key", key_path, "the simulator's device maker is a test one (idevid maker)"
    )
    cert = _load_certs(cert_path, "--maker-cert")[0]
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except OSError as exc:
        raise CliError(f"--maker-key {key_path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise CliError(f"--maker-key {key_path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CliError(f"--maker-key {key_path}: the device-maker key must be an EC key")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise CliError(f"the key in {key_path} does not belong to the certificate in {cert_path}")
    return DeviceMaker(cert, key)


def _settings_json(args: argparse.Namespace, settings: FleetSettings) -> dict[str, Any]:
    return {
        "url": args.url,
        "scheme": settings.scheme,
        "devices": settings.devices,
        "concurrency": settings.concurrency,
        "loss": args.loss,
        "duplicate": args.duplicate,
        "reorder": args.reorder,
        "delay_ms": args.delay,
        "block_size": args.block_size,
        "reenroll": args.reenroll,
        "timeout_s": args.timeout,
        "ack_timeout_s": args.ack_timeout,
        "retries": args.retries,
        "seed": args.seed,
        "psk": args.psk,
        "command": "estcoap simulate " + " ".join(sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "simulate"
        else None,
    }


def _simulate(args: argparse.Namespace) -> int:
    if args.plot:
        try:
            check_plotting()
        except PlotUnavailable as exc:
            raise CliError(str(exc)) from None
    simulate_scale.check(args)
    if args.psk:
        return _simulate_psk(args)
    missing = [
        o for o, v in (("--maker-cert", args.maker_cert), ("--maker-key", args.maker_key)) if not v
    ]
    if missing:  # not required=True: the former spellings may give them
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    trust = _load_certs(args.trust, "--trust")
    maker = _load_maker(args.maker_cert, args.maker_key)
    if args.prepare_keys:
        return simulate_scale.make_keys(args, maker)
    return _run_fleet(args, trust, maker, ())


def _simulate_psk(args: argparse.Namespace) -> int:
    """--psk: one one-time key per device in the CA store, for this run only."""
    from ..ca import CaPaths, Store, StoreError
    from ..pskengine import PskUnavailable, require_dtlssocket

    if args.ca is None:
        raise UsageError("--psk needs --ca DIR (the server's CA, where the keys are added)")
    if args.reenroll and args.reenroll_url is None:
        raise UsageError("--psk --reenroll needs --reenroll-url coaps://HOST:PORT (cert DTLS)")
    try:
        require_dtlssocket()
    except PskUnavailable as exc:
        raise CliError(str(exc)) from None
    trust = _load_certs(args.trust, "--trust")
    tag = secrets.token_hex(3)
    devices = [(f"psk-{tag}-{i:06d}", secrets.token_bytes(16)) for i in range(args.devices)]
    try:
        store = Store.open(CaPaths.of(args.ca).store_location(), create=False)
    except (StoreError, ValueError) as exc:
        raise CliError(f"--ca {exc}") from None
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    try:
        for identity, key in devices:
            store.psk_add(
                identity, key, subject=f"serialNumber={identity},CN={identity}", expires=expires
            )
        return _run_fleet(args, trust, None, devices)
    finally:
        for identity, _ in devices:  # spent or not, they were for this run only
            store.psk_remove(identity)
        store.close()


def _run_fleet(
    args: argparse.Namespace,
    trust: list[x509.Certificate],
    maker: DeviceMaker | None,
    psk_devices: list[tuple[str, bytes]] | tuple[()],
) -> int:
    try:
        settings = FleetSettings(
            url=args.url,
            trust=trust,
            maker=maker,
            devices=args.devices,
            concurrency=simulate_scale.default_concurrency(args),
            impairment=Impairment(args.loss, args.duplicate, args.reorder, args.delay),
            block_size=args.block_size,
            reenroll=args.reenroll,
            timeout=args.timeout,
            retries=args.retries,
            seed=args.seed,
            ack_timeout=args.ack_timeout,
            psk_devices=psk_devices,
            reenroll_url=args.reenroll_url,
        )
    except ValueError as exc:  # the URL's scheme, or impairments asked of https://
        raise UsageError(str(exc)) from None
    share, report = simulate_scale.execute(args, settings, _settings_json(args, settings))
    if args.json:
        write_report(report, args.json)
    if args.plot:
        plot(share, report, args.plot)
    # On a terminal, or when there is no report file, say how it went; quiet otherwise.
    if sys.stdout.isatty() or not args.json:
        print(summary(report))
        if found := simulate_scale.summary_line(report):
            print(found)
    if report["succeeded"] == 0:  # a run with no figure to show is a failure, not a result
        print(f"estcoap simulate: {all_failed(report)}", file=sys.stderr)
        return 1
    return 0
