"""Server CPU per enrollment with the CA key in SoftHSM2 against the key in a file.

Two CA directories, one with ca.key, one whose key ca init generated in a throwaway
SoftHSM2 token (ec-p256 each). For each, `estcoap serve --coaps` runs in its own process;
one device (an IDevID from a maker the server trusts) keeps one DTLS session and
enrolls N times in a row, so the server's work per request is CoAP, CSR checks, the
signature and the store: what the key's place changes. Server CPU is utime+stime from
/proc/PID/stat around the timed phase (SoftHSM2 is a library: its work is the server's).
Also the bare signature: P-256 ECDSA signatures per second through each key, in this
process.

    python3 bench/hsm_enroll.py [--enrollments 300] [--signatures 2000]

Needs softhsm2 (Debian) and python-pkcs11 (pip install 'estcoap[hsm]').
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _serve import cpu_seconds, start_serve  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from estcoap.ca import CaPaths, init_ca  # noqa: E402
from estcoap.ca.pkcs11key import PIN_ENV  # noqa: E402
from estcoap.ca.signer import PinSource  # noqa: E402
from estcoap.client import EstClient  # noqa: E402
from estcoap.idevid import DeviceMaker  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "246810"


def make_token(root: Path) -> None:
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "13579246",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )


async def enroll_many(url: str, paths: CaPaths, idevid: tuple[Path, Path], n: int) -> None:
    from cryptography import x509

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "bench-0001"),
            x509.NameAttribute(NameOID.COMMON_NAME, "bench"),
        ]
    )
    async with EstClient(url, trust=paths.ca_cert, cert=idevid[0], key=idevid[1]) as est:
        for _ in range(n):
            await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject=subject)


def run_server(
    paths: CaPaths, maker_pem: Path, idevid: tuple[Path, Path], n: int
) -> tuple[float, float]:
    server = start_serve(
        paths.dir, ("coaps",), ["--trust-clients", str(maker_pem)], env={PIN_ENV: PIN}
    )
    try:
        asyncio.run(enroll_many(server.url, paths, idevid, 20))  # warm-up
        cpu, wall = cpu_seconds(server.pid), time.perf_counter()
        asyncio.run(enroll_many(server.url, paths, idevid, n))
        return (cpu_seconds(server.pid) - cpu) / n, (time.perf_counter() - wall) / n
    finally:
        server.stop()


def signatures_per_second(key: object, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        key.sign(i.to_bytes(4, "big") * 16, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=300)
    parser.add_argument("--signatures", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("softhsm2-util") is None or not Path(MODULE).is_file():
        sys.exit("needs softhsm2 (apt-get install softhsm2)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_token(root)
        pin_file = root / "pin"
        pin_file.write_text(PIN + "\n")
        file_ca = init_ca(root / "file-ca", ["127.0.0.1"])
        token_ca = init_ca(
            root / "token-ca",
            ["127.0.0.1"],
            key_uri="pkcs11:token=bench;object=ca",
            pins=PinSource(pin_file=pin_file, module=MODULE),
        )
        maker = DeviceMaker.create()
        maker_pem = root / "maker.pem"
        maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
        cert, key = maker.issue_idevid("bench-0001")
        idevid = (root / "idevid.pem", root / "idevid.key")
        idevid[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        idevid[1].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        print(f"{args.enrollments} enrollments over one DTLS session, server CPU and wall each:")
        for name, paths in (("key in a file", file_ca), ("key in SoftHSM2", token_ca)):
            cpu, wall = run_server(paths, maker_pem, idevid, args.enrollments)
            print(f"  {name:16s} {cpu * 1000:6.2f} ms CPU  {wall * 1000:6.2f} ms wall")
        print(f"P-256 signatures per second in this process ({args.signatures}):")
        file_key = file_ca.load_ca()[1]
        token_key = token_ca.load_ca(PinSource(pin_file=pin_file))[1]
        for name, k in (("key in a file", file_key), ("key in SoftHSM2", token_key)):
            print(f"  {name:16s} {signatures_per_second(k, args.signatures):8.0f} /s")


if __name__ == "__main__":
    main()
