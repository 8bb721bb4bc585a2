"""`estcoap simulate` end to end: a real server process, the CLI in another, real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from estcoap.ca import CaPaths, init_ca
from estcoap.idevid import DeviceMaker
from tests.conftest import require
from tests.polling import wait_until

# The server a deployment would run: a LocalCA behind the coaps and https fronts.
SERVER = """
import asyncio, signal, sys
from cryptography import x509
from estcoap.ca import LocalCA
from estcoap.coap.server import start_coaps_server
from estcoap.https.server import start_https_server

async def main(ca_dir, maker_pem):
    with open(maker_pem, "rb") as fh:
        makers = x509.load_pem_x509_certificates(fh.read())
    ca = LocalCA.open(ca_dir, trust_clients=makers)
    anchors = ca.client_trust_anchors()
    coaps = await start_coaps_server(ca, [("127.0.0.1", 0)], cert_chain=ca.paths.server_cert,
                                     key=ca.paths.server_key, trust_anchors=anchors)
    https = await start_https_server(ca, "127.0.0.1", 0, cert_chain=ca.paths.server_cert,
                                     key=ca.paths.server_key, client_trust=anchors)
    print(coaps.url, https.url, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await coaps.close()
    await https.close()
    ca.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@dataclass
class Setup:
    root: Path
    ca_dir: Path
    maker_pem: Path
    maker_key: Path

    def options(self) -> list[str]:
        return [
            "--trust",
            str(self.ca_dir / "ca.pem"),
            "--idevid-ca",
            str(self.maker_pem),
            "--idevid-ca-key",
            str(self.maker_key),
        ]


@dataclass
class Server:
    process: subprocess.Popen[str]
    coaps: str
    https: str


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    ca_dir = tmp_path / "ca"
    init_ca(ca_dir, ["127.0.0.1", "localhost"])
    maker = DeviceMaker.create()
    maker_pem, maker_key = tmp_path / "maker.pem", tmp_path / "maker.key"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    maker_key.write_bytes(
        maker.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Setup(tmp_path, ca_dir, maker_pem, maker_key)


@pytest.fixture
def server(setup: Setup) -> Iterator[Server]:
    script = setup.root / "server.py"
    script.write_text(SERVER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(setup.ca_dir), str(setup.maker_pem)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        coaps, https = process.stdout.readline().split()
        yield Server(process, coaps, https)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)


def simulate(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "estcoap.cli", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def enrolled(setup: Setup) -> int:
    """Certificates the running server has issued on enroll so far (read-only look)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{CaPaths.of(setup.ca_dir).store}?mode=ro", uri=True)
    ) as db:
        return db.execute("SELECT count(*) FROM issued WHERE operation = 'enroll'").fetchone()[0]


def issued_by_simulation(setup: Setup) -> int:
    from estcoap.ca import LocalCA

    ca = LocalCA.open(setup.ca_dir)
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "estcoap.cli", "ca", "issued", "--ca", str(setup.ca_dir)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        ca.close()
    return sum(1 for line in listing.splitlines() if "CN=sim-" in line)


@pytest.mark.timeout(180)
def test_fifty_devices_at_twenty_percent_loss_all_succeed(setup: Setup, server: Server) -> None:
    report_path = setup.root / "report.json"
    # On loopback, CoAP's ACK_TIMEOUT 0.25 s instead of the RFC's 2 s: every CoAP
    # retransmission path still runs, without waiting tens of seconds for the unluckiest
    # device. The DTLS handshake keeps OpenSSL's timer (1 s, doubled); a handshake is
    # bounded at 9 s (0.9 of --timeout), about when the server forgets a half-done one
    # (10 s), and then restarted on a new session (--retries) rather than waited out.
    done = simulate(
        server.coaps,
        *setup.options(),
        "--devices",
        "50",
        "--concurrency",
        "50",
        "--loss",
        "0.2",
        "--seed",
        "7",
        "--ack-timeout",
        "0.25",
        "--timeout",
        "10",
        "--retries",
        "3",
        "--json",
        str(report_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # not a terminal, report file given: quiet
    report = json.loads(report_path.read_text())
    assert report["succeeded"] == 50 and report["failed"] == {}, report["failure_examples"]
    # The server really issued them. A device whose 2.04 was lost for good repeats the
    # step on a new session (--retries), which may get it a second certificate.
    issued = issued_by_simulation(setup)
    assert 50 <= issued <= 50 + report["device_retries"]["total"], report["device_retries"]
    # 20% of datagrams were dropped in each direction and the devices recovered by retrying
    applied = report["impairment_applied"]["dropped"]
    sent = report["datagrams_total"]
    assert 0.1 < applied["up"] / sent["up"] < 0.3 and 0.1 < applied["down"] / sent["down"] < 0.3
    assert report["retransmissions"]["up"] >= applied["down"] * 0.5
    per = report["bytes_per_enrollment"]
    # a mutual DTLS handshake alone moves more than a kilobyte each way
    assert 1500 < per["up"] < 20_000 and 2000 < per["down"] < 30_000
    assert per["total"] == pytest.approx(per["up"] + per["down"], abs=0.2)
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["max"] / 1000 <= report["wall_time_s"]
    assert sum(n for _, n in report["throughput_per_second"]) == 50
    assert report["enrollments_per_second"] == pytest.approx(50 / report["wall_time_s"], rel=0.01)
    assert report["peak_rss_mib"] > 10
    # a step that timed out 4 times is repeated on a fresh session, as a device would
    assert set(report["device_retries"]["by_reason"]) <= {"timeout", "dtls-handshake-timeout"}
    assert report["settings"]["loss"] == 0.2 and report["settings"]["concurrency"] == 50
    assert report["settings"]["ack_timeout_s"] == 0.25


@pytest.mark.timeout(120)
def test_duplication_reordering_and_delay_are_applied(setup: Setup, server: Server) -> None:
    require("matplotlib", "the --plot figure needs matplotlib (pip install 'estcoap[plot]')")
    report_path, plot_path = setup.root / "report.json", setup.root / "plot.png"
    done = simulate(
        server.coaps,
        *setup.options(),
        "--devices",
        "10",
        "--concurrency",
        "10",
        "--duplicate",
        "0.2",
        "--reorder",
        "0.2",
        "--delay",
        "30",
        "--reenroll",
        "--block-size",
        "256",
        "--seed",
        "3",
        "--json",
        str(report_path),
        "--plot",
        str(plot_path),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["succeeded"] == 10, report["failure_examples"]
    applied = report["impairment_applied"]
    assert sum(applied["duplicated"].values()) > 0 and sum(applied["reordered"].values()) > 0
    assert sum(applied["dropped"].values()) == 0
    # every device needs at least 3 handshake round trips x 2 sessions plus 4 exchanges:
    # 10 round trips of 60 ms
    assert report["latency_ms"]["min"] >= 600
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_server_stopped_mid_run_gives_counted_failures(setup: Setup, server: Server) -> None:
    report_path = setup.root / "report.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "estcoap.cli",
            "simulate",
            server.coaps,
            *setup.options(),
            "--devices",
            "20",
            "--concurrency",
            "8",
            "--delay",
            "40",
            "--timeout",
            "1",
            "--retries",
            "1",
            "--json",
            str(report_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # some devices are provisioned, the rest in flight or not started
        wait_until(lambda: enrolled(setup) >= 3, timeout=60, what="three enrollments")
        server.process.send_signal(signal.SIGKILL)  # a crash: no goodbye to anyone
        started = time.monotonic()
        out, err = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert time.monotonic() - started < 60  # devices give up on their own timers
    report = json.loads(report_path.read_text())
    assert 0 < report["succeeded"] < 20
    assert report["failed_total"] == 20 - report["succeeded"]
    assert sum(report["failed"].values()) == report["failed_total"]
    # in-flight exchanges time out; devices starting later never complete a handshake
    assert set(report["failed"]) <= {"timeout", "dtls-handshake-timeout"}, report["failed"]
    assert report["failed"].get("dtls-handshake-timeout", 0) > 0
    assert all(report["failure_examples"].values())
    assert report["device_retries"]["total"] > 0  # each gave up only after its retry


@pytest.mark.timeout(120)
def test_https_fleet_with_reenroll(setup: Setup, server: Server) -> None:
    report_path = setup.root / "report.json"
    done = simulate(
        server.https,
        *setup.options(),
        "--devices",
        "20",
        "--concurrency",
        "10",
        "--reenroll",
        "--json",
        str(report_path),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["succeeded"] == 20, report["failure_examples"]
    assert issued_by_simulation(setup) == 40  # simpleenroll and simplereenroll per device
    per = report["bytes_per_enrollment"]
    assert per["up"] > 1000 and per["down"] > 1000  # TLS handshakes with client certificates
    assert report["datagrams_total"] is None
    assert "not observable" in report["retransmissions"]["method"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "abc"], "argument --loss: expected a probability in [0, 1), got 'abc'"),
        (["--loss", "1.5"], "argument --loss: expected a probability"),
        (["--devices", "0"], "argument --devices: expected a positive integer"),
        (["--concurrency", "-3"], "argument --concurrency: expected a positive integer"),
        (["--block-size", "100"], "argument --block-size: expected one of 16, 32"),
        (["--delay", "soon"], "argument --delay: expected milliseconds"),
        (["--timeout", "0"], "argument --timeout: expected seconds > 0"),
    ],
)
def test_malformed_option_gives_one_line(setup: Setup, args: list[str], message: str) -> None:
    done = simulate("coaps://127.0.0.1:5684", *setup.options(), *args, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(f"estcoap simulate: {message}")


def _other_key(setup: Setup) -> str:
    """A key that does not belong to the maker certificate."""
    other = DeviceMaker.create().private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (setup.root / "other.key").write_bytes(other)
    return str(setup.root / "other.key")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            lambda s: [
                "coaps://127.0.0.1:5684",
                "--trust",
                str(s.root / "missing.pem"),
                "--idevid-ca",
                str(s.maker_pem),
                "--idevid-ca-key",
                str(s.maker_key),
            ],
            "--trust",
        ),
        (
            lambda s: [
                "coaps://127.0.0.1:5684",
                *s.options()[:4],
                "--idevid-ca-key",
                _other_key(s),
            ],
            "does not belong to the certificate in",
        ),
        (lambda s: ["http://127.0.0.1:80", *s.options()], "not a coaps:// or https:// URL"),
        (
            lambda s: ["https://127.0.0.1:443", *s.options(), "--loss", "0.1"],
            "apply to coaps://",
        ),
        (lambda s: ["coaps://127.0.0.1:5684", *s.options()[:4]], "the following arguments are"),
    ],
    ids=["missing-trust", "key-of-another", "http-url", "loss-over-https", "no-maker-key"],
)
def test_unusable_inputs_give_one_line(
    setup: Setup, args: Callable[[Setup], list[str]], fragment: str
) -> None:
    done = simulate(*args(setup), timeout=30)
    assert done.returncode in (1, 2), done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("estcoap simulate: "), done.stderr
    assert fragment in lines[0]
