"""Benchmark: enrollments/s and server CPU per enrollment for 1 and 2 workers, on the
SQLite and the PostgreSQL store (issue 17).

For each case `estcoap serve --workers W` runs on a new CA (its store in the CA directory,
or in a new database of a PostgreSQL cluster) and client processes enroll N devices over
CoAPs, each device a new DTLS session with its own P-256 IDevID (made before the timed
run) and one simpleenroll. The layouts compared (--layouts): 1 and 2 workers, and "1+1",
two separate single-process serves, each with its own CA and store and half of the
clients: the control that tells what two processes cost on this machine when they share
nothing, from what two workers of one serve cost (their shared store). The load is the
same for every layout: --clients processes with --concurrency devices in flight each, as
fast as the server answers, or, with --rate, devices started at that many per second in
all (an offered load that does not depend on the server's speed). Measured:

* enrollments/s: N over the wall time of the run;
* server CPU per enrollment: user + system time of the serve parent and its workers
  (/proc/PID/stat), over N;
* PostgreSQL CPU per enrollment, counted apart: the postmaster and its backends (the
  postmaster's reaped children included), over N;
* the server's context switches per enrollment (/proc/PID/status): voluntary ones are
  the event loop going to sleep in epoll_wait with nothing to do, involuntary ones the
  scheduler taking the core away (the clients share the machine's cores);
* with --syscalls, the server's system calls per enrollment (perf's tracepoints, which
  cost the traced process little, unlike strace): all of them, and the epoll_wait calls
  (event-loop wakeups), receives and sends among them;
* with --profile DIR, a py-spy profile of each server process during the timed run
  (DIR/CASE-pid.txt, collapsed stacks; for finding where CPU goes, not for the figures);
  --profile-gil samples only the thread holding the GIL (a thread waiting for it, which
  py-spy otherwise counts, is left out).

The cases run interleaved, round after round, so a change of the machine's load hits
them alike; the load average is printed with each run. PostgreSQL is a throwaway cluster
(tests/pg_cluster.py: Debian's postgresql, fsync off) unless --postgresql URL names one.

    python bench/scale.py [--devices 300] [--rounds 3] [--concurrency 16] [--clients 2]
                          [--layouts 1,2,1+1] [--rate 30] [--stores sqlite,postgresql]
                          [--syscalls] [--profile DIR]

Figures and what they mean for N cores and M hosts: docs/performance.md ("Workers and
hosts").
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
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


def minor_faults(pid: int) -> int:
    """Page faults served without I/O so far: a forked worker's first write to a page it
    shares with its parent (copy-on-write) is one; 0 once gone."""
    try:
        return int(_stat(pid)[7])
    except (FileNotFoundError, ProcessLookupError):
        return 0


def ctxt_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of a process so far; (0, 0) once gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


# The system calls counted with --syscalls: every one, and those that tell the event
# loop's wakeups (epoll_wait) and its datagram traffic apart; and moves between cores.
SYSCALL_EVENTS = {
    "syscalls": "raw_syscalls:sys_enter",
    "epoll_wait": "syscalls:sys_enter_epoll_wait",
    "recvfrom": "syscalls:sys_enter_recvfrom",
    "sendto": "syscalls:sys_enter_sendto",
    "futex": "syscalls:sys_enter_futex",
    "migrations": "cpu-migrations",  # moved to another core: its caches left behind
}


class SyscallCount:
    """perf stat on the server's processes while the timed run lasts."""

    def __init__(self, pids: list[int], out: Path) -> None:
        self.out = out
        events = ",".join(SYSCALL_EVENTS.values())
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", str(out), "-e", events]
            + ["-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # perf attaches before the run starts

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(2)
        self.proc.wait(30)
        counts: dict[str, int] = {}
        names = {event: name for name, event in SYSCALL_EVENTS.items()}
        for line in self.out.read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2] in names and parts[0].isdigit():
                counts[names[parts[2]]] = int(parts[0])
        return counts


def py_spy(pid: int, out: Path, gil: bool = False) -> subprocess.Popen:
    """Samples of every thread that runs or waits to run (a wait for the GIL counts), or
    with gil only of the thread holding the GIL: where the Python code's CPU goes."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--nonblocking", "--format", "raw", "--rate", "200"]
        + (["--gil"] if gil else [])
        + ["--pid", str(pid), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ---- clients (separate processes: their CPU is not the server's) ----------------------


def _client(
    targets: list[tuple[str, bytes]],
    devices: list[tuple[bytes, bytes, str]],
    k: int,
    rate: float = 0.0,
) -> int:
    """Enroll the devices, at most k at once, the i-th at targets[i % len(targets)] (its
    URL and its CA certificate); rate > 0: the i-th starts at i / rate s (an offered load
    that does not depend on how fast the server answers), else at once."""
    from cryptography import x509

    from estcoap.client.api import EstClient

    trusted = []
    for url, ca_pem in targets:
        ca_file = Path(tempfile.mkdtemp()) / "ca.pem"
        ca_file.write_bytes(ca_pem)
        trusted.append((url, ca_file))

    async def one(
        cert_pem: bytes, key_pem: bytes, name: str, limit: asyncio.Semaphore, at: float, i: int
    ) -> bool:
        url, ca_file = trusted[i % len(trusted)]
        await asyncio.sleep(at - time.monotonic())
        async with limit:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
            new_key = ec.generate_private_key(ec.SECP256R1())
            failure: Exception | None = None
            for _ in range(3):
                try:
                    async with EstClient(url, trust=ca_file, cert=cert, key=key, timeout=10) as c:
                        await c.enroll(key=new_key, subject=f"serialNumber={name}")
                        return True
                except Exception as exc:  # a retry; said once if it persists
                    failure = exc
                    await asyncio.sleep(0.2)
            print(f"{name}: not enrolled: {failure!r}", file=sys.stderr)
            return False

    async def run() -> int:
        limit = asyncio.Semaphore(k)
        t0 = time.monotonic()
        step = 1 / rate if rate else 0.0
        done = await asyncio.gather(
            *(one(*d, limit, t0 + i * step, i) for i, d in enumerate(devices))
        )
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


def _identities(maker: DeviceMaker, prefix: str, count: int) -> list[tuple[bytes, bytes, str]]:
    devices = []
    for i in range(count):
        cert, key = maker.issue_idevid(f"{prefix}-{i}")
        devices.append(
            (
                cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                f"{prefix}-{i}",
            )
        )
    return devices


def _new_ca(args, store: str, pg, work: Path, name: str) -> Path:
    ca = work / f"ca-{name}-{time.monotonic_ns()}"
    url = None
    if store == "postgresql":
        url = pg.create_database()[0] if pg is not None else args.postgresql
    init_ca(ca, ["127.0.0.1"], store_url=url)
    return ca


def run_case(args, store: str, layout: str, pg, maker: DeviceMaker, work: Path) -> dict:
    """layout: "1" or "2" (serve --workers 1 or 2), or "1+1": two separate single-process
    serves, each with its own CA and store, each loaded by half of the clients: the
    control for what two processes cost on this machine when they share nothing; "1+1x"
    the same with every client sending half of its devices to each serve, as the kernel
    spreads each client's devices over the workers of one serve."""
    separate = layout in ("1+1", "1+1x")
    workers = 1 if separate else int(layout)
    instances = 2 if separate else 1
    cas = [_new_ca(args, store, pg, work, f"{store}-{layout}") for _ in range(instances)]
    warm = 10 * max(workers, instances)  # enrolled before the measure: each process's first
    # requests import modules and build caches (chain verdicts, OpenSSL contexts)
    devices = _identities(maker, f"s{layout.replace('+', 'x')}", args.devices + warm)
    servers = [serve(ca, workers, work / "maker.pem") for ca in cas]
    pids = [pid for _, server_pids, _ in servers for pid in server_pids]
    urls = [f"coaps://127.0.0.1:{port}" for _, _, port in servers]
    postmaster = None
    if pg is not None and store == "postgresql":
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    try:
        targets = [(url, (ca / "ca.pem").read_bytes()) for url, ca in zip(urls, cas, strict=True)]
        for i, target in enumerate(targets):
            _client([target], devices[i:warm:instances], 4)
        devices = devices[warm:]
        shares = [devices[i :: args.clients] for i in range(args.clients)]
        # the parent of --workers 2 only supervises: its CPU is counted, its switches not
        serving = [p for _, ps, _ in servers for p in (ps[1:] if workers > 1 else ps)]
        tag = f"{store}-{layout}-{time.monotonic_ns()}"
        counter = SyscallCount(serving, work / f"{tag}.perf") if args.syscalls else None
        spies = []
        if args.profile:
            spies = [
                py_spy(p, Path(args.profile) / f"{tag}-{p}.txt", args.profile_gil) for p in serving
            ]
            time.sleep(1.0)
        load = os.getloadavg()[0]
        switches0 = [ctxt_switches(p) for p in serving]
        faults0 = sum(minor_faults(p) for p in serving)
        cpu0 = sum(cpu_seconds(p) for p in pids)
        pg0 = postgres_cpu(postmaster) if postmaster else 0.0
        start = time.monotonic()
        with multiprocessing.get_context("fork").Pool(args.clients) as pool:
            done = sum(
                pool.starmap(
                    _client,
                    [
                        (
                            targets if layout == "1+1x" else [targets[i % instances]],
                            share,
                            args.concurrency,
                            args.rate / args.clients if args.rate else 0.0,
                        )
                        for i, share in enumerate(shares)
                    ],
                )
            )
        wall = time.monotonic() - start
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        pg_cpu = (postgres_cpu(postmaster) - pg0) if postmaster else 0.0
        switches = [ctxt_switches(p) for p in serving]
        faults = sum(minor_faults(p) for p in serving) - faults0
        voluntary = sum(s[0] - s0[0] for s, s0 in zip(switches, switches0, strict=True))
        involuntary = sum(s[1] - s0[1] for s, s0 in zip(switches, switches0, strict=True))
        syscalls = counter.stop() if counter is not None else {}
        for spy in spies:
            spy.send_signal(2)
            spy.wait(30)
    finally:
        for proc, _, _ in servers:
            proc.terminate()
        for proc, _, _ in servers:
            proc.wait(60)
    return {
        "store": store,
        "layout": layout,
        "done": done,
        "rate": done / wall,
        "cpu_ms": 1000 * cpu / max(done, 1),
        "pg_ms": 1000 * pg_cpu / max(done, 1),
        "load": load,
        "voluntary": voluntary / max(done, 1),
        "involuntary": involuntary / max(done, 1),
        "faults": faults / max(done, 1),
        "syscalls": {name: n / max(done, 1) for name, n in syscalls.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=300, help="enrollments per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="devices at once per client")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--postgresql", metavar="URL", help="an existing database to use")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument(
        "--layouts",
        default="1,2",
        help="what to compare: 1, 2 (serve --workers N), 1+1 (two separate single-process "
        "serves, each with its own store: the control for what two processes cost here), "
        "1+1x (the same, each client sending to both)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered enrollments/s in all (paced starts); default: as fast as answered",
    )
    parser.add_argument(
        "--syscalls", action="store_true", help="count the server's system calls (perf)"
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy profiles of the server")
    parser.add_argument(
        "--profile-gil", action="store_true", help="profile only the thread holding the GIL"
    )
    args = parser.parse_args()
    stores = args.stores.split(",")
    layouts = args.layouts.split(",")
    if args.profile and not Path(sys.executable).with_name("py-spy").exists():
        raise SystemExit("--profile needs py-spy beside this python: pip install py-spy")
    if args.syscalls and shutil.which("perf") is None:
        raise SystemExit("--syscalls needs perf (Debian: linux-perf)")

    pg = None
    if "postgresql" in stores and not args.postgresql:
        from tests.pg_cluster import PgCluster, pg_bin

        bindir = pg_bin()
        if bindir is None:
            raise SystemExit("no PostgreSQL server here: install postgresql or give --postgresql")
        pg = PgCluster(bindir)
        pg.start()
    maker = DeviceMaker.create()
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "maker.pem").write_bytes(
                maker.certificate.public_bytes(serialization.Encoding.PEM)
            )
            for round_ in range(args.rounds):
                for store in stores:
                    for layout in layouts:
                        r = run_case(args, store, layout, pg, maker, work)
                        results.setdefault((store, layout), []).append(r)
                        calls = " ".join(f"{k} {v:.1f}" for k, v in r["syscalls"].items())
                        print(
                            f"round {round_ + 1}: {store:10s} {layout:3s} "
                            f"{r['done']}/{args.devices} enrolled, {r['rate']:6.1f} enrollments/s, "
                            f"server {r['cpu_ms']:5.2f} ms CPU/enrollment, PostgreSQL "
                            f"{r['pg_ms']:5.2f} ms, load {r['load']:.1f}; per enrollment: "
                            f"{r['voluntary']:.1f} voluntary and {r['involuntary']:.1f} "
                            f"involuntary context switches, {r['faults']:.0f} minor page faults"
                            f" {calls}",
                            flush=True,
                        )
    finally:
        if pg is not None:
            pg.stop()
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("medians over the rounds [range], and against layout 1 of the same store:")
    for (store, layout), runs in results.items():
        sums = [r["cpu_ms"] + r["pg_ms"] for r in runs]
        base = results.get((store, "1"))
        versus = ""
        if base is not None and layout != "1":
            base_sum = statistics.median(r["cpu_ms"] + r["pg_ms"] for r in base)
            versus = f" ({100 * (statistics.median(sums) / base_sum - 1):+.0f} %)"
        print(
            f"{store:10s} {layout:3s}: {statistics.median(r['rate'] for r in runs):6.1f} "
            f"enrollments/s, server {_spread([r['cpu_ms'] for r in runs])} ms CPU/enrollment, "
            f"PostgreSQL {_spread([r['pg_ms'] for r in runs])} ms, "
            f"sum {_spread(sums)} ms{versus}"
        )


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


if __name__ == "__main__":
    main()
