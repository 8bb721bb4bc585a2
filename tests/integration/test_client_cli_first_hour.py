"""The client commands as a newcomer meets them (issue 12): every mistake is one line
that says what to do, nothing is written before the inputs are known to be good, and an
issued certificate is never lost to an output path that fails. Subprocesses against
`estcoap serve` over real TLS and DTLS on loopback."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.idevid import DeviceMaker
from tests.integration.test_coaps_cli import CLI, est, ok, one_line_error, serve

pytestmark = pytest.mark.timeout(180)


def _write_pem(path: Path, obj: object) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@pytest.fixture(name="pki")
def pki_fixture(tmp_path: Path) -> dict[str, Path]:
    """A CA, a device maker it trusts, one IDevID with its key, and a key of nobody's."""
    ok("ca", "init", tmp_path / "ca", "--hostname", "127.0.0.1")
    maker = DeviceMaker.create()
    idevid, idevid_key = maker.issue_idevid("first-hour")
    return {
        "ca": tmp_path / "ca",
        "trust": tmp_path / "ca" / "ca.pem",
        "maker": _write_pem(tmp_path / "maker.pem", maker.certificate),
        "idevid": _write_pem(tmp_path / "idevid.pem", idevid),
        "idevid_key": _write_pem(tmp_path / "idevid.key", idevid_key),
        "other_key": _write_pem(tmp_path / "other.key", ec.generate_private_key(ec.SECP256R1())),
    }


def issued(ca: Path) -> str:
    return ok("ca", "issued", "--ca", ca).stdout


def test_bad_arguments_refused_before_a_key_file_is_written(tmp_path: Path) -> None:
    """A wrong command line (exit status 2), found before anything is made."""
    key = tmp_path / "new.key"
    for url in ("http://127.0.0.1:8443", "coap://127.0.0.1:5683"):
        line = one_line_error(
            est("enroll", url, "--key", key, "--subject", "CN=x", "--out", tmp_path / "x.pem"),
            "estcoap enroll:",
            url,
            status=2,
        )
        assert "https://" in line and "coaps://" in line
        assert not key.exists()
    for extra, needle in (
        (("--subject", "device-1"), "subject"),
        (("--subject", "CN=x", "--san", "DNS"), "--san"),
        (("--subject", "CN=x", "--san", "IP:300.1.1.1"), "--san IP:300.1.1.1"),
        (("--subject", "CN=x", "--client-cert", tmp_path / "c.pem"), "--client-key"),
        (("--subject", "CN=x", "--fingerprint", "ab" * 32), "add --bootstrap"),
    ):
        one_line_error(
            est("enroll", "https://127.0.0.1:9", "--key", key, *extra, "--out", tmp_path / "x"),
            "estcoap enroll:",
            needle,
            status=2,
        )
        assert not key.exists()
    one_line_error(
        est(
            "serverkeygen",
            "https://127.0.0.1:9",
            "--subject",
            "CN=x",
            "--shared-key",
            "zz",
            "--out",
            tmp_path / "s.pem",
            "--out-key",
            tmp_path / "s.key",
        ),
        "--shared-key wants KEY_ID_HEX:KEY_HEX",
        status=2,
    )


def test_outputs_checked_before_any_request(pki: dict[str, Path], tmp_path: Path) -> None:
    key = tmp_path / "dev.key"
    with serve("--ca", pki["ca"], "--user", "alice:pw") as urls:
        https = urls["https"]
        auth = ("--trust", pki["trust"], "--user", "alice:pw")
        before = issued(pki["ca"])
        one_line_error(
            est(
                "enroll",
                https,
                *auth,
                "--key",
                key,
                "--subject",
                "CN=x",
                "--out",
                "/nonexistent/x.pem",
            ),
            "--out",
            "/nonexistent/x.pem",
            "does not exist",
        )
        assert not key.exists()  # not even the key: nothing happened
        one_line_error(
            est(
                "serverkeygen",
                https,
                *auth,
                "--subject",
                "CN=x",
                "--out",
                tmp_path / "s.pem",
                "--out-key",
                "/nonexistent/s.key",
            ),
            "--out-key",
            "/nonexistent/s.key",
        )
        one_line_error(
            est("enroll", https, *auth, "--key", key, "--subject", "CN=x", "--out", key),
            f"--out {key} is the same file as --key {key}",
            status=2,
        )
        one_line_error(
            est(
                "enroll",
                https,
                *auth,
                "--key",
                key,
                "--subject",
                "CN=x",
                "--out",
                pki["idevid"],
                "--cert",
                pki["idevid"],
                "--cert-key",
                pki["idevid_key"],
            ),
            f"--out {pki['idevid']} is the same file as --client-cert {pki['idevid']}",
            status=2,
        )
        one_line_error(
            est("enroll", https, *auth, "--key", key, "--subject", "CN=x", "--out", tmp_path),
            "is a directory",
        )
        assert issued(pki["ca"]) == before  # the CA issued nothing it could not deliver
        ok("enroll", https, *auth, "--key", key, "--subject", "CN=x", "--out", tmp_path / "x.pem")
        assert issued(pki["ca"]) != before


def _wait_for_pending(ca: Path, count: int) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listing = ok("pending", "list", "--ca", ca, "--state", "pending").stdout
        ids = re.findall(r"^\s*(\d+)\s+pending", listing, re.MULTILINE)
        if len(ids) >= count:
            return ids
        time.sleep(0.2)
    raise AssertionError(f"no {count} pending requests: {listing}")


def _rescued(line: str, what: str) -> Path:
    match = re.search(rf"the {what} in (\S+?)(?: and |$)", line)
    assert match, line
    return Path(match.group(1))


def test_certificate_saved_when_its_path_fails_after_issuance(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """The output directory disappears while the requests wait for manual approval: the
    CA issues, the writes fail, and what was issued is saved beside the command."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    with serve(
        "--ca", pki["ca"], "--user", "alice:pw", "--approval", "manual", "--retry-after", "1"
    ) as urls:
        auth = ["--trust", str(pki["trust"]), "--user", "alice:pw"]
        enroll = subprocess.Popen(
            [
                *CLI,
                "enroll",
                urls["https"],
                *auth,
                "--key",
                "dev.key",
                "--subject",
                "CN=kept",
                "--out",
                str(out / "dev.pem"),
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        skg = subprocess.Popen(
            [
                *CLI,
                "serverkeygen",
                urls["https"],
                *auth,
                "--subject",
                "CN=kept-skg",
                "--out",
                str(out / "skg.pem"),
                "--out-key",
                str(out / "skg.key"),
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ids = _wait_for_pending(pki["ca"], 2)
            out.rmdir()
            for request in ids:
                ok("pending", "approve", request, "--ca", pki["ca"])
            results = [proc.communicate(timeout=90) for proc in (enroll, skg)]
        finally:
            for proc in (enroll, skg):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    lines = []
    for proc, (_, stderr) in zip((enroll, skg), results, strict=True):
        assert proc.returncode == 1 and "Traceback" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if not line.startswith("pending:")]
        assert len(errors) == 1, stderr
        lines.append(errors[0])

    assert f"cannot write {out / 'dev.pem'}" in lines[0] and ".tmp" not in lines[0]
    cert = x509.load_pem_x509_certificates(_rescued(lines[0], "issued certificate").read_bytes())
    key = serialization.load_pem_private_key((work / "dev.key").read_bytes(), None)
    assert cert[0].public_key() == key.public_key()
    assert cert[0].subject.rfc4514_string() == "CN=kept"

    assert f"cannot write {out / 'skg.key'}" in lines[1] and ".tmp" not in lines[1]
    saved_key = _rescued(lines[1], "server-generated key")
    assert saved_key.parent == work and saved_key.stat().st_mode & 0o777 == 0o600
    skg_key = serialization.load_pem_private_key(saved_key.read_bytes(), None)
    skg_cert = x509.load_pem_x509_certificates(
        _rescued(lines[1], "issued certificate").read_bytes()
    )[0]
    assert skg_cert.public_key() == skg_key.public_key()
    assert format(skg_cert.serial_number, "x") in issued(pki["ca"]).lower()


def test_bad_credentials_are_named(pki: dict[str, Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    pem = pki["trust"].read_text()
    cut = tmp_path / "cut.pem"
    cut.write_text(pem[: len(pem) // 2] + "\n-----END CERTIFICATE-----\n")
    cut_key = tmp_path / "cut.key"
    cut_key.write_text(pki["idevid_key"].read_text()[:120] + "\n-----END PRIVATE KEY-----\n")
    with serve("--ca", pki["ca"], "--trust-clients", pki["maker"]) as urls:
        for url in (urls["https"], urls["coaps"]):
            base = ("cacerts", url, "--trust", pki["trust"])
            me = ("--client-cert", pki["idevid"], "--client-key", pki["idevid_key"])
            cases = [
                (("cacerts", url, "--trust", garbage, *me), f"--trust {garbage}: not a certif"),
                (("cacerts", url, "--trust", empty, *me), f"--trust {empty}: the file is empty"),
                (("cacerts", url, "--trust", cut, *me), f"--trust {cut}: a PEM certificate"),
                (
                    (*base, "--client-cert", pki["idevid_key"], "--client-key", pki["idevid_key"]),
                    f"--client-cert {pki['idevid_key']}: no certificate in it (it holds a PEM "
                    "PRIVATE KEY)",
                ),
                (
                    (*base, "--client-cert", pki["idevid"], "--client-key", cut_key),
                    f"--client-key {cut_key}: the PEM private key in it is damaged",
                ),
                # the former spellings still work; the message names the option as it is now
                (
                    (*base, "--cert", pki["idevid"], "--cert-key", tmp_path / "none.key"),
                    f"--client-key {tmp_path / 'none.key'}: cannot read it",
                ),
                (
                    (*base, "--client-cert", pki["idevid"], "--client-key", pki["other_key"]),
                    f"the key in {pki['other_key']} does not belong to the certificate in "
                    f"{pki['idevid']}",
                ),
            ]
            for args, needle in cases:
                line = one_line_error(est(*args), "estcoap cacerts: ", needle)
                assert "ParseError" not in line and "_ssl.c" not in line
        enroll_key = one_line_error(
            est(
                "enroll",
                urls["https"],
                "--trust",
                pki["trust"],
                "--key",
                garbage,
                "--subject",
                "CN=x",
                "--out",
                tmp_path / "x.pem",
            ),
            f"--key {garbage}: not a private key",
        )
        assert "Could not deserialize" not in enroll_key
        one_line_error(
            est("cacerts", urls["https"], "--bootstrap", "--fingerprint", "zz"),
            "--fingerprint 'zz' is not a SHA-256 fingerprint",
            status=2,
        )
        one_line_error(
            est("cacerts", urls["https"], "--bootstrap", "--fingerprint", "ab" * 31),
            "is not a SHA-256 fingerprint",
            status=2,
        )


def test_untrusted_server_says_what_to_do(pki: dict[str, Path], tmp_path: Path) -> None:
    ok("ca", "init", tmp_path / "other", "--hostname", "127.0.0.1")
    wrong = tmp_path / "other" / "ca.pem"
    me = ("--client-cert", pki["idevid"], "--client-key", pki["idevid_key"])
    with serve("--ca", pki["ca"], "--trust-clients", pki["maker"]) as urls:
        https = one_line_error(est("cacerts", urls["https"], "--trust", wrong), "not trusted")
        coaps = one_line_error(est("cacerts", urls["coaps"], "--trust", wrong, *me), "not trusted")
    assert "--trust FILE" in https and "--bootstrap" in https
    assert "--trust FILE" in coaps


def test_silent_coaps_server_honours_timeout_and_says_what_to_check(
    pki: dict[str, Path],
) -> None:
    me = (
        "--trust",
        pki["trust"],
        "--client-cert",
        pki["idevid"],
        "--client-key",
        pki["idevid_key"],
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # takes datagrams, never answers
        port = silent.getsockname()[1]
        line = one_line_error(
            est("cacerts", f"coaps://127.0.0.1:{port}", *me, "--timeout", "2"), "cacerts"
        )
    assert f"no DTLS answer from 127.0.0.1:{port} within 2 s" in line
    assert "is the server running and the port right?" in line
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    line = one_line_error(
        est("cacerts", f"coaps://127.0.0.1:{closed}", *me, "--timeout", "3"), "cacerts"
    )
    assert f"no DTLS answer from 127.0.0.1:{closed} within 3 s" in line
    with socket.socket() as probe:  # the same over https: a closed TCP port
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    line = one_line_error(est("cacerts", f"https://127.0.0.1:{closed}", "--trust", pki["trust"]))
    assert f"cannot connect to 127.0.0.1:{closed}: connection refused: is the server" in line
