"""`--crl FILE` on serve, gateway, proxy and the client commands, through subprocesses: an
unusable CRL stops the command with one line, and a certificate its CRL revokes is
refused with one line that says so."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.ca import init_ca
from estcoap.idevid import DeviceMaker
from tests.crl_util import NOW, load_ca_key, make_crl, write_crl
from tests.interop.gateway_procs import (
    ESTCOAP,
    PROXY_READY,
    UPSTREAM_READY,
    Pki,
    gateway_args,
    make_pki,
    proxy_args,
    serving,
    upstream_args,
)

pytestmark = pytest.mark.timeout(120)
KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ESTCOAP, *map(str, args)], capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(name="pki")
def pki_fixture(tmp_path: Path) -> tuple[Pki, DeviceMaker]:
    """The interop PKI, with a maker whose key the test holds (to sign its CRLs)."""
    pki = make_pki(tmp_path)
    maker = DeviceMaker.create("revoking maker")
    pki.maker_pem.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    cert, key = maker.issue_idevid("device-1")
    pki.device_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.device_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki, maker


def revoking_crl(pki: Pki, maker: DeviceMaker) -> Path:
    device = x509.load_pem_x509_certificate(pki.device_cert.read_bytes())
    crl = make_crl(maker.certificate, maker.private_key, [(device, KEY_COMPROMISE)])
    return write_crl(pki.root / "maker.crl", crl)


def stale_crl(pki: Pki, maker: DeviceMaker) -> Path:
    crl = make_crl(
        maker.certificate,
        maker.private_key,
        this_update=NOW - datetime.timedelta(days=8),
        next_update=NOW - datetime.timedelta(days=1),
    )
    return write_crl(pki.root / "stale.crl", crl)


def enroll_args(pki: Pki, url: str) -> list[object]:
    return [
        "enroll",
        url,
        "--trust",
        pki.ca_pem,
        "--client-cert",
        pki.device_cert,
        "--client-key",
        pki.device_key,
        "--key",
        pki.root / "new.key",
        "--subject",
        "serialNumber=device-1",
        "--out",
        pki.root / "new.pem",
    ]


def test_serve_refuses_a_stale_crl_at_start(pki) -> None:  # type: ignore[no-untyped-def]
    pki, maker = pki
    done = run(
        *upstream_args(pki, "--trust-clients", pki.maker_pem, "--crl", stale_crl(pki, maker))
    )
    one_line(done, "--crl", "stale.crl", "stale", "nextUpdate")


def test_serve_refuses_revoked_idevid_over_coaps_and_proxy_over_https(pki) -> None:  # type: ignore[no-untyped-def]
    pki, maker = pki
    crl = revoking_crl(pki, maker)
    args = upstream_args(
        pki, "--coaps", "127.0.0.1:0", "--trust-clients", pki.maker_pem, "--crl", crl
    )
    with serving(args, r"serving EST-coaps on (coaps://\S+)") as server:
        line = one_line(run(*enroll_args(pki, server.url)), "4.03", "revoked (keyCompromise)")
        assert "serialNumber=device-1" in line
    with serving(upstream_args(pki), UPSTREAM_READY) as upstream:
        with serving(proxy_args(pki, upstream.url, "--crl", crl), PROXY_READY) as proxy:
            one_line(run(*enroll_args(pki, proxy.url)), "403", "revoked (keyCompromise)")


def test_gateway_refuses_a_badly_signed_crl_at_start(pki) -> None:  # type: ignore[no-untyped-def]
    pki, maker = pki
    forged = make_crl(maker.certificate, DeviceMaker.create().private_key)
    path = write_crl(pki.root / "forged.crl", forged, der=True)
    with serving(upstream_args(pki), UPSTREAM_READY) as upstream:
        done = run(*gateway_args(pki, upstream.url, "--crl", path))
    one_line(done, "--crl", "forged.crl", "bad signature")


def test_client_crl_refuses_revoked_server_in_one_line(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    paths = init_ca(ca_dir, ["127.0.0.1"])
    server_cert = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    ca_cert, ca_key = load_ca_key(ca_dir)
    crl = write_crl(
        tmp_path / "server.crl", make_crl(ca_cert, ca_key, [(server_cert, KEY_COMPROMISE)])
    )
    with serving(["serve", "--ca", ca_dir, "--https", "127.0.0.1:0"], UPSTREAM_READY) as server:
        done = run(
            "cacerts",
            server.url,
            "--trust",
            paths.ca_cert,
            "--crl",
            crl,
            "--out",
            tmp_path / "cas.pem",
        )
    line = one_line(done, "server certificate", "is revoked (keyCompromise)")
    assert "cacerts" in line
    assert not (tmp_path / "cas.pem").exists()
