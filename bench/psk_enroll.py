"""PSK bootstrap benchmark: server CPU per enrollment over PSK DTLS, next to certificate DTLS.

Each enrollment is a device opening a NEW DTLS session and sending one sen:

* psk: `estcoap serve --coaps-psk` (aiocoap's tinydtls server, TLS_PSK_WITH_AES_128_CCM_8);
  every device has its own one-time key, added to the CA store before the clock starts,
  and its key's use is spent with the certificate (one store transaction).
* cert: `estcoap serve --coaps` (estcoap's OpenSSL DTLS), each device with its own P-256
  IDevID (ECDHE-ECDSA handshake, the client's chain verified).

Both sides use the same client (EstClient, one per device, in a pool of client processes)
so the figures compare the servers. The server runs in its own process; its CPU is
utime+stime from /proc/PID/stat around the timed phase, divided by the enrollments.

    python3 bench/psk_enroll.py [--enrollments 300] [--concurrency 1 8] [--procs 2]

Loopback, one machine: clients and server share the cores, so rates are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _serve import cpu_seconds, start_serve  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from estcoap.ca import CaPaths, Store, init_ca  # noqa: E402
from estcoap.client import EstClient  # noqa: E402
from estcoap.idevid import DeviceMaker  # noqa: E402

PEM = serialization.Encoding.PEM


# -- client processes -----------------------------------------------------------------------


def client_process(
    url: str, kind: str, work: list, ca_pem: bytes, concurrency: int, go: object, out: object
) -> None:
    """Prepare every device (keys, IDevIDs), wait for `go`, enroll them all, report."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    prepared = []
    for item in work:
        key = ec.generate_private_key(ec.SECP256R1())
        if kind == "psk":
            identity, psk = item
            prepared.append((dict(psk=(identity, psk)), key, f"CN={identity}"))
        else:
            serial, cert_pem, idevid_key_pem = item
            cert = x509.load_pem_x509_certificate(cert_pem)
            idevid_key = serialization.load_pem_private_key(idevid_key_pem, None)
            options = dict(trust=[ca], cert=[cert], key=idevid_key)
            prepared.append((options, key, f"serialNumber={serial}"))
    go.wait()  # type: ignore[attr-defined]
    ok = asyncio.run(_enroll_all(url, prepared, concurrency))
    out.put(ok)  # type: ignore[attr-defined]


async def _enroll_all(url: str, prepared: list, concurrency: int) -> int:
    queue = iter(prepared)
    done = 0

    async def worker() -> None:
        nonlocal done
        for options, key, subject in queue:
            try:
                async with EstClient(url, timeout=30, **options) as est:
                    await est.enroll(key=key, subject=subject)
                done += 1
            except Exception as exc:  # counted, reported at the end
                print(f"enrollment failed: {exc}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def measure(
    url: str, pid: int, kind: str, work: list, ca_pem: bytes, concurrency: int, procs: int
) -> tuple[int, float, float]:
    """(enrollments done, server CPU seconds, wall seconds) for `work`."""
    spawn = mp.get_context("spawn")
    go, out = spawn.Event(), spawn.Queue()
    shares = [work[i::procs] for i in range(procs)]
    per_proc = max(1, concurrency // procs)
    workers = [
        spawn.Process(target=client_process, args=(url, kind, share, ca_pem, per_proc, go, out))
        for share in shares
        if share
    ]
    for w in workers:
        w.start()
    time.sleep(2 + len(work) / 200)  # let every client prepare its devices
    cpu_before, start = cpu_seconds(pid), time.monotonic()
    go.set()
    done = sum(out.get(timeout=600) for _ in workers)
    wall = time.monotonic() - start
    cpu = cpu_seconds(pid) - cpu_before
    for w in workers:
        w.join()
    return done, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = init_ca(root / "ca", ["127.0.0.1"])
        ca_pem = paths.ca_cert.read_bytes()
        maker = DeviceMaker.create()
        maker_pem = root / "maker.pem"
        maker_pem.write_bytes(maker.certificate.public_bytes(PEM))
        print(f"{args.enrollments} enrollments per level, {args.procs} client processes")
        print("front  concurrency  server CPU/enrollment  enrollments/s")
        for kind in ("psk", "cert"):
            for concurrency in args.concurrency:
                tag = secrets.token_hex(3)
                if kind == "psk":
                    work: list = [
                        (f"b-{tag}-{n}", secrets.token_bytes(16)) for n in range(args.enrollments)
                    ]
                    with Store.open(CaPaths.of(paths.dir).store, create=False) as store:
                        for identity, key in work:
                            store.psk_add(identity, key, subject=f"CN={identity}")
                    server = start_serve(paths.dir, ("coaps-psk",))
                else:
                    work = []
                    for n in range(args.enrollments):
                        cert, key = maker.issue_idevid(f"b-{tag}-{n}")
                        work.append(
                            (
                                f"b-{tag}-{n}",
                                cert.public_bytes(PEM),
                                key.private_bytes(
                                    PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption(),
                                ),
                            )
                        )
                    server = start_serve(paths.dir, ("coaps",), ["--trust-clients", str(maker_pem)])
                try:
                    done, cpu, wall = measure(
                        server.url, server.pid, kind, work, ca_pem, concurrency, args.procs
                    )
                finally:
                    server.stop()
                per = cpu / done * 1000 if done else float("nan")
                print(
                    f"{kind:5}  {concurrency:11}  {per:17.2f} ms  {done / wall:13.1f}"
                    f"{'' if done == len(work) else f'  ({len(work) - done} failed)'}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
