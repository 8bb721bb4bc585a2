"""`estcoap demo`: a throwaway CA and device maker, a server on loopback, one device
enrolled over EST-coaps and re-enrolled, one enrolled over HTTPS. Prints what happened,
and keeps every file it made (in --dir, else a new temporary directory) for a look after."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ..ca import LocalCA, init_ca
from ..client import EstClient, fingerprint
from ..coap.server import start_coaps_server
from ..files import certificates_pem, private_key_pem, write_secret
from ..https import start_https_server, user_from_arg
from ..idevid import DeviceMaker
from . import CliError

DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"
DEVICE_SERIAL = "demo-device-0001"
# A device with an IDevID asks for a subject that carries its IDevID's serial number.
DEVICE_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "estcoap demo"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, DEVICE_SERIAL),
        x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_SERIAL),
    ]
)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="enroll a device over CoAPs and HTTPS against a throwaway CA on loopback"
    )
    demo.add_argument(
        "--dir",
        metavar="DIR",
        help="write the CA and device files here (default: a new directory under the system's "
        "temporary directory, printed at the end)",
    )
    demo.add_argument("--quiet", action="store_true", help="print only the final certificate")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.dir:
        workdir = Path(args.dir)
        if (workdir / "ca" / "ca.pem").exists():
            raise CliError(f"{workdir} already holds a demo CA; give an empty --dir")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="estcoap-demo-"))
    asyncio.run(run_demo(workdir, quiet=args.quiet))
    return 0


def _describe(cert: x509.Certificate) -> str:
    return (
        f"subject {cert.subject.rfc4514_string()}, serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, issuer {cert.issuer.rfc4514_string()}"
    )


def _write_identity(directory: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(certificates_pem([cert]))
    write_secret(key_path, private_key_pem(key))
    return cert_path, key_path


async def run_demo(workdir: Path, *, quiet: bool = False) -> None:
    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    paths = init_ca(workdir / "ca", ["127.0.0.1", "localhost"])
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    say(f"CA        {ca_cert.subject.rfc4514_string()} (SHA-256 {fingerprint(ca_cert)[:23]}...)")
    maker = DeviceMaker.create()
    _write_identity(workdir, "maker", maker.certificate, maker.private_key)
    idevid, idevid_key = maker.issue_idevid(DEVICE_SERIAL)
    idevid_cert_path, idevid_key_path = _write_identity(workdir, "idevid", idevid, idevid_key)
    maker_name = maker.certificate.subject.rfc4514_string()
    say(f"device    IDevID {idevid.subject.rfc4514_string()} from '{maker_name}'")

    service = LocalCA.open(paths.dir, trust_clients=[maker.certificate])
    coaps = await start_coaps_server(
        service,
        [("127.0.0.1", 0)],
        cert_chain=paths.server_cert,
        key=paths.server_key,
        trust_anchors=service.client_trust_anchors(),
    )
    https = await start_https_server(
        service,
        "127.0.0.1",
        0,
        cert_chain=paths.server_cert,
        key=paths.server_key,
        users=[user_from_arg(f"{DEMO_USER}:{DEMO_PASSWORD}")],
    )
    say(f"server    {coaps.url}")
    say(f"server    {https.url}")
    try:
        started = time.perf_counter()
        async with EstClient(
            coaps.url, trust=paths.ca_cert, cert=idevid_cert_path, key=idevid_key_path
        ) as est:
            result = await est.provision(DEVICE_SUBJECT)
        elapsed = (time.perf_counter() - started) * 1000
        say(f"coaps     crts + att + sen with the IDevID over DTLS: {elapsed:.0f} ms")
        say(f"          issued: {_describe(result.certificate)}")
        ldevid_cert, ldevid_key = _write_identity(
            workdir, "ldevid", result.certificate, result.private_key
        )
        async with EstClient(
            coaps.url, trust=paths.ca_cert, cert=ldevid_cert, key=ldevid_key
        ) as est:
            renewed = (await est.reenroll())[0]
        (workdir / "ldevid-renewed.pem").write_bytes(certificates_pem([renewed]))
        say(f"coaps     sren with the issued certificate: serial {renewed.serial_number:x}")
        if renewed.subject != result.certificate.subject:
            raise CliError("re-enrollment changed the subject")

        async with EstClient(
            https.url, trust=paths.ca_cert, user=DEMO_USER, password=DEMO_PASSWORD
        ) as est:
            over_https = await est.provision("CN=demo-device-0002,O=estcoap demo")
        _write_identity(workdir, "https-device", over_https.certificate, over_https.private_key)
        say(f"https     cacerts + csrattrs + simpleenroll with HTTP auth '{DEMO_USER}'")
        say(f"          issued: {_describe(over_https.certificate)}")
    finally:
        await coaps.close()
        await https.close()
        service.close()
    say(f"files     kept in {workdir}:")
    say("          ca/ (the CA, its server certificate and store: estcoap serve --ca), maker.*,")
    say("          idevid.*, ldevid.* + ldevid-renewed.pem (coaps device), https-device.*")
    digest = renewed.fingerprint(hashes.SHA256()).hex()
    say(f"the device's certificate (SHA-256 {digest[:16]}...):")
    print(renewed.public_bytes(serialization.Encoding.PEM).decode(), end="", flush=True)
