"""Benchmark: the server's CPU per request beside the cryptography it cannot avoid.

Starts `estcoap serve` (a new CA in a temporary directory, coaps and https fronts on
loopback) and drives it with clients we did not write, one process and one new
session per request, with an IDevID (P-256) from a throwaway maker:

* coaps: libcoap's coap-client-openssl, a new DTLS 1.2 handshake per request, for
  `crts` alone and for `sen` (a CSR made once by openssl; each request issues a
  certificate);
* https: curl, a new TLS 1.3 connection per request (P-256 key exchange, as over DTLS),
  for `/cacerts` and `/simpleenroll`.

The server's CPU (user + system, from /proc/PID/stat) over N requests, divided by N, is
its cost per request. The floor, timed in this process with `cryptography` (OpenSSL)
in the same run, is what a handshake and an enrollment cost at the least:

* a handshake: one ECDHE P-256 key generation and derivation, one ECDSA signature with
  the server's key (ServerKeyExchange / CertificateVerify), verifying the client's
  CertificateVerify and its certificate's signature (the maker's);
* an enrollment adds the CSR's signature check and the certificate's signature (the
  CA's key).

    python bench/server_cost.py [--requests 200]

Prints one line per case: server CPU ms per request, floor ms, and their ratio; then
the same clients against two C servers on the same certificates (bench/reference_servers.py:
libcoap's coap-server-openssl and openssl s_server, a GET each), to show what a handshake
costs a server with no Python in it.
Figures are in docs/performance.md ("Server cost per request").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import reference_servers
from _serve import cpu_seconds, start_serve
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca import CaPaths, init_ca
from estcoap.idevid import DeviceMaker

SERIAL = "cost-0001"


def pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


# ---- the floor ---------------------------------------------------------------------------


def timed(op, repeat: int) -> float:
    """CPU seconds per call, the median of five rounds of `repeat` calls: on a shared
    machine the median is disturbed about as much as the server's own figure is, where
    the best round would flatter the floor."""
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(repeat):
            op()
        rounds.append((time.process_time() - start) / repeat)
    return statistics.median(rounds)


def floor_ms(server_key, ca_key, maker_key, idevid, csr, repeat: int = 300) -> dict[str, float]:
    data = os.urandom(64)
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_sig = client_key.sign(data, ec.ECDSA(hashes.SHA256()))
    maker_public = maker_key.public_key()
    hash_of = idevid.signature_hash_algorithm
    costs = {
        "ecdhe": timed(
            lambda: ec.generate_private_key(ec.SECP256R1()).exchange(ec.ECDH(), peer), repeat
        ),
        "server_sign": timed(lambda: server_key.sign(data, ec.ECDSA(hashes.SHA256())), repeat),
        "verify_certificate_verify": timed(
            lambda: client_key.public_key().verify(client_sig, data, ec.ECDSA(hashes.SHA256())),
            repeat,
        ),
        "verify_client_certificate": timed(
            lambda: maker_public.verify(
                idevid.signature, idevid.tbs_certificate_bytes, ec.ECDSA(hash_of)
            ),
            repeat,
        ),
        "verify_csr": timed(lambda: csr.is_signature_valid, repeat),
        "ca_sign": timed(lambda: ca_key.sign(data, ec.ECDSA(hashes.SHA256())), repeat),
    }
    ms = {name: seconds * 1000 for name, seconds in costs.items()}
    handshake = sum(
        ms[k]
        for k in ("ecdhe", "server_sign", "verify_certificate_verify", "verify_client_certificate")
    )
    return {
        **{k: round(v, 4) for k, v in ms.items()},
        "handshake": round(handshake, 4),
        "enrollment": round(handshake + ms["verify_csr"] + ms["ca_sign"], 4),
    }


# ---- the clients -------------------------------------------------------------------------


def drive(server_pid: int, command: list[str], requests: int, check) -> tuple[float, int]:
    """Server CPU ms per request over `requests` runs of `command`, and the failures."""
    failures = 0
    before = cpu_seconds(server_pid)
    for _ in range(requests):
        done = subprocess.run(command, capture_output=True, timeout=60)
        if done.returncode != 0 or not check(done.stdout):
            if not failures:  # the first one says why
                print(f"  failed: {done.returncode} {done.stderr.decode()[:200].strip()}")
            failures += 1
    spent = cpu_seconds(server_pid) - before
    return 1000 * spent / requests, failures


def reference_rows(work, paths, maker_pem, coap, curl, requests, floor) -> list[dict]:
    """The same clients against C servers on the same certificates (reference_servers)."""
    rows = []
    starts = {
        "libcoap coap-server GET /": lambda: reference_servers.start_libcoap(
            paths.server_cert, paths.server_key, maker_pem
        ),
        "openssl s_server GET": lambda: reference_servers.start_s_server(
            work, paths.server_cert, paths.server_key, maker_pem
        ),
    }
    for name, start in starts.items():
        server, url = start()
        client = coap if url.startswith("coaps") else curl
        try:
            deadline = time.monotonic() + 20
            while subprocess.run(client + [url], capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not answer within 20 s")
                time.sleep(0.3)
            ms, failed = drive(server.pid, client + [url], requests, lambda out: len(out) > 5)
        finally:
            reference_servers.stop(server)
        least = floor["handshake"]
        rows.append(
            {
                "case": name,
                "requests": requests,
                "failed": failed,
                "server_cpu_ms": round(ms, 3),
                "floor_ms": round(least, 3),
                "ratio": round(ms / least, 2),
            }
        )
        print(
            f"{name:26} server {ms:7.3f} ms/request   floor {least:6.3f} ms   "
            f"ratio {ms / least:5.2f}   failed {failed}   (C reference)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per case")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the C servers (libcoap, openssl s_server) measured beside ours",
    )
    args = parser.parse_args()
    for tool in ("coap-client-openssl", "curl", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")

    with tempfile.TemporaryDirectory(prefix="servercost-") as tmp:
        work = Path(tmp)
        paths = CaPaths.of(work / "ca")
        init_ca(work / "ca", ["127.0.0.1"])
        maker = DeviceMaker.create()
        maker_pem = pem(
            work / "maker.pem", maker.certificate.public_bytes(serialization.Encoding.PEM)
        )
        idevid, idevid_key = maker.issue_idevid(SERIAL)
        cert = pem(work / "idevid.pem", idevid.public_bytes(serialization.Encoding.PEM))
        key = pem(work / "idevid.key", private_pem(idevid_key))
        device_key = pem(work / "device.key", private_pem(ec.generate_private_key(ec.SECP256R1())))
        csr_der = work / "csr.der"
        subprocess.run(
            [
                "openssl",
                "req",
                "-new",
                "-key",
                str(device_key),
                "-subj",
                f"/serialNumber={SERIAL}/CN={SERIAL}",
                "-outform",
                "DER",
                "-out",
                str(csr_der),
            ],
            check=True,
        )
        csr_b64 = work / "csr.b64"
        subprocess.run(["openssl", "base64", "-in", str(csr_der), "-out", str(csr_b64)], check=True)
        server = start_serve(work / "ca", ("coaps", "https"), ["--trust-clients", str(maker_pem)])
        base = server.urls["coaps"]
        coap = [
            "coap-client-openssl",
            "-B",
            "30",
            "-c",
            str(cert),
            "-j",
            str(key),
            "-R",
            str(paths.ca_cert),
        ]
        curl = [
            "curl",
            "-sS",
            "--fail",
            "--curves",
            "prime256v1",
            "--cacert",
            str(paths.ca_cert),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ]
        web = server.urls["https"]
        cases = {
            "coaps crts": coap + [f"{base}/crts"],
            "coaps sen": coap + ["-m", "post", "-t", "286", "-f", str(csr_der), f"{base}/sen"],
            "https cacerts": curl + [f"{web}/cacerts"],
            "https simpleenroll": curl
            + [
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                f"@{csr_b64}",
                f"{web}/simpleenroll",
            ],
        }
        rows = []
        try:
            deadline = time.monotonic() + 60
            while subprocess.run(cases["coaps crts"], capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not answer crts within 60 s")
                time.sleep(0.5)
            for command in cases.values():  # warm: every code path loaded once
                subprocess.run(command, capture_output=True, timeout=60)
            floor = floor_ms(
                load_key(paths.server_key),
                load_key(paths.ca_key),
                maker.private_key,
                idevid,
                x509.load_der_x509_csr(csr_der.read_bytes()),
            )
            for name, command in cases.items():
                enrollment = "sen" in name or "enroll" in name
                ms, failed = drive(server.pid, command, args.requests, lambda out: len(out) > 100)
                least = floor["enrollment" if enrollment else "handshake"]
                row = {
                    "case": name,
                    "requests": args.requests,
                    "failed": failed,
                    "server_cpu_ms": round(ms, 3),
                    "floor_ms": round(least, 3),
                    "ratio": round(ms / least, 2),
                }
                rows.append(row)
                print(
                    f"{name:20} server {ms:7.3f} ms/request   floor {least:6.3f} ms   "
                    f"ratio {ms / least:5.2f}   failed {failed}",
                    flush=True,
                )
            print("floor parts (ms):", json.dumps(floor))
            if not args.no_reference:
                rows += reference_rows(work, paths, maker_pem, coap, curl, args.requests, floor)
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": rows, "floor_ms": floor}, indent=2) + "\n")


if __name__ == "__main__":
    main()
