"""The CA store's own ceiling: issuances per second when only the store is exercised
(Store.record_issued: the row, its read-back and its audit row, in one committed
transaction), for SQLite and PostgreSQL, from one connection in a loop and from N
processes at once (each with its own connection, as N workers or hosts would have).

The certificates are signed before the clock starts (signing is the CA's cost, not the
store's). PostgreSQL: a throwaway cluster of this machine's Debian postgresql, started as
the tests start theirs (tests/pg_cluster.py: fsync off, so this is the store's and the
server's CPU, not the disk's), or --url for a server of your own (a new, empty database:
the bench fills it). SQLite: a file in a temporary directory, synchronous=NORMAL as serve
runs it (--durable: FULL). Figures are wall-clock on this machine; the target for
PostgreSQL is >= 3,000 issuances/s (issue 17).

    python3 bench/store.py [--count 3000] [--processes 1,2,4,8] [--backend both] [--url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import queue
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from estcoap.ca.store import Store  # noqa: E402


def certificates(count: int) -> list[x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    now = dt.datetime.now(dt.UTC)
    made = []
    for i in range(count):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"device-{i}")])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365))
        )
        made.append(builder.sign(key, hashes.SHA256()))
    return made


def record_all(store: Store, certs: list[x509.Certificate]) -> None:
    for i, cert in enumerate(certs):
        store.record_issued(cert, requester=f"cert:CN=device-{i}", operation="enroll")


def _worker(location: str, ders: list[bytes], start: object, done: object) -> None:
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    with Store.open(location, create=False) as store:
        store.find_issued(1)  # connected before the clock starts
        start.wait()  # type: ignore[attr-defined]
        record_all(store, certs)
    done.put(len(certs))  # type: ignore[attr-defined]


def server_cpu(data_dir: Path | None) -> float:
    """CPU seconds used so far by the PostgreSQL cluster in data_dir: its postmaster, the
    backends alive and those that ended (the postmaster's children times, as it reaps
    them); 0 without a cluster of ours (SQLite works in the client's process)."""
    if data_dir is None:
        return 0.0
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:  # its own, and that of the backends it has reaped
            total += sum(int(f) for f in fields[11:15]) / tick
        elif ppid == postmaster:  # backends alive now
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def concurrent(location: str, certs: list[x509.Certificate], processes: int) -> float:
    """Issuances/s with `processes` processes recording their share of certs at once."""
    context = multiprocessing.get_context("fork")
    start, done = context.Event(), context.Queue()
    ders = [c.public_bytes(serialization_der()) for c in certs]
    shares = [ders[i::processes] for i in range(processes)]
    workers = [
        context.Process(target=_worker, args=(location, share, start, done)) for share in shares
    ]
    for w in workers:
        w.start()
    time.sleep(1.0)  # every worker connected and waiting
    began = time.perf_counter()
    start.set()
    recorded = 0
    for _ in workers:
        while True:
            try:
                recorded += done.get(timeout=1)
                break
            except queue.Empty:  # a worker that died sends nothing: stop, not wait
                if any(w.exitcode not in (None, 0) for w in workers):
                    for w in workers:
                        w.kill()
                    raise SystemExit("a worker process failed (its traceback is above)") from None
    elapsed = time.perf_counter() - began
    for w in workers:
        w.join(60)
    return recorded / elapsed


def serialization_der():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def measure(
    label: str,
    fresh: Callable[[], str],
    certs: list[x509.Certificate],
    processes: list[int],
    durable: bool,
    data_dir: Path | None = None,
) -> None:
    """Prints issuances/s (wall clock) and the CPU each issuance took: the client's (the
    store code, the driver) and the server's; CPU is what a busy machine cannot hide, and
    cores / CPU per issuance is the ceiling on an otherwise idle machine."""
    n = len(certs)
    location = fresh()
    with Store.open(location, durable=durable) as store:
        server, client = server_cpu(data_dir), time.process_time()
        began = time.perf_counter()
        record_all(store, certs)
        elapsed = time.perf_counter() - began
        client, server = time.process_time() - client, server_cpu(data_dir) - server
    print(
        f"{label:<11} 1 connection, in a loop: {n / elapsed:7.0f} issuances/s;"
        f" CPU per issuance {client / n * 1e3:.3f} ms here"
        + (f" + {server / n * 1e3:.3f} ms server" if data_dir else "")
        + f" (one core's ceiling {n / (client + server):.0f}/s)"
    )
    for count in processes:
        location = fresh()
        Store.open(location, durable=durable).close()  # schema made before the clock
        server, client = server_cpu(data_dir), children_cpu()
        rate = concurrent(location, certs, count)
        client, server = children_cpu() - client, server_cpu(data_dir) - server
        print(
            f"{label:<11} {count} processes at once: {rate:7.0f} issuances/s;"
            f" CPU per issuance {(client + server) / n * 1e3:.3f} ms in all"
            f" ({os.cpu_count()} cores: {os.cpu_count() * n / (client + server):.0f}/s"
            " if nothing else ran)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="certificates per run")
    parser.add_argument("--processes", default="2,4,8", help="concurrent runs to measure")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--url", help="a PostgreSQL server's database (default: a throwaway one)")
    parser.add_argument("--durable", action="store_true", help="SQLite synchronous=FULL")
    args = parser.parse_args()
    processes = [int(n) for n in args.processes.split(",") if n]
    print(f"signing {args.count} certificates (not timed) ...", flush=True)
    certs = certificates(args.count)

    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            runs = iter(range(1000))
            measure(
                "SQLite",
                lambda: f"sqlite:{Path(tmp) / f'bench-{next(runs)}.sqlite3'}",
                certs,
                processes,
                args.durable,
            )

    if args.backend in ("postgresql", "both"):
        if args.url:
            if len(processes) > 0:
                print("--url: one database, so only the loop is measured")
            measure("PostgreSQL", lambda: args.url, certs, [], False)
            return 0
        from tests.pg_cluster import PgCluster, pg_bin

        bindir = pg_bin()
        if bindir is None:
            print("no PostgreSQL server here (apt-get install postgresql), or give --url")
            return 1
        cluster = PgCluster(bindir)
        try:
            cluster.start()
            measure(
                "PostgreSQL",
                lambda: cluster.create_database()[0],
                certs,
                processes,
                False,
                cluster.data,
            )
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
