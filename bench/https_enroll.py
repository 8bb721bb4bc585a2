"""Benchmark: EST simpleenroll over HTTPS against `estcoap serve` in a separate process.

Measures enrollments/s with N concurrent clients (a) on keep-alive connections and
(b) with a new TLS connection per enrollment, plus the server's CPU time per
enrollment read from /proc/PID/stat before and after each run. Clients
authenticate with a client certificate (the RFC 7030 recommendation); CSRs are
made before timing so the clients spend their CPU on the wire, not on keys. Their subject
is the client certificate's identity (its CN here), as the CA's issuance policy holds a
device to (docs/policy.md) and its CSR attributes template names it.

    python bench/https_enroll.py [--clients 16] [--seconds 5] [--client-procs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

from _serve import cpu_seconds, start_serve
from cryptography import x509

from estcoap.ca import init_ca
from estcoap.client import EstClient, build_csr, generate_key
from estcoap.codec.names import device_identity


def device_subject(cert_pem: str) -> x509.Name:
    """The subject the issuance policy gives the holder of this certificate: its identity
    (serialNumber, else CN) alone, what /csrattrs would name."""
    identity = device_identity(x509.load_pem_x509_certificate(Path(cert_pem).read_bytes()))
    if identity is None:
        raise SystemExit(f"{cert_pem}: no serialNumber or CN to enroll under")
    return x509.Name([identity])


def make_csrs(count: int, subject: x509.Name) -> list[bytes]:
    # Many CSRs, one key: the CA does not mind, and they all carry the device's identity.
    key = generate_key()
    return [build_csr(key, subject) for _ in range(count)]


async def _worker(url, trust, cert, key, csrs, deadline, keep_alive, counts) -> None:  # type: ignore[no-untyped-def]
    i = 0
    est = EstClient(url, trust=trust, cert=cert, key=key)
    try:
        while time.monotonic() < deadline:
            if not keep_alive:
                await est.close()
                est = EstClient(url, trust=trust, cert=cert, key=key)
            await est.enroll(csrs[i % len(csrs)])
            i += 1
    finally:
        await est.close()
    counts.append(i)


def client_process(args: tuple) -> int:  # type: ignore[type-arg]
    url, trust, cert, key, clients, seconds, keep_alive, start_at = args
    csrs = make_csrs(64, device_subject(cert))

    async def main() -> int:
        counts: list[int] = []
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _worker(url, trust, cert, key, csrs, deadline, keep_alive, counts)
                for _ in range(clients)
            )
        )
        return sum(counts)

    return asyncio.run(main())


def run_mode(url, paths, cert, key, *, clients, procs, seconds, keep_alive, server_pid):  # type: ignore[no-untyped-def]
    per_proc = max(1, clients // procs)
    start_at = time.time() + 1.5  # let every client process import and get ready
    jobs = [
        (url, str(paths.ca_cert), str(cert), str(key), per_proc, seconds, keep_alive, start_at)
        for _ in range(procs)
    ]
    with mp.get_context("spawn").Pool(procs) as pool:
        pending = pool.map_async(client_process, jobs)
        time.sleep(max(0.0, start_at - time.time()))
        cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
        total = sum(pending.get())
        cpu1, t1 = cpu_seconds(server_pid), time.monotonic()
    elapsed = t1 - t0
    return total, elapsed, (cpu1 - cpu0) * 1000 / max(1, total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="estcoap-bench-"))
    paths = init_ca(tmp / "ca", ["127.0.0.1"])
    # The password in the environment, not argv, where every local user could read it.
    server = start_serve(tmp / "ca", ("https",), env={"ESTCOAP_USERS": "bench:bench"})
    try:
        url = server.url

        # One client certificate for all bench clients, enrolled with the password.
        async def first_cert() -> None:
            key = generate_key()
            async with EstClient(url, trust=paths.ca_cert, user="bench", password="bench") as est:
                chain = await est.enroll(key=key, subject="CN=bench-client")
            from cryptography.hazmat.primitives import serialization

            (tmp / "client.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
            (tmp / "client.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

        asyncio.run(first_cert())
        rows = []
        for keep_alive in (True, False):
            total, elapsed, cpu_ms = run_mode(
                url,
                paths,
                tmp / "client.pem",
                tmp / "client.key",
                clients=args.clients,
                procs=args.client_procs,
                seconds=args.seconds,
                keep_alive=keep_alive,
                server_pid=server.pid,
            )
            mode = "keep-alive" if keep_alive else "new TLS conn each"
            rows.append((mode, args.clients, total, elapsed, total / elapsed, cpu_ms))
    finally:
        server.stop()

    print(
        f"EST simpleenroll over HTTPS, {os.cpu_count()} CPUs, client-cert auth, "
        f"{args.client_procs} client process(es)"
    )
    print(
        f"{'mode':<20} {'clients':>7} {'enrolls':>8} {'seconds':>8} {'enroll/s':>9} "
        f"{'server CPU ms/enroll':>21}"
    )
    for mode, clients, total, elapsed, rate, cpu_ms in rows:
        print(f"{mode:<20} {clients:>7} {total:>8} {elapsed:>8.2f} {rate:>9.1f} {cpu_ms:>21.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
