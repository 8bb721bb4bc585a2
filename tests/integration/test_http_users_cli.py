"""The CLI side of HTTP users: a password on the command line warns, ESTCOAP_USERS and
users files keep it out of sight, --http-auth picks the offered schemes and their order."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from estcoap.ca import init_ca
from tests.integration.test_https_cli import CLI, READY, est, ok, one_line_error

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(name="ca")
def ca_fixture(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca", ["127.0.0.1"])
    return tmp_path / "ca"


def _serve(
    ca: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--ca", str(ca), "--https", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith(READY):
        proc.kill()
        raise AssertionError(line + proc.stderr.read())  # type: ignore[union-attr]
    return line[len(READY) :].strip(), proc


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    return err


def _challenges(url: str, ca: Path) -> list[str]:
    parts = urlsplit(url)
    ctx = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=ctx, timeout=30)
    try:
        conn.request("GET", parts.path + "/csrattrs")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 401
        return resp.headers.get_all("WWW-Authenticate") or []
    finally:
        conn.close()


def test_password_on_command_line_warns_and_environment_does_not(ca: Path) -> None:
    trust = ["--trust", str(ca / "ca.pem")]
    url, proc = _serve(ca, "--user", "alice:s3cr3t-on-argv")
    try:
        ok("csrattrs", url, *trust, "--user", "alice:s3cr3t-on-argv")
    finally:
        err = _stop(proc)
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "--users-file" in warning[0] and "ESTCOAP_USERS" in warning[0]
    assert "s3cr3t-on-argv" not in err

    url, proc = _serve(ca, env={"ESTCOAP_USERS": "carol:s3cret\ndave:other\n"})
    try:
        ok("csrattrs", url, *trust, "--user", "dave:other")
        refused = est("csrattrs", url, *trust, "--user", "dave:wrong")
        assert refused.returncode == 1 and "401" in refused.stderr
    finally:
        err = _stop(proc)
    assert "warning" not in err


def test_http_auth_sets_offered_schemes_and_order(ca: Path) -> None:
    url, proc = _serve(ca, "--users-file", "/dev/null", "--user", "a:b")
    try:
        offered = _challenges(url, ca)
    finally:
        _stop(proc)
    assert [c.split()[0] for c in offered] == ["Digest", "Basic"]
    assert "SHA-256" in offered[0] and not any("MD5" in c for c in offered)

    url, proc = _serve(ca, "--user", "a:b", "--http-auth", "digest-md5,basic")
    try:
        offered = _challenges(url, ca)
    finally:
        _stop(proc)
    assert [c.split()[0] for c in offered] == ["Digest", "Basic"]
    assert "algorithm=MD5" in offered[0]


def test_bad_http_auth_is_one_line(ca: Path) -> None:
    done = est("serve", "--ca", ca, "--https", "127.0.0.1:0", "--http-auth", "digest-sha1")
    line = one_line_error(done, "estcoap serve: --http-auth: unknown HTTP auth scheme", status=2)
    assert "digest-sha256" in line and "digest-md5" in line
