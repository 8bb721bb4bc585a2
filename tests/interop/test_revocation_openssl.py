"""The CA's revocation data as independent peers see it: `openssl verify -crl_check` on the
CRL that `ca crl` writes and on the one `serve --crl-http` serves (fetched with curl), and
`openssl ocsp` against `serve --ocsp`, answered by the delegated responder and by the CA.
Real processes on loopback; the CLI revokes while serve runs, as an operator would."""

from __future__ import annotations

import base64
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import require

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

CLI = [sys.executable, "-m", "estcoap.cli"]
OPENSSL = require("openssl", "openssl verifies CRLs and asks OCSP")
CURL = require("curl", "curl fetches the served CRL")
READY = "serving EST over HTTPS on "


def run(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def est(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(*CLI, *args, check=True)


@contextlib.contextmanager
def serve(ca: Path, *args: str) -> Iterator[dict[str, str]]:
    """serve with the CRL and OCSP on one plain HTTP listener; the URLs it printed."""
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--ca",
            str(ca),
            "--https",
            "127.0.0.1:0",
            "--crl-http",
            "127.0.0.1:0",
            "--ocsp",
            "127.0.0.1:0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        urls = {}
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("serving the CRL on "):
                urls["crl"] = line.split()[4]
            elif line.startswith("serving OCSP on "):
                urls["ocsp"], urls["ocsp_signer"] = line.split()[3], line
            elif line.startswith(READY):
                break
        else:
            raise AssertionError(proc.stderr.read())  # type: ignore[union-attr]
        yield urls
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A CA with a delegated OCSP responder, an RA certificate (ra.pem) and the server's."""
    est("ca", "init", tmp_path / "ca", "--hostname", "127.0.0.1", "--ocsp-responder")
    est(
        "ca",
        "issue-ra",
        tmp_path / "ca",
        "--out-cert",
        tmp_path / "ra.pem",
        "--out-key",
        tmp_path / "ra.key",
    )
    for chain, leaf in (("ra.pem", "leaf.pem"), ("ca/server.pem", "server-leaf.pem")):
        first = x509.load_pem_x509_certificates((tmp_path / chain).read_bytes())[0]
        (tmp_path / leaf).write_bytes(first.public_bytes(Encoding.PEM))
    return tmp_path / "ca"


def serial_of(path: Path) -> str:
    return format(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, "x")


def verify(ca: Path, crl_pem: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return run(OPENSSL, "verify", "-crl_check", "-CAfile", ca / "ca.pem", "-CRLfile", crl_pem, cert)


def assert_revoked(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0, done.stdout
    assert "certificate revoked" in done.stdout + done.stderr


def assert_ok(done: subprocess.CompletedProcess[str], cert: Path) -> None:
    assert done.returncode == 0 and f"{cert}: OK" in done.stdout, done.stdout + done.stderr


def crl_text(crl_pem: Path) -> str:
    return run(OPENSSL, "crl", "-in", crl_pem, "-noout", "-text", check=True).stdout


def crl_number(text: str) -> int:
    found = re.search(r"X509v3 CRL Number: *\n\s*(\d+)", text)
    assert found, text
    return int(found.group(1))


def fetch_crl(url: str, tmp_path: Path, name: str) -> Path:
    der = tmp_path / f"{name}.der"
    done = run(CURL, "-sS", "-f", "-o", der, "-w", "%{content_type}", url, check=True)
    assert done.stdout == "application/pkix-crl"
    pem = tmp_path / f"{name}.pem"
    run(OPENSSL, "crl", "-inform", "DER", "-in", der, "-out", pem, check=True)
    return pem


def test_crl_files_written_and_served(ca: Path, tmp_path: Path) -> None:
    leaf, server = tmp_path / "leaf.pem", tmp_path / "server-leaf.pem"
    est(
        "ca",
        "revoke",
        ca,
        serial_of(leaf),
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        "2025-03-01T12:00:00Z",
    )

    est("ca", "crl", ca, "--out", tmp_path / "one.pem")
    assert_revoked(verify(ca, tmp_path / "one.pem", leaf))
    assert_ok(verify(ca, tmp_path / "one.pem", server), server)
    text = crl_text(tmp_path / "one.pem")
    assert "Key Compromise" in text
    assert "Invalidity Date" in text and "Mar  1 12:00:00 2025 GMT" in text
    assert "X509v3 Authority Key Identifier" in text
    est("ca", "crl", ca, "--out", tmp_path / "two.pem")
    assert crl_number(crl_text(tmp_path / "two.pem")) == crl_number(text) + 1

    with serve(ca) as urls:
        served = fetch_crl(urls["crl"], tmp_path, "served")
        assert_revoked(verify(ca, served, leaf))
        assert_ok(verify(ca, served, server), server)
        first = crl_number(crl_text(served))
        assert first > crl_number(text) + 1  # one counter for both: numbers keep increasing

        # Revoked while serve runs (another process): the served CRL follows.
        est("ca", "revoke", ca, serial_of(server), "--reason", "superseded")
        deadline = time.monotonic() + 60
        while crl_number(crl_text(newer := fetch_crl(urls["crl"], tmp_path, "newer"))) == first:
            assert time.monotonic() < deadline, "the served CRL was not re-signed"
            time.sleep(0.5)
        assert_revoked(verify(ca, newer, server))
        assert "Superseded" in crl_text(newer)


def ocsp(ca: Path, url: str, *args: str | Path) -> str:
    done = run(
        OPENSSL,
        "ocsp",
        "-issuer",
        ca / "ca.pem",
        "-url",
        url,
        "-CAfile",
        ca / "ca.pem",
        "-resp_text",
        *args,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_ocsp_answers_by_the_delegated_responder_and_by_the_ca(ca: Path, tmp_path: Path) -> None:
    leaf, server = tmp_path / "leaf.pem", tmp_path / "server-leaf.pem"
    est("ca", "revoke", ca, serial_of(leaf), "--reason", "keyCompromise")
    responder = x509.load_pem_x509_certificate((ca / "ocsp.pem").read_bytes())

    with serve(ca) as urls:
        assert "delegated responder" in urls["ocsp_signer"]
        url = urls["ocsp"]
        for nonce in ((), ("-no_nonce",)):
            out = ocsp(ca, url, "-cert", server, *nonce)
            assert f"{server}: good" in out and "Response verify OK" in out
            assert ("WARNING: no nonce" not in out) and (("Nonce" in out) == (not nonce))
            # The delegated responder's certificate comes with the answer.
            assert "Subject: CN=estcoap OCSP responder" in out
            assert format(responder.serial_number, "x") in out.replace(":", "").lower()
            out = ocsp(ca, url, "-cert", leaf, *nonce)
            assert f"{leaf}: revoked" in out and "Reason: keyCompromise" in out
            assert "Revocation Time:" in out and "Response verify OK" in out
            out = ocsp(ca, url, "-serial", "0x1234", *nonce)
            assert "0x1234: unknown" in out and "Response verify OK" in out

        # GET, the request in the URL (RFC 6960 A.1), fetched with curl.
        run(
            OPENSSL,
            "ocsp",
            "-issuer",
            ca / "ca.pem",
            "-cert",
            server,
            "-no_nonce",
            "-reqout",
            tmp_path / "req.der",
            check=True,
        )
        encoded = base64.b64encode((tmp_path / "req.der").read_bytes()).decode()
        get_url = f"{url.rstrip('/')}/{encoded.replace('+', '%2B').replace('/', '%2F')}"
        run(CURL, "-sS", "-f", "-o", tmp_path / "get.der", get_url, check=True)
        out = run(
            OPENSSL,
            "ocsp",
            "-respin",
            tmp_path / "get.der",
            "-resp_text",
            "-CAfile",
            ca / "ca.pem",
            "-issuer",
            ca / "ca.pem",
            "-cert",
            server,
            check=True,
        )
        assert f"{server}: good" in out.stdout

        # A malformed POST: malformedRequest, and the responder still answers after it.
        run(
            CURL,
            "-sS",
            "-f",
            "-o",
            tmp_path / "bad.der",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            "not DER",
            url,
            check=True,
        )
        out = run(OPENSSL, "ocsp", "-respin", tmp_path / "bad.der", "-resp_text", "-noverify")
        assert "malformedrequest" in (out.stdout + out.stderr).lower()
        assert f"{server}: good" in ocsp(ca, url, "-cert", server)

        # Another CA's certificate: this responder is not authoritative for it.
        est("ca", "init", tmp_path / "other", "--hostname", "127.0.0.1")
        other = tmp_path / "other"
        done = run(
            OPENSSL,
            "ocsp",
            "-issuer",
            other / "ca.pem",
            "-cert",
            other / "server.pem",
            "-url",
            url,
            "-CAfile",
            other / "ca.pem",
        )
        assert "unauthorized" in (done.stdout + done.stderr).lower()

    with serve(ca, "--ocsp-signer", "ca") as urls:
        assert "the CA CN=estcoap CA" in urls["ocsp_signer"]
        out = ocsp(ca, urls["ocsp"], "-cert", leaf)
        assert f"{leaf}: revoked" in out and "Response verify OK" in out
        assert "Reason: keyCompromise" in out
        assert "estcoap OCSP responder" not in out  # signed by the CA: no certificate sent
