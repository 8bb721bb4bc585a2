"""The HTTPS proxy (RA) driven by curl: curl -> `estcoap proxy` -> `estcoap serve --https`,
each a separate process; openssl makes CSRs and reads the answers."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.codec import pkcs7
from estcoap.codec.multipart import decode_multipart_mixed
from estcoap.codec.names import parse_name
from estcoap.codec.pkcs10 import build_csr
from tests.conftest import require
from tests.interop.gateway_procs import Pki, cli, make_pki, relay_chain

CURL = shutil.which("curl")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(90),
]
require("curl", "the proxy with curl as the client")
USER = "alice:wonderland"


def curl(url: str, out: Path, *args: object) -> tuple[int, dict[str, str]]:
    """(status, lower-cased response headers); the body goes to `out`."""
    headers = out.with_suffix(".headers")
    done = subprocess.run(
        [CURL, "-sS", "-o", out, "-D", headers, *map(str, args), url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = headers.read_text().splitlines()
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return status, fields


def post_csr(
    pki: Pki, url: str, out: Path, csr: Path, *auth: object, media_type: str = "application/pkcs10"
) -> tuple[int, dict[str, str]]:
    """curl POSTs the CSR file (base64) to url, trusting the CA, with auth's options."""
    return curl(
        url,
        out,
        "--cacert",
        pki.ca_pem,
        *auth,
        "-H",
        f"Content-Type: {media_type}",
        "--data-binary",
        f"@{csr}",
    )


def csr_file(path: Path, subject: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(base64.encodebytes(build_csr(key, parse_name(subject))))
    return path


def subjects(body: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in pkcs7.decode_certs_only(base64.b64decode(body))]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("proxy-pki"))


@pytest.fixture(scope="module")
def proxy_url(pki: Pki) -> Iterator[str]:
    with relay_chain("proxy", pki, front=("--user", USER)) as (_, proxy):
        yield proxy.url


def test_cacerts_and_csrattrs(pki: Pki, proxy_url: str, tmp_path: Path) -> None:
    status, headers = curl(f"{proxy_url}/cacerts", tmp_path / "cacerts", "--cacert", pki.ca_pem)
    assert status == 200 and headers["content-type"].startswith("application/pkcs7-mime")
    assert subjects((tmp_path / "cacerts").read_bytes()) == ["CN=estcoap CA"]
    status, headers = curl(
        f"{proxy_url}/csrattrs", tmp_path / "att", "--cacert", pki.ca_pem, "-u", USER
    )
    assert status == 200 and headers["content-type"] == "application/csrattrs"


def test_simpleenroll_with_basic_and_with_a_device_certificate(
    pki: Pki, proxy_url: str, tmp_path: Path
) -> None:
    csr = csr_file(tmp_path / "a.b64", "CN=curl-basic")
    status, headers = post_csr(
        pki, f"{proxy_url}/simpleenroll", tmp_path / "a.out", csr, "-u", USER
    )
    assert status == 200, (tmp_path / "a.out").read_text()
    assert headers["content-transfer-encoding"] == "base64"
    body = (tmp_path / "a.out").read_bytes()
    assert all(len(line) <= 64 for line in body.splitlines())
    assert "CN=curl-basic" in subjects(body)

    # the device is held to its IDevID's identity by the upstream CA (EST-Requester)
    csr = csr_file(tmp_path / "b.b64", "serialNumber=device-1,CN=curl-idevid")
    device = ("--cert", pki.device_cert, "--key", pki.device_key)
    status, _ = post_csr(pki, f"{proxy_url}/simpleenroll", tmp_path / "b.out", csr, *device)
    assert status == 200
    assert "2.5.4.5=device-1,CN=curl-idevid" in subjects((tmp_path / "b.out").read_bytes())

    # The upstream issued both to the RA on behalf of the devices.
    listing = cli("ca", "issued", "--ca", pki.ca_dir).stdout
    for name in ("CN=curl-basic", "CN=curl-idevid"):
        row = next(line for line in listing.splitlines() if name in line)
        assert "CN=test RA" in row


def test_refusals_keep_their_meaning(pki: Pki, proxy_url: str, tmp_path: Path) -> None:
    csr = csr_file(tmp_path / "c.b64", "CN=nobody")
    # No credentials: the proxy itself says 401.
    status, headers = post_csr(pki, f"{proxy_url}/simpleenroll", tmp_path / "c.out", csr)
    assert status == 401 and "www-authenticate" in headers
    # Wrong media type: 415.
    status, _ = post_csr(
        pki,
        f"{proxy_url}/simpleenroll",
        tmp_path / "d.out",
        csr,
        "-u",
        USER,
        media_type="text/plain",
    )
    assert status == 415
    # A CSR the upstream CA refuses (CA:TRUE asked for): its 403 comes through as 403.
    key = ec.generate_private_key(ec.SECP256R1())
    bad = build_csr(
        key,
        x509.Name.from_rfc4514_string("CN=wants-ca"),
        extensions=x509.Extensions(
            [x509.Extension(x509.BasicConstraints.oid, True, x509.BasicConstraints(True, None))]
        ),
    )
    (tmp_path / "bad.b64").write_bytes(base64.encodebytes(bad))
    status, _ = post_csr(
        pki, f"{proxy_url}/simpleenroll", tmp_path / "e.out", tmp_path / "bad.b64", "-u", USER
    )
    assert status == 403 and b"upstream 403" in (tmp_path / "e.out").read_bytes()


def test_serverkeygen_through_the_proxy(pki: Pki, proxy_url: str, tmp_path: Path) -> None:
    csr = csr_file(tmp_path / "k.b64", "CN=curl-keygen")
    status, headers = post_csr(
        pki, f"{proxy_url}/serverkeygen", tmp_path / "k.out", csr, "-u", USER
    )
    assert status == 200 and headers["content-type"].startswith("multipart/mixed")
    parts = dict(decode_multipart_mixed((tmp_path / "k.out").read_bytes(), headers["content-type"]))
    assert "application/pkcs8" in parts
    certs = pkcs7.decode_certs_only(parts["application/pkcs7-mime; smime-type=certs-only"])
    assert any(c.subject.rfc4514_string() == "CN=curl-keygen" for c in certs)


def test_pending_202_and_upstream_down(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "manual")
    manual = ("--approval", "manual", "--retry-after", "5")
    with relay_chain("proxy", pki, upstream=manual, front=("--user", USER)) as (upstream, proxy):
        csr = csr_file(tmp_path / "p.b64", "CN=curl-waits")

        def send(out: str) -> tuple[int, dict[str, str]]:
            return post_csr(pki, f"{proxy.url}/simpleenroll", tmp_path / out, csr, "-u", USER)

        status, headers = send("p.out")
        assert status == 202 and headers["retry-after"] == "5"
        (request_id,) = [
            line.split()[0]
            for line in cli("pending", "list", "--ca", pki.ca_dir).stdout.splitlines()
            if "CN=curl-waits" in line
        ]
        cli("pending", "approve", request_id, "--ca", pki.ca_dir)
        status, _ = send("p2.out")
        assert status == 200 and "CN=curl-waits" in subjects((tmp_path / "p2.out").read_bytes())
        # The upstream goes away: the proxy answers 502 at once, with a reason.
        upstream.process.terminate()
        upstream.process.wait(5)
        started = time.monotonic()
        status, _ = send("p3.out")
        elapsed = time.monotonic() - started
    assert status == 502 and elapsed < 1.0
    assert b"upstream unavailable" in (tmp_path / "p3.out").read_bytes()
