"""The CLI end to end through subprocesses: `estcoap serve --https` and the client commands."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "estcoap.cli"]
READY = "serving EST over HTTPS on "


def est(*args: str | Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=60, input=input
    )


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = est(*args)
    assert done.returncode == 0, done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess[str], prefix: str, status: int = 1) -> str:
    """status: 1 a failed operation, 2 a wrong command line (estcoap.cli's rule)."""
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


@contextlib.contextmanager
def serve(*args: str | Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--https", "127.0.0.1:0", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(READY), line + proc.stderr.read()  # type: ignore[union-attr]
        yield line[len(READY) :].strip(), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    ok("ca", "init", tmp_path / "ca", "--hostname", "127.0.0.1")
    return tmp_path / "ca"


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_client_commands_end_to_end(ca: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with serve("--ca", ca, "--user", "alice:pw") as (url, proc):
        done = ok("cacerts", url, "--bootstrap", "--out", "boot.pem")
        fingerprint = _cert(ca / "ca.pem").fingerprint(hashes.SHA256())
        assert fingerprint.hex() in done.stderr
        assert _cert(Path("boot.pem")) == _cert(ca / "ca.pem")
        ok("cacerts", url, "--bootstrap", "--fingerprint", fingerprint.hex(":"), "--out", "b2.pem")

        done = ok("csrattrs", url, "--trust", "boot.pem", "--user", "alice:pw")
        assert "ecdsa-with-SHA256" in done.stdout and "key: ec secp256r1" in done.stdout

        auth = ["--trust", "boot.pem", "--user", "alice:pw"]
        sans = ["--san", "DNS:dev1.example", "--san", "IP:192.0.2.7"]
        ok(
            "enroll",
            url,
            *auth,
            "--key",
            "dev.key",
            "--subject",
            "CN=dev1,O=Acme",
            *sans,
            "--out",
            "dev.pem",
            "--pop",
        )
        assert Path("dev.key").stat().st_mode & 0o777 == 0o600
        cert = _cert(Path("dev.pem"))
        assert cert.subject.rfc4514_string() == "CN=dev1,O=Acme"
        key = serialization.load_pem_private_key(Path("dev.key").read_bytes(), None)
        assert cert.public_key() == key.public_key()

        ok(
            "reenroll",
            url,
            "--trust",
            "boot.pem",
            "--client-cert",
            "dev.pem",
            "--client-key",
            "dev.key",
            "--out",
            "renewed.pem",
        )
        renewed = _cert(Path("renewed.pem"))
        assert renewed.public_key() == cert.public_key() and renewed.subject == cert.subject
        # The renewed certificate, the newest of its chain, is the one that renews again.
        ok(
            "reenroll",
            url,
            "--trust",
            "boot.pem",
            "--client-cert",
            "renewed.pem",
            "--client-key",
            "dev.key",
            "--out",
            "rekeyed.pem",
            "--key",
            "new.key",
        )
        assert _cert(Path("rekeyed.pem")).public_key() != cert.public_key()

        ok(
            "serverkeygen",
            url,
            *auth,
            "--subject",
            "CN=skg",
            "--out",
            "skg.der",
            "--out-key",
            "skg.key",
            "--der",
        )
        skg = x509.load_der_x509_certificate(Path("skg.der").read_bytes())
        skg_key = serialization.load_der_private_key(Path("skg.key").read_bytes(), None)
        assert skg.public_key() == skg_key.public_key()
        assert Path("skg.key").stat().st_mode & 0o777 == 0o600


def test_one_line_errors(ca: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with serve("--ca", ca, "--user", "alice:pw") as (url, proc):
        trust = ["--trust", ca / "ca.pem"]
        line = one_line_error(
            est(
                "enroll",
                url,
                *trust,
                "--user",
                "alice:wrong",
                "--key",
                "k",
                "--subject",
                "CN=x",
                "--out",
                "x.pem",
            ),
            "estcoap enroll: simpleenroll refused: 401",
        )
        assert "password" in line
        one_line_error(
            est("enroll", url, *trust, "--key", "k", "--subject", "CN=x", "--out", "x.pem"),
            "estcoap enroll: simpleenroll refused: 401",
        )
        one_line_error(
            est(
                "enroll",
                url,
                *trust,
                "--user",
                "alice:pw",
                "--key",
                "k",
                "--subject",
                "nonsense",
                "--out",
                "x.pem",
            ),
            "estcoap enroll: --subject: bad subject 'nonsense': expected ATTRIBUTE=VALUE",
            status=2,
        )
        dev = ["--key", "k", "--subject", "CN=dev", "--out", "dev.pem"]
        ok("enroll", url, *trust, "--user", "alice:pw", *dev)
        no_cert = est("reenroll", url, *trust, "--out", "o.pem")
        one_line_error(
            no_cert, "estcoap reenroll: reenroll needs --client-cert and --client-key", status=2
        )
        ok(
            "enroll",
            url,
            *trust,
            "--user",
            "alice:pw",
            "--key",
            "k3",
            "--subject",
            "CN=3",
            "--out",
            "3.pem",
        )
        line = one_line_error(  # a certificate with somebody else's key
            est(
                "reenroll",
                url,
                *trust,
                "--client-cert",
                "dev.pem",
                "--client-key",
                "k3",
                "--out",
                "o.pem",
            ),
            "estcoap reenroll:",
        )
        assert "the key in k3 does not belong to the certificate in dev.pem" in line
        other = tmp_path / "other"
        ok("ca", "init", other, "--hostname", "127.0.0.1")
        line = one_line_error(
            est("cacerts", url, "--trust", other / "ca.pem"), "estcoap cacerts: cacerts failed"
        )
        assert "not trusted" in line
        dead = url.replace(url.split(":")[2].split("/")[0], "1")
        one_line_error(est("cacerts", dead, *trust), "estcoap cacerts: cacerts failed: cannot")


def test_serve_users_file_and_signals(ca: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    ok("users", "add", "users.txt", "bob", "--password", "pw2")
    done = est("users", "add", "users.txt", "carol", input="pw3\n")
    assert done.returncode == 0, done.stderr
    with serve("--ca", ca, "--users-file", "users.txt", "--approval", "auto") as (url, proc):
        trust = ["--trust", ca / "ca.pem"]
        for user in ("bob:pw2", "carol:pw3"):
            ok(
                "enroll",
                url,
                *trust,
                "--user",
                user,
                "--key",
                "k",
                "--subject",
                "CN=u",
                "--out",
                "u.pem",
            )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]

    one_line_error(
        est("serve", "--ca", tmp_path / "nope", "--https", "127.0.0.1:0"), "estcoap serve:"
    )
    one_line_error(est("serve", "--ca", ca), "estcoap serve: give at least one front", status=2)
