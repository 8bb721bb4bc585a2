"""Benchmark: does `estcoap simulate` keep its rate and its memory from 10,000 to 100,000
devices, and does the server's memory come back to idle after each run?

Starts `estcoap serve` (a new CA in a temporary directory, coaps and https fronts on
loopback) in a process of its own, warms it up with a few devices, then runs
`estcoap simulate` once per fleet size, one after the other. For each run it prints the
simulator's figures from its JSON report (enrollments/s, p99, its peak RSS) beside the
server's resident memory: idle before the run, its peak during the run (sampled twice a
second from /proc), and after the run, once it has come back within 10 % of idle (CoAP
keeps each exchange 247 s, RFC 7252 s4.8.2, and serve hands freed memory back with
malloc_trim every 30 s: the wait can be minutes) or --settle seconds have passed. The
server's CPU seconds per enrollment come from /proc/PID/stat.

    python bench/simulate_scale.py [--sizes 10000,100000] [--concurrency 50]
        [--processes 1] [--scheme coaps|https] [--settle 330] [--json FILE]

The 100,000-device run takes about six minutes on a 2-core machine; it is a bench, not
a test. Figures are in docs/simulate.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _serve import cpu_seconds, environment, start_serve
from cryptography.hazmat.primitives import serialization

from estcoap.ca import init_ca
from estcoap.idevid import DeviceMaker


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """The server's RSS, twice a second, while a run lasts: its peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, rss_mib(self.pid))


def simulate(url: str, opts: list[str], devices: int, extra: list[str], out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "estcoap.cli",
        "simulate",
        url,
        *opts,
        "--devices",
        str(devices),
        *extra,
        "--json",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=environment())
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"simulate failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--scheme", choices=("coaps", "https"), default="coaps")
    parser.add_argument("--settle", type=float, default=330.0, help="longest wait for idle RSS")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="simscale-") as tmp:
        work = Path(tmp)
        init_ca(work / "ca", ["127.0.0.1"])
        maker = DeviceMaker.create()
        (work / "maker.pem").write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
        (work / "maker.key").write_bytes(
            maker.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server = start_serve(
            work / "ca",
            ("coaps", "https"),
            ["--trust-clients", str(work / "maker.pem")],
            stderr=subprocess.DEVNULL,
        )
        url = server.urls[args.scheme]
        opts = [
            "--trust",
            str(work / "ca" / "ca.pem"),
            "--maker-cert",
            str(work / "maker.pem"),
            "--maker-key",
            str(work / "maker.key"),
        ]
        extra = ["--concurrency", str(args.concurrency), "--processes", str(args.processes)]
        rows = []
        try:
            deadline = time.monotonic() + 60
            while True:  # the server is up when a handful of devices get through
                try:
                    simulate(url, opts, 20, [], work / "warm.json")
                    break
                except SystemExit:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            time.sleep(2)
            idle = rss_mib(server.pid)  # after the warm-up: the code paths are loaded
            for size in sizes:
                cpu = cpu_seconds(server.pid)
                sampler = Sampler(server.pid)
                sampler.start()
                report = simulate(url, opts, size, extra, work / f"run-{size}.json")
                sampler.stop.set()
                sampler.join()
                cpu = cpu_seconds(server.pid) - cpu
                per_enrollment = 1000 * cpu / max(1, report["succeeded"])
                waited, after = 0.0, rss_mib(server.pid)
                began = time.monotonic()
                while after > idle * 1.10 and waited < args.settle:
                    time.sleep(5)
                    waited = time.monotonic() - began
                    after = rss_mib(server.pid)
                row = {
                    "devices": size,
                    "succeeded": report["succeeded"],
                    "failed": report["failed"],
                    "wall_s": report["wall_time_s"],
                    "enrollments_per_s": report["enrollments_per_second"],
                    "p50_ms": report["latency_ms"]["p50"],
                    "p99_ms": report["latency_ms"]["p99"],
                    "simulator_peak_rss_mib": report["peak_rss_mib"],
                    "server_rss_idle_mib": round(idle, 1),
                    "server_rss_peak_mib": round(max(sampler.peak, idle), 1),
                    "server_rss_after_mib": round(after, 1),
                    "server_settled_after_s": round(waited, 0),
                    "server_cpu_ms_per_enrollment": round(per_enrollment, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            server.stop()
    if len(rows) >= 2:
        small, big = rows[0], rows[-1]
        print(
            f"rate {big['enrollments_per_s']:.1f}/s at {big['devices']} vs "
            f"{small['enrollments_per_s']:.1f}/s at {small['devices']}: "
            f"{100 * (big['enrollments_per_s'] / small['enrollments_per_s'] - 1):+.1f} %; "
            f"simulator peak RSS {big['simulator_peak_rss_mib']} vs "
            f"{small['simulator_peak_rss_mib']} MiB: "
            f"{100 * (big['simulator_peak_rss_mib'] / small['simulator_peak_rss_mib'] - 1):+.1f} %"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
