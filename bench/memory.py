"""Benchmark: does the server give memory back after a burst of enrollments?

Runs a LocalCA with its HTTPS or CoAPs front in this process and a bounded burst of
enrollments from client processes over loopback, then reports the server's resident
memory (RSS) before, at its peak and after, beside what Python itself still holds
(tracemalloc) and the collector's figures. RSS that stays high while Python holds
little is free memory the C allocator kept (fragmentation): malloc_trim(0), which
`serve` calls periodically, hands it back. What Python still holds is live objects:
caches, bounded where they live (CoAP keeps each exchange 247 s, RFC 7252 s4.8.2).

    python bench/memory.py [--front https|coaps] [--enrollments 3000] [--clients 16]
                           [--client-procs 2] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from estcoap.ca import LocalCA, init_ca
from estcoap.client import EstClient, build_csr, generate_key
from estcoap.idevid import DeviceMaker
from estcoap.serving import release_free_memory

MIB = 1024 * 1024


def rss_kib(field: str = "VmRSS") -> int:
    """VmRSS (now) or VmHWM (the peak so far) of this process, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def malloc_trim() -> bool:
    """serve's own call (glibc malloc_trim(0)), timed."""
    started = time.perf_counter()
    released = release_free_memory()
    print(f"  malloc_trim(0) took {(time.perf_counter() - started) * 1000:.2f} ms", flush=True)
    return released


# ---- clients (separate processes, so their memory is not the server's) --------------


def client_process(job: tuple[str, str, str, str, bytes, int, int]) -> int:
    url, trust, cert, key, csr, count, concurrency = job
    return asyncio.run(_clients(url, trust, cert, key, csr, count, concurrency))


async def _clients(url, trust, cert, key, csr, count, concurrency) -> int:  # type: ignore[no-untyped-def]
    done = 0

    async def worker(share: int) -> None:
        nonlocal done
        async with EstClient(url, trust=trust, cert=cert, key=key, timeout=60) as est:
            for _ in range(share):
                await est.enroll(csr)
                done += 1

    shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
    await asyncio.gather(*(worker(s) for s in shares if s))
    return done


# ---- the server ------------------------------------------------------------------


async def start_front(front: str, ca: LocalCA):  # type: ignore[no-untyped-def]
    if front == "https":
        from estcoap.https import start_https_server

        server = await start_https_server(
            ca, "127.0.0.1", 0, cert_chain=ca.paths.server_cert, key=ca.paths.server_key
        )
        return server, server.url
    from estcoap.coap.server import start_coaps_server

    coaps = await start_coaps_server(
        ca,
        [("127.0.0.1", 0)],
        cert_chain=ca.paths.server_cert,
        key=ca.paths.server_key,
        trust_anchors=ca.client_trust_anchors(),
    )
    return coaps, coaps.url


def python_figures(label: str) -> None:
    counts = gc.get_count()
    objects = len(gc.get_objects())
    line = f"  {label:<28} gc objects {objects:>9,}  gen counts {counts}"
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        line += f"  traced {current / MIB:7.1f} MiB (peak {peak / MIB:.1f})"
    print(line, flush=True)


def rss_line(label: str, baseline: int) -> int:
    now = rss_kib()
    print(f"  {label:<28} RSS {now / 1024:7.1f} MiB  ({(now - baseline) / 1024:+.1f})", flush=True)
    return now


async def run(args: argparse.Namespace, work: Path) -> None:
    paths = init_ca(work / "ca", ["127.0.0.1", "localhost"])
    maker = DeviceMaker.create()
    idevid, idevid_key = maker.issue_idevid("bench-0001")
    cert_path, key_path = work / "idevid.pem", work / "idevid.key"
    cert_path.write_bytes(idevid.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        idevid_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    ca = LocalCA.open(paths.dir, trust_clients=[maker.certificate])
    server, url = await start_front(args.front, ca)
    csr = build_csr(generate_key(), idevid.subject)  # a subject any issuance policy allows
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()
    baseline = rss_kib()
    print(
        f"{args.front}: {args.enrollments} enrollments, {args.clients} clients in "
        f"{args.client_procs} processes, against {url}",
        flush=True,
    )
    rss_line("before the burst", baseline)
    python_figures("before the burst")

    loop = asyncio.get_running_loop()
    per_proc = [
        args.enrollments // args.client_procs + (i < args.enrollments % args.client_procs)
        for i in range(args.client_procs)
    ]
    concurrency = max(1, args.clients // args.client_procs)
    jobs = [
        (url, str(paths.ca_cert), str(cert_path), str(key_path), csr, n, concurrency)
        for n in per_proc
    ]
    started = time.monotonic()
    with mp.get_context("spawn").Pool(args.client_procs) as pool:
        done = sum(await loop.run_in_executor(None, pool.map, client_process, jobs))
    elapsed = time.monotonic() - started
    print(f"  burst: {done} enrollments in {elapsed:.1f} s ({done / elapsed:.0f}/s)")
    print(f"  {'peak during the burst':<28} RSS {rss_kib('VmHWM') / 1024:7.1f} MiB")
    rss_line("after the burst", baseline)
    python_figures("after the burst")

    await asyncio.sleep(args.idle)  # connections close, timers run out
    gc.collect()
    rss_line(f"idle {args.idle:.0f} s + gc.collect()", baseline)
    python_figures("idle + gc.collect()")
    if not malloc_trim():
        print("  (malloc_trim released nothing, or this is not glibc)")
    rss_line("after malloc_trim(0)", baseline)
    await server.close()
    ca.close()
    gc.collect()
    rss_line("fronts closed + gc.collect()", baseline)
    malloc_trim()
    rss_line("... + malloc_trim(0)", baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--front", choices=("https", "coaps"), default="https")
    parser.add_argument("--enrollments", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle after the burst")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace Python allocations (slower)"
    )
    args = parser.parse_args()
    if args.enrollments <= 0 or args.clients <= 0 or args.client_procs <= 0:
        parser.error("counts must be positive")
    with tempfile.TemporaryDirectory(prefix="estcoap-memory-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
