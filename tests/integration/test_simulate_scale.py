"""`estcoap simulate` at scale, small: --keys-dir, --processes, scenarios, other roots.

Each test runs the CLI in a subprocess against a real server process on loopback (the
fixtures of test_simulate.py), with a few tens of devices. Speed and memory at 100,000
devices are measured by bench/simulate_scale.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization

from estcoap.ca import init_ca
from estcoap.idevid import DeviceMaker
from tests.integration.test_simulate import SERVER, Server, Setup, enrolled, simulate

# A server rooted at /est only (like libEST's CoAP server): /.well-known/est is not there.
EST_ROOT_SERVER = """
import asyncio, signal, sys
from cryptography import x509
from estcoap.ca import LocalCA
from estcoap.coap.server import start_coaps_server

async def main(ca_dir, maker_pem):
    with open(maker_pem, "rb") as fh:
        makers = x509.load_pem_x509_certificates(fh.read())
    ca = LocalCA.open(ca_dir, trust_clients=makers)
    coaps = await start_coaps_server(ca, [("127.0.0.1", 0)], cert_chain=ca.paths.server_cert,
                                     key=ca.paths.server_key,
                                     trust_anchors=ca.client_trust_anchors(),
                                     short_root="/est", well_known=False)
    print(coaps.url, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await coaps.close()
    ca.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(name="setup")
def _setup(tmp_path: Path) -> Setup:
    init_ca(tmp_path / "ca", ["127.0.0.1", "localhost"])
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
    return Setup(tmp_path, tmp_path / "ca", maker_pem, maker_key)


def _start(setup: Setup, script_text: str, name: str) -> subprocess.Popen[str]:
    script = setup.root / name
    script.write_text(script_text)
    return subprocess.Popen(
        [sys.executable, str(script), str(setup.ca_dir), str(setup.maker_pem)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(name="server")
def _server(setup: Setup) -> Iterator[Server]:
    """test_simulate's server: a LocalCA behind the coaps and https fronts, in a process."""
    process = _start(setup, SERVER, "server.py")
    try:
        assert process.stdout is not None
        coaps, https = process.stdout.readline().split()
        yield Server(process, coaps, https)
    finally:
        process.terminate()
        process.wait(10)


def report_of(setup: Setup, *args: str, name: str = "report.json") -> dict:
    path = setup.root / name
    done = simulate(*args, *setup.options(), "--json", str(path), "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", (done.stdout, done.stderr)  # a pipe: quiet
    return json.loads(path.read_text())


def ok(report: dict, devices: int) -> None:
    assert report["devices"] == devices
    assert report["succeeded"] == devices, report["failure_examples"]


@pytest.mark.timeout(120)
def test_keys_dir_is_made_once_0600_and_reused(setup: Setup, server: Server) -> None:
    keys = setup.root / "keys"
    first = report_of(setup, server.coaps, "--devices", "12", "--keys-dir", str(keys))
    ok(first, 12)
    assert first["keys"] == {"generated": 12, "loaded": 0, "saved": 12}
    files = sorted((keys / "idevid").rglob("*.pem"))
    assert len(files) == 12
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in (keys / "ldevid").rglob("*.pem"))
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    second = report_of(
        setup, server.coaps, "--devices", "12", "--keys-dir", str(keys), name="second.json"
    )
    ok(second, 12)
    assert second["keys"] == {"generated": 0, "loaded": 12, "saved": 12}
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes  # not one IDevID made again
    assert enrolled(setup) == 24


@pytest.mark.timeout(120)
def test_keys_made_ahead_in_bulk_are_what_the_run_uses(setup: Setup, server: Server) -> None:
    keys = setup.root / "keys"
    made = simulate(
        "coaps://127.0.0.1:1",
        *setup.options(),
        "--devices",
        "8",
        "--keys-dir",
        str(keys),
        "--prepare-keys",
        "--processes",
        "2",
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{keys}: 8 IDevIDs made, 0 already there\n"  # no server needed
    assert len(list((keys / "idevid").rglob("*.pem"))) == 8
    report = report_of(setup, server.coaps, "--devices", "8", "--keys-dir", str(keys))
    ok(report, 8)
    assert report["keys"] == {"generated": 0, "loaded": 8, "saved": 8}


@pytest.mark.timeout(120)
def test_keys_dir_of_another_maker_is_refused(setup: Setup, server: Server) -> None:
    keys = setup.root / "keys"
    keys.mkdir(mode=0o700)
    (keys / "maker.pem").write_text("another maker's certificate\n")
    done = simulate(server.coaps, *setup.options(), "--devices", "2", "--keys-dir", str(keys))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "another maker" in done.stderr, done.stderr


@pytest.mark.timeout(120)
def test_two_processes_merge_into_one_report(setup: Setup, server: Server) -> None:
    report = report_of(
        setup, server.coaps, "--devices", "21", "--concurrency", "6", "--processes", "2"
    )
    ok(report, 21)
    assert report["settings"]["processes"] == 2
    assert report["devices_by_scheme"] == {"coaps": 21}
    assert sum(row["enrollments"] for row in report["series"]) == 21
    assert report["latency_ms"]["min"] <= report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert report["bytes_per_enrollment"]["up"] > 0 and report["datagrams_total"]["up"] > 0
    assert enrolled(setup) == 21


@pytest.mark.timeout(150)
def test_renewal_storm_after_a_first_run(setup: Setup, server: Server) -> None:
    keys = setup.root / "keys"
    ok(report_of(setup, server.coaps, "--devices", "10", "--keys-dir", str(keys)), 10)
    before = {p: p.read_bytes() for p in (keys / "ldevid").rglob("*.pem")}
    assert len(before) == 10

    storm = report_of(
        setup,
        server.coaps,
        "--devices",
        "10",
        "--concurrency",
        "10",
        "--keys-dir",
        str(keys),
        "--renew",
        name="storm.json",
    )
    ok(storm, 10)
    assert storm["settings"]["scenario"] == "renewal-storm"
    assert storm["keys"]["generated"] == 0 and storm["keys"]["saved"] == 10
    after = {p: p.read_bytes() for p in (keys / "ldevid").rglob("*.pem")}
    assert set(after) == set(before) and all(after[p] != before[p] for p in before)
    assert enrolled(setup) == 10  # sren is recorded as a re-enrollment, not an enroll

    # Devices with no LDevID saved (beyond the first run's ten) fail, counted by reason.
    more = report_of(
        setup, server.coaps, "--devices", "12", "--keys-dir", str(keys), "--renew", name="more.json"
    )
    assert more["succeeded"] == 10 and more["failed"] == {"no-ldevid": 2}


@pytest.mark.timeout(120)
def test_a_steady_rate_starts_devices_on_a_clock(setup: Setup, server: Server) -> None:
    report = report_of(setup, server.coaps, "--devices", "12", "--rate", "6/s")
    ok(report, 12)
    assert report["settings"]["rate"] == 6.0
    assert report["start_lateness_ms"] is not None
    assert report["wall_time_s"] >= 11 / 6  # the last slot is at 11/6 s
    started = [row["started"] for row in report["series"]]
    assert sum(started) == 12 and max(started) <= 7  # about six a second, never all at once


@pytest.mark.timeout(150)
def test_find_rate_steps_up_and_stops_at_the_bound(setup: Setup, server: Server) -> None:
    # A bound no real enrollment meets: the first step is not sustained, and the search
    # stops there with no rate to report.
    report = report_of(
        setup, server.coaps, "--find-rate", "--rate", "4", "--step-seconds", "1", "--p99-max", "1ms"
    )
    found = report["find_rate"]
    assert found["highest_sustained_rate"] is None
    assert [step["sustained"] for step in found["steps"]] == [False]
    # A generous bound: steps go up by the growth factor until the time budget ends them.
    report = report_of(
        setup,
        server.coaps,
        "--find-rate",
        "--rate",
        "2",
        "--step-seconds",
        "1",
        "--p99-max",
        "20000",
        "--rate-growth",
        "2",
        "--max-time",
        "4",
        name="up.json",
    )
    steps = report["find_rate"]["steps"]
    assert len(steps) >= 2 and steps[1]["rate"] == 2 * steps[0]["rate"]
    assert report["find_rate"]["highest_sustained_rate"] == steps[-1]["rate"]
    assert report["devices"] == sum(step["devices"] for step in steps)


@pytest.mark.timeout(150)
def test_a_mix_of_coaps_and_https_devices(setup: Setup, server: Server) -> None:
    report = report_of(
        setup,
        server.coaps,
        server.https,
        "--devices",
        "20",
        "--mix",
        "coaps=70,https=30",
        "--concurrency",
        "10",
    )
    ok(report, 20)
    assert report["settings"]["mix"] == {"coaps": 70, "https": 30}
    assert report["devices_by_scheme"] == {"coaps": 14, "https": 6}
    # 14 coaps devices sent datagrams (about 8 each way); the https ones count TLS reads.
    assert report["datagrams_total"]["up"] >= 14 * 4
    assert enrolled(setup) == 20


def test_mix_needs_two_urls_and_weights_of_100(setup: Setup) -> None:
    for args, says in (
        (["coaps://127.0.0.1:1", "--mix", "coaps=70,https=30"], "needs two URLs"),
        (["coaps://127.0.0.1:1", "--mix", "coaps=70,https=20"], "add up to 100"),
        (["coaps://127.0.0.1:1", "https://127.0.0.1:2"], "second URL is for --mix"),
        (["coaps://127.0.0.1:1", "--renew"], "--renew needs the --keys-dir"),
        (["coaps://127.0.0.1:1/est", "--est-root", "/est"], "not both"),
        (["coaps://127.0.0.1:1", "--subject-template", "CN={name}"], "only {serial}"),
    ):
        done = simulate(*args, *setup.options())
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and says in done.stderr, (args, done.stderr)


@pytest.fixture
def est_root_server(setup: Setup) -> Iterator[str]:
    process = _start(setup, EST_ROOT_SERVER, "est_root_server.py")
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split()[0]
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.timeout(120)
def test_est_root_reaches_a_server_mounted_at_est(setup: Setup, est_root_server: str) -> None:
    # The https front has no custom root (serve --coap-root is coaps only): coaps here.
    parts = urlsplit(est_root_server)
    base = f"{parts.scheme}://{parts.netloc}"
    report = report_of(
        setup,
        base,
        "--devices",
        "6",
        "--est-root",
        "/est",
        "--content-format",
        "287",
        "--subject-template",
        "serialNumber={serial}",
    )
    ok(report, 6)
    assert report["settings"]["est_root"] == "/est"
    # Without the root and without discovery the devices ask /.well-known/est: not there.
    missing = setup.root / "missing.json"
    done = simulate(
        base, *setup.options(), "--devices", "2", "--no-discovery", "--json", str(missing)
    )
    assert done.returncode == 1 and "all 2 devices failed" in done.stderr, done.stderr
    assert json.loads(missing.read_text())["failed"] == {"rejected-4.04": 2}


@pytest.mark.timeout(120)
def test_progress_shows_on_a_terminal_only(setup: Setup, server: Server) -> None:
    # A pipe (report_of above checks stderr is empty); a pty: the bar is drawn on it.
    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "estcoap.cli",
            "simulate",
            server.coaps,
            *setup.options(),
            "--devices",
            "4",
            "--timeout",
            "20",
        ],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    os.close(primary)
    assert process.wait(30) == 0, seen
    text = seen.decode(errors="replace")
    assert "[" in text and "4/4" in text and "failed 0" in text, text  # the progress line
    assert "4/4 devices provisioned" in text, text  # and the summary
