"""Benchmark: enrollments/s and server CPU per enrollment for 1 and 2 workers, on the
SQLite and the PostgreSQL store (issue 17).

For each case `estcoap serve --workers W` runs on a new CA (its store in the CA directory,
or in a new database of a PostgreSQL cluster) and client processes enroll N devices over
CoAPs, each device a new DTLS session with its own P-256 IDevID (made before the timed
run) and one simpleenroll. Measured:

* enrollments/s: N over the wall time of the run;
* server CPU per enrollment: user + system time of the serve parent and its workers
  (/proc/PID/stat), over N;
* PostgreSQL CPU per enrollment, counted apart: the postmaster and its backends (the
  postmaster's reaped children included), over N.

The cases run interleaved, round after round, so a change of the machine's load hits
them alike; the load average is printed with each run. PostgreSQL is a throwaway cluster
(tests/pg_cluster.py: Debian's postgresql, fsync off) unless --postgresql URL names one.

    python bench/scale.py [--devices 300] [--rounds 3] [--concurrency 16] [--clients 2]

Figures and what they mean for N cores and M hosts: docs/performance.md ("Workers and
hosts").
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from estcoap.ca import init_ca  # noqa: E402
from estcoap.idevid import DeviceMaker  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime (and the reaped children's cutime + cstime); 0 for a process gone."""
    try:
        fields = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def postgres_cpu(postmaster: int) -> float:
    """The postmaster (with its reaped backends) and its live backends."""
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == postmaster:
                    total += cpu_seconds(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return total


# ---- clients (separate processes: their CPU is not the server's) ----------------------


def _client(url: str, ca_pem: bytes, devices: list[tuple[bytes, bytes, str]], k: int) -> int:
    from cryptography import x509

    from estcoap.client.api import EstClient

    ca_file = Path(tempfile.mkdtemp()) / "ca.pem"
    ca_file.write_bytes(ca_pem)

    async def one(cert_pem: bytes, key_pem: bytes, name: str, limit: asyncio.Semaphore) -> bool:
        async with limit:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
            new_key = ec.generate_private_key(ec.SECP256R1())
            for _ in range(3):
                try:
                    async with EstClient(url, trust=ca_file, cert=cert, key=key, timeout=10) as c:
                        await c.enroll(key=new_key, subject=f"serialNumber={name}")
                        return True
                except Exception:  # a retry, counted by the failures below if it persists
                    await asyncio.sleep(0.2)
            return False

    async def run() -> int:
        limit = asyncio.Semaphore(k)
        done = await asyncio.gather(*(one(*d, limit) for d in devices))
        return sum(done)

    return asyncio.run(run())


# ---- one case ----------------------------------------------------------------------


def serve(ca: Path, workers: int, maker_pem: Path) -> tuple[subprocess.Popen, list, int]:
    """serve on a port it picks (a port chosen here could be taken meanwhile on a shared
    machine); its process ids (the parent's and the workers') and the port."""
    log = open(ca / "serve.log", "w")  # noqa: SIM115 (the process writes it while it runs)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "estcoap.cli",
            "serve",
            "--ca",
            str(ca),
            "--coaps",
            "127.0.0.1:0",
            "--trust-clients",
            str(maker_pem),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=ENV,
    )
    pids, port = [proc.pid], 0
    while True:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"serve ended before it was ready: {(ca / 'serve.log').read_text()}")
        if line.startswith("serving EST-coaps"):
            port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
            if workers == 1:
                break
        if "workers serving" in line:
            pids += [int(p) for p in re.findall(r"\d+", line.split("pids", 1)[1])]
            break
    return proc, pids, port


def run_case(args, store: str, workers: int, pg, maker: DeviceMaker, work: Path) -> dict:
    ca = work / f"ca-{store}-{workers}-{time.monotonic_ns()}"
    url = None
    if store == "postgresql":
        url = pg.create_database()[0] if pg is not None else args.postgresql
    init_ca(ca, ["127.0.0.1"], store_url=url)
    maker_pem = work / "maker.pem"
    devices = []
    warm = 10 * workers  # enrolled before the measure: each worker's first requests import
    # modules and build caches (chain verdicts, OpenSSL contexts) a long-running one has
    for i in range(args.devices + warm):
        cert, key = maker.issue_idevid(f"s{workers}-{i}")
        devices.append(
            (
                cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                f"s{workers}-{i}",
            )
        )
    proc, pids, port = serve(ca, workers, maker_pem)
    postmaster = None
    if pg is not None and store == "postgresql":
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    try:
        _client(f"coaps://127.0.0.1:{port}", (ca / "ca.pem").read_bytes(), devices[:warm], 4)
        devices = devices[warm:]
        shares = [devices[i :: args.clients] for i in range(args.clients)]
        load = os.getloadavg()[0]
        cpu0 = sum(cpu_seconds(p) for p in pids)
        pg0 = postgres_cpu(postmaster) if postmaster else 0.0
        start = time.monotonic()
        with multiprocessing.get_context("fork").Pool(args.clients) as pool:
            done = sum(
                pool.starmap(
                    _client,
                    [
                        (
                            f"coaps://127.0.0.1:{port}",
                            (ca / "ca.pem").read_bytes(),
                            s,
                            args.concurrency,
                        )
                        for s in shares
                    ],
                )
            )
        wall = time.monotonic() - start
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        pg_cpu = (postgres_cpu(postmaster) - pg0) if postmaster else 0.0
    finally:
        proc.terminate()
        proc.wait(60)
    return {
        "store": store,
        "workers": workers,
        "done": done,
        "rate": done / wall,
        "cpu_ms": 1000 * cpu / max(done, 1),
        "pg_ms": 1000 * pg_cpu / max(done, 1),
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=300, help="enrollments per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="devices at once per client")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--postgresql", metavar="URL", help="an existing database to use")
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    stores = args.stores.split(",")

    pg = None
    if "postgresql" in stores and not args.postgresql:
        from tests.pg_cluster import PgCluster, pg_bin

        bindir = pg_bin()
        if bindir is None:
            raise SystemExit("no PostgreSQL server here: install postgresql or give --postgresql")
        pg = PgCluster(bindir)
        pg.start()
    maker = DeviceMaker.create()
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "maker.pem").write_bytes(
                maker.certificate.public_bytes(serialization.Encoding.PEM)
            )
            for round_ in range(args.rounds):
                for store in stores:
                    for workers in (1, 2):
                        r = run_case(args, store, workers, pg, maker, work)
                        results.setdefault((store, workers), []).append(r)
                        print(
                            f"round {round_ + 1}: {store:10s} workers={workers} "
                            f"{r['done']}/{args.devices} enrolled, {r['rate']:6.1f} enrollments/s, "
                            f"server {r['cpu_ms']:5.2f} ms CPU/enrollment, PostgreSQL "
                            f"{r['pg_ms']:5.2f} ms, load {r['load']:.1f}",
                            flush=True,
                        )
    finally:
        if pg is not None:
            pg.stop()
    print("\nmedians over the rounds:")
    for (store, workers), runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["cpu_ms"] for r in runs)
        pg_ms = statistics.median(r["pg_ms"] for r in runs)
        print(
            f"{store:10s} workers={workers}: {rate:6.1f} enrollments/s, server {cpu:5.2f} ms "
            f"CPU/enrollment, PostgreSQL {pg_ms:5.2f} ms, sum {cpu + pg_ms:5.2f} ms"
        )


if __name__ == "__main__":
    main()
