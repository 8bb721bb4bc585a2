"""The examples run as a user would run them: examples/server.py (a custom CA behind the
EstService interface) with examples/client_simple.py and examples/client.py as devices;
examples/coaps_gateway.py and examples/proxy.py in front of `estcoap serve`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from estcoap.idevid import DeviceMaker

pytestmark = pytest.mark.timeout(120)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _write(tmp: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tmp / f"{stem}.pem", tmp / f"{stem}.key"


def test_custom_ca_server_with_both_clients(tmp_path: Path) -> None:
    maker = DeviceMaker.create()
    (tmp_path / "maker.pem").write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    cert, key = _write(tmp_path, "idevid", *maker.issue_idevid("example-1"))
    server = subprocess.Popen(
        [
            sys.executable,
            EXAMPLES / "server.py",
            "--ca-dir",
            tmp_path / "myca",
            "--trust-clients",
            tmp_path / "maker.pem",
            "--coaps",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("serving "), line + server.stderr.read()  # type: ignore[union-attr]
        coaps_url, https_url = line.split()[1], line.split()[3]
        trust = tmp_path / "myca" / "ca.pem"
        for url, out in ((coaps_url, "dev-coaps"), (https_url, "dev-https")):
            done = subprocess.run(
                [
                    sys.executable,
                    EXAMPLES / "client_simple.py",
                    url,
                    "--trust",
                    trust,
                    "--client-cert",
                    cert,
                    "--client-key",
                    key,
                    "--subject",
                    f"CN={out}",
                    "--out",
                    tmp_path / out,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            issued = x509.load_pem_x509_certificate((tmp_path / f"{out}.pem").read_bytes())
            assert issued.subject.rfc4514_string() == f"CN={out}"
            assert issued.issuer.rfc4514_string() == "CN=My CA"
        done = subprocess.run(
            [
                sys.executable,
                EXAMPLES / "client.py",
                coaps_url,
                "--trust",
                trust,
                "--client-cert",
                cert,
                "--client-key",
                key,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for step in ("cacerts:", "csrattrs:", "enroll:", "serverkeygen:", "(renew)", "(rekey)"):
            assert step in done.stdout, done.stdout
    finally:
        server.terminate()
        server.wait(10)


def _start(argv: list, ready: str) -> tuple[subprocess.Popen, str]:  # type: ignore[type-arg]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith(ready):
        proc.kill()
        raise AssertionError(line + proc.stderr.read())  # type: ignore[union-attr]
    return proc, line


def test_gateway_and_proxy_examples_in_front_of_an_https_server(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "estcoap.cli"]
    ca = tmp_path / "ca"
    subprocess.run(
        [*cli, "ca", "init", ca, "--hostname", "127.0.0.1"], check=True, capture_output=True
    )
    subprocess.run(
        [
            *cli,
            "ca",
            "issue-ra",
            ca,
            "--out-cert",
            tmp_path / "ra.pem",
            "--out-key",
            tmp_path / "ra.key",
        ],
        check=True,
        capture_output=True,
    )
    maker = DeviceMaker.create()
    maker_pem = tmp_path / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    cert, key = _write(tmp_path, "idevid", *maker.issue_idevid("behind-gateway"))
    procs = []
    try:
        upstream, line = _start(
            [*cli, "serve", "--ca", ca, "--https", "127.0.0.1:0", "--trust-clients", maker_pem],
            "serving EST over HTTPS on ",
        )
        procs.append(upstream)
        upstream_url = line.rsplit(" ", 1)[1].strip()
        common = [
            "--upstream",
            upstream_url,
            "--upstream-trust",
            ca / "ca.pem",
            "--ra-cert",
            tmp_path / "ra.pem",
            "--ra-key",
            tmp_path / "ra.key",
            "--server-cert",
            ca / "server.pem",
            "--server-key",
            ca / "server.key",
            "--trust-clients",
            maker_pem,
        ]
        gateway, line = _start(
            [sys.executable, EXAMPLES / "coaps_gateway.py", *common, "--coaps", "127.0.0.1:0"],
            "gateway ",
        )
        procs.append(gateway)
        proxy, proxy_line = _start(
            [sys.executable, EXAMPLES / "proxy.py", *common, "--https", "127.0.0.1:0"], "proxy "
        )
        procs.append(proxy)
        # The upstream issues to an IDevID device only a subject with its serial number.
        for url, out in ((line.split()[1], "via-gateway"), (proxy_line.split()[1], "via-proxy")):
            done = subprocess.run(
                [
                    sys.executable,
                    EXAMPLES / "client_simple.py",
                    url,
                    "--trust",
                    ca / "ca.pem",
                    "--client-cert",
                    cert,
                    "--client-key",
                    key,
                    "--subject",
                    f"CN={out},serialNumber=behind-gateway",
                    "--out",
                    tmp_path / out,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            issued = x509.load_pem_x509_certificate((tmp_path / f"{out}.pem").read_bytes())
            subject = {a.oid: a.value for a in issued.subject}
            assert subject == {NameOID.COMMON_NAME: out, NameOID.SERIAL_NUMBER: "behind-gateway"}
            assert issued.issuer.rfc4514_string() == "CN=estcoap CA"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_every_example_is_run_here() -> None:
    """A new example without a run above would go stale unseen."""
    source = Path(__file__).read_text()
    missing = [p.name for p in EXAMPLES.glob("*.py") if f'EXAMPLES / "{p.name}"' not in source]
    assert not missing, f"examples not run by this test: {missing}"
