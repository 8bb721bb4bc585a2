"""The CLI over EST-coaps through subprocesses: `estcoap serve --coaps --https`, the client
commands with coaps:// URLs and an IDevID as the DTLS identity, and `estcoap demo`."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.codec.names import format_name
from estcoap.idevid import DeviceMaker

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "estcoap.cli"]


def est(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=60)


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = est(*args)
    assert done.returncode == 0, done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str, status: int = 1) -> str:
    """status: 1 a failed operation, 2 a wrong command line (estcoap.cli's rule)."""
    assert done.returncode == status, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def serve(*args: str | Path) -> Iterator[dict[str, str]]:
    """`estcoap serve` on free ports; yields {"https": url, "coaps": url} from its ready lines."""
    proc = subprocess.Popen(
        [*CLI, "serve", "--https", "127.0.0.1:0", "--coaps", "127.0.0.1:0", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    urls: dict[str, str] = {}
    try:
        for _ in range(2):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line.startswith("serving EST"), line + proc.stderr.read()  # type: ignore[union-attr]
            url = line.rsplit(" ", 1)[1].strip()
            urls[url.split(":", 1)[0]] = url
        yield urls
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _key(path: Path, key) -> Path:  # type: ignore[no-untyped-def]
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_device_enrolls_and_renews_over_coaps(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    maker = DeviceMaker.create()
    idevid, idevid_key = maker.issue_idevid("cli-device")
    maker_pem = _pem(tmp_path / "maker.pem", maker.certificate)
    cert, key = _pem(tmp_path / "idevid.pem", idevid), _key(tmp_path / "idevid.key", idevid_key)
    trust = ca / "ca.pem"
    shared = tmp_path / "shared.keys"
    shared.write_text("# key id, key\n0a0b " + "11" * 16 + "\n")
    with serve(
        "--ca",
        ca,
        "--trust-clients",
        maker_pem,
        "--coap-root",
        "/est",
        "--durable-commits",
        "--shared-keys",
        shared,
    ) as urls:
        coaps = urls["coaps"]
        origin = coaps.removesuffix("/.well-known/est")
        identity = ("--trust", trust, "--cert", cert, "--cert-key", key)
        me = "serialNumber=cli-device"  # the identity of the IDevID (ca/policy.py)
        ok("cacerts", origin, *identity, "--out", tmp_path / "cas.pem")  # root found by discovery
        assert x509.load_pem_x509_certificates((tmp_path / "cas.pem").read_bytes())[0] == (
            x509.load_pem_x509_certificate(trust.read_bytes())
        )
        ok("cacerts", f"{origin}/est", *identity, "--out", tmp_path / "cas2.pem", "--der")
        assert (tmp_path / "cas2.pem").read_bytes()[:1] == b"\x30"

        device_key, device_pem = tmp_path / "device.key", tmp_path / "device.pem"
        ok(
            "enroll",
            coaps,
            *identity,
            "--key",
            device_key,
            "--subject",
            f"{me},CN=cli-device",
            "--out",
            device_pem,
        )
        issued = x509.load_pem_x509_certificate(device_pem.read_bytes())
        assert format_name(issued.subject) == "serialNumber=cli-device,CN=cli-device"
        assert (device_key.stat().st_mode & 0o777) == 0o600

        renewed_pem = tmp_path / "renewed.pem"
        ok(
            "reenroll",
            coaps,
            "--trust",
            trust,
            "--cert",
            device_pem,
            "--cert-key",
            device_key,
            "--out",
            renewed_pem,
        )
        renewed = x509.load_pem_x509_certificate(renewed_pem.read_bytes())
        assert renewed.subject == issued.subject
        assert renewed.serial_number != issued.serial_number

        ok(
            "serverkeygen",
            coaps,
            *identity,
            "--subject",
            f"{me},CN=skg",
            "--out",
            tmp_path / "s.pem",
            "--out-key",
            tmp_path / "s.key",
        )
        # the key enveloped for the request's own key (RFC 7030 s4.4.1.2), opened by the CLI
        ok(
            "serverkeygen",
            coaps,
            *identity,
            "--subject",
            f"{me},CN=skg2",
            "--out",
            tmp_path / "e.pem",
            "--out-key",
            tmp_path / "e.key",
            "--encrypted",
        )
        sealed_cert = x509.load_pem_x509_certificate((tmp_path / "e.pem").read_bytes())
        sealed_key = serialization.load_pem_private_key((tmp_path / "e.key").read_bytes(), None)
        assert sealed_cert.public_key() == sealed_key.public_key()
        # ... or with the key shared in advance (RFC 7030 s4.4.1.1)
        ok(
            "serverkeygen",
            coaps,
            *identity,
            "--subject",
            f"{me},CN=skg3",
            "--out",
            tmp_path / "k.pem",
            "--out-key",
            tmp_path / "k.key",
            "--shared-key",
            "0a0b:" + "11" * 16,
        )
        one_line_error(
            est(
                "serverkeygen",
                coaps,
                *identity,
                "--subject",
                f"{me},CN=skg4",
                "--out",
                tmp_path / "z.pem",
                "--out-key",
                tmp_path / "z.key",
                "--shared-key",
                "0a0c:" + "11" * 16,
            ),
            "serverkeygen",
            "4.00",
        )

        # an IDevID cannot re-enroll (it was not issued by this CA): one line with the code
        one_line_error(
            est("reenroll", coaps, *identity, "--out", tmp_path / "x.pem"), "reenroll", "4.03"
        )
        # the same CA also answers over HTTPS: the certificate issued over CoAPs renews there
        ok(
            "reenroll",
            urls["https"],
            "--trust",
            trust,
            "--cert",
            renewed_pem,
            "--cert-key",
            device_key,
            "--out",
            tmp_path / "https-renewed.pem",
        )


def test_one_line_errors(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    done = est("serve", "--ca", ca, "--coaps", "nonsense")
    assert done.returncode == 2  # a wrong command line, as argparse's own errors
    assert done.stderr.splitlines() == [
        "estcoap serve: --coaps: expected HOST:PORT, got 'nonsense'"
    ]
    done = est(
        "cacerts",
        "coaps://127.0.0.1:9",
        "--trust",
        ca / "ca.pem",
        "--out",
        tmp_path / "x.pem",
        "--timeout",
        "1",
    )
    one_line_error(done, "cacerts")


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = ok("demo", "--dir", tmp_path / "demo")
    assert "sren with the issued certificate" in done.stdout
    assert "-----BEGIN CERTIFICATE-----" in done.stdout
    again = est("demo", "--dir", tmp_path / "demo")
    one_line_error(again, "already holds a demo CA")


def test_coaps_on_ipv4_and_ipv6_at_once(tmp_path: Path) -> None:
    """Repeated --coaps: one DTLS transport with a UDP socket per address (issue 3)."""
    ca = tmp_path / "ca"
    ok("ca", "init", ca, "--hostname", "127.0.0.1", "--hostname", "::1")
    maker = DeviceMaker.create()
    maker_pem = _pem(tmp_path / "maker.pem", maker.certificate)
    idevid, idevid_key = maker.issue_idevid("dual-stack")
    cert, key = _pem(tmp_path / "idevid.pem", idevid), _key(tmp_path / "idevid.key", idevid_key)
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--ca",
            str(ca),
            "--trust-clients",
            str(maker_pem),
            "--coaps",
            "127.0.0.1:0",
            "--coaps",
            "[::1]:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    me = "serialNumber=dual-stack"
    try:
        urls = []
        for _ in range(2):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line.startswith("serving EST-coaps on "), line + proc.stderr.read()  # type: ignore[union-attr]
            urls.append(line.rsplit(" ", 1)[1].strip())
        assert urls[0].startswith("coaps://127.0.0.1:") and urls[1].startswith("coaps://[::1]:")
        for index, url in enumerate(urls):
            ok(
                "enroll",
                url,
                "--trust",
                ca / "ca.pem",
                "--cert",
                cert,
                "--cert-key",
                key,
                "--key",
                tmp_path / f"k{index}.key",
                "--subject",
                f"{me},CN=dual-{index}",
                "--out",
                tmp_path / f"c{index}.pem",
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_readme_walkthrough_with_cli_made_idevids(tmp_path: Path) -> None:
    """Everything from the command line, as the README walks through it."""
    ca, maker, maker_key = tmp_path / "ca", tmp_path / "maker.pem", tmp_path / "maker.key"
    idevid, idevid_key = tmp_path / "idevid.pem", tmp_path / "idevid.key"
    ok("ca", "init", ca, "--hostname", "127.0.0.1")
    ok("idevid", "maker", "--out-cert", maker, "--out-key", maker_key)
    assert (maker_key.stat().st_mode & 0o777) == 0o600
    ok(
        "idevid",
        "issue",
        "--maker-cert",
        maker,
        "--maker-key",
        maker_key,
        "--serial",
        "SN-0001",
        "--out-cert",
        idevid,
        "--out-key",
        idevid_key,
    )
    one_line_error(
        est("idevid", "maker", "--out-cert", maker, "--out-key", tmp_path / "other.key"),
        "not overwriting",
    )
    one_line_error(
        est(
            "idevid",
            "issue",
            "--maker-cert",
            maker,
            "--maker-key",
            ca / "ca.key",
            "--serial",
            "x",
            "--out-cert",
            tmp_path / "x.pem",
            "--out-key",
            tmp_path / "x.key",
        ),
        "does not belong",
    )
    with serve("--ca", ca, "--trust-clients", maker) as urls:
        ok(
            "enroll",
            urls["coaps"],
            "--trust",
            ca / "ca.pem",
            "--cert",
            idevid,
            "--cert-key",
            idevid_key,
            "--key",
            tmp_path / "device.key",
            "--subject",
            "serialNumber=SN-0001,CN=SN-0001",
            "--out",
            tmp_path / "device.pem",
        )
    issued = x509.load_pem_x509_certificate((tmp_path / "device.pem").read_bytes())
    assert format_name(issued.subject) == "serialNumber=SN-0001,CN=SN-0001"
