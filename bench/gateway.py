"""Gateway benchmark: enrollments/s through `estcoap gateway` against direct HTTPS to the same
upstream, and the latency the gateway adds (p50, p99).

Three processes on loopback: the upstream (`estcoap serve --https`, a LocalCA), the gateway
(`estcoap gateway`), and this one, which runs the devices: EstClients that keep their
session (DTLS to the gateway, or TLS keep-alive to the upstream) and send CSRs made
in advance, so key generation is not measured. Targets (issue 5): gateway throughput
>= 85% of direct; added p50 <= 3 ms.

    python3 bench/gateway.py [--clients 8] [--seconds 5] [--latency-requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from estcoap.client import EstClient  # noqa: E402
from estcoap.codec.pkcs10 import build_csr  # noqa: E402
from tests.interop.gateway_procs import (  # noqa: E402
    GATEWAY_READY,
    UPSTREAM_READY,
    Pki,
    gateway_args,
    make_pki,
    serving,
    upstream_args,
)


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU of a process (this one when pid is None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU spent by each named process between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self.spent = {n: cpu_seconds(p) - self._before[n] for n, p in self.pids.items()}


def csrs(count: int) -> list[bytes]:
    key = ec.generate_private_key(ec.SECP256R1())  # one key: the CA does not mind, keygen is slow
    return [build_csr(key, x509.Name.from_rfc4514_string(f"CN=bench-{i}")) for i in range(count)]


def client(pki: Pki, url: str) -> EstClient:
    return EstClient(url, trust=pki.ca_pem, cert=pki.device_cert, key=pki.device_key, timeout=30)


async def throughput(
    pki: Pki, url: str, clients: int, seconds: float, pool: list[bytes], meter: CpuMeter
) -> tuple[float, int]:
    """(enrollments/s, enrollments) with `clients` devices sending back to back for `seconds`."""
    done = 0
    deadline = 0.0

    async def device(index: int) -> None:
        nonlocal done
        async with client(pki, url) as est:
            await est.enroll(pool[index])  # session set up before the clock starts
            await ready.wait()
            i = index
            while time.monotonic() < deadline:
                await est.enroll(pool[i % len(pool)])
                done += 1
                i += clients

    ready = asyncio.Event()
    tasks = [asyncio.ensure_future(device(i)) for i in range(clients)]
    await asyncio.sleep(1.0 + 0.05 * clients)  # let every device connect
    started = time.monotonic()
    deadline = started + seconds
    meter.start()
    ready.set()
    await asyncio.gather(*tasks)
    meter.stop()
    return done / (time.monotonic() - started), done


async def latencies(pki: Pki, url: str, count: int, pool: list[bytes]) -> list[float]:
    """Seconds per enrollment for one device, one request at a time."""
    out = []
    async with client(pki, url) as est:
        await est.enroll(pool[0])
        for i in range(count):
            started = time.perf_counter()
            await est.enroll(pool[i % len(pool)])
            out.append(time.perf_counter() - started)
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, pki: Pki) -> int:
    pool = csrs(64)
    with serving(upstream_args(pki, "--trust-clients", pki.maker_pem), UPSTREAM_READY) as up:
        with serving(
            gateway_args(pki, up.url, "--upstream-connections", str(args.clients)), GATEWAY_READY
        ) as gw:
            print(f"upstream {up.url}\ngateway  {gw.url}\n")
            pids = {"upstream": up.process.pid, "gateway": gw.process.pid, "devices": None}
            direct_cpu, gateway_cpu = CpuMeter(pids), CpuMeter(pids)
            direct_rate, direct_n = await throughput(
                pki, up.url, args.clients, args.seconds, pool, direct_cpu
            )
            gateway_rate, gateway_n = await throughput(
                pki, gw.url, args.clients, args.seconds, pool, gateway_cpu
            )
            direct_lat = await latencies(pki, up.url, args.latency_requests, pool)
            gateway_lat = await latencies(pki, gw.url, args.latency_requests, pool)

    ratio = gateway_rate / direct_rate
    print(f"throughput, {args.clients} devices for {args.seconds:g} s each:")
    print(f"  direct HTTPS      {direct_rate:8.1f} enrollments/s")
    print(f"  through gateway   {gateway_rate:8.1f} enrollments/s  ({ratio:.0%} of direct)")
    print(f"CPU ms per enrollment ({os.cpu_count()} cores shared by all three processes):")
    print("                    upstream  gateway  devices")
    for name, meter, n in (("direct HTTPS", direct_cpu, direct_n),
                           ("through gateway", gateway_cpu, gateway_n)):  # fmt: skip
        ms = {k: v * 1e3 / max(n, 1) for k, v in meter.spent.items()}
        print(f"  {name:16} {ms['upstream']:8.2f} {ms['gateway']:8.2f} {ms['devices']:8.2f}")
    print(f"latency, one device, {args.latency_requests} sequential enrollments (ms):")
    print("                      p50      p99     mean")
    for name, values in (("direct HTTPS", direct_lat), ("through gateway", gateway_lat)):
        print(
            f"  {name:16} {pct(values, .5) * 1e3:7.2f}  {pct(values, .99) * 1e3:7.2f}"
            f"  {statistics.fmean(values) * 1e3:7.2f}"
        )
    added50 = (pct(gateway_lat, 0.5) - pct(direct_lat, 0.5)) * 1e3
    added99 = (pct(gateway_lat, 0.99) - pct(direct_lat, 0.99)) * 1e3
    print(f"  added by gateway  {added50:7.2f}  {added99:7.2f}")
    ok_rate, ok_lat = ratio >= 0.85, added50 <= 3.0
    print(f"\ntargets: throughput >= 85% of direct: {'met' if ok_rate else 'NOT met'}; "
          f"added p50 <= 3 ms: {'met' if ok_lat else 'NOT met'}")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="estcoap-bench-") as tmp:
        return asyncio.run(run(args, make_pki(Path(tmp))))


if __name__ == "__main__":
    sys.exit(main())
