"""`estcoap ca revoke|list|crl|issue-ocsp` as an operator runs them (subprocesses): one
line and a status of its own for what cannot be revoked, the store unchanged then, the
list showing why, and a store of the previous release revoked in after its upgrade."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from estcoap.ca.store import SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "estcoap.cli"]
DATA = Path(__file__).resolve().parents[1] / "data"


def est(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=60)


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = est(*args)
    assert done.returncode == 0, done.stderr
    return done


def one_line(done: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert done.returncode == status, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def revoked_rows(ca: Path) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(ca / "est.sqlite3") as db:
        return db.execute("SELECT * FROM revoked ORDER BY id").fetchall()


def rows(ca: Path) -> dict[str, str]:
    """serial -> status, from `ca list`."""
    listing = ok("ca", "list", ca).stdout.splitlines()
    header = listing[0]
    status_at = header.index("status")
    operation_at = header.index("operation")
    return {line.split()[0]: line[status_at:operation_at].strip() for line in listing[1:]}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    ok("ca", "init", tmp_path / "ca", "--hostname", "127.0.0.1")
    ok(
        "ca",
        "issue-ra",
        tmp_path / "ca",
        "--out-cert",
        tmp_path / "ra.pem",
        "--out-key",
        tmp_path / "ra.key",
    )
    return tmp_path / "ca"


def test_revoke_then_list_show_and_the_refusals(ca: Path, tmp_path: Path) -> None:
    before = rows(ca)
    assert set(before.values()) == {"valid"} and len(before) == 2
    server, ra = (line.split()[0] for line in ok("ca", "list", ca).stdout.splitlines()[1:])

    done = ok(
        "ca",
        "revoke",
        ca,
        server,
        "--reason",
        "keyCompromise",
        "--invalidity-date",
        "2025-03-01T12:00:00Z",
    )
    assert f"revoked certificate {server} (CN=127.0.0.1): keyCompromise" in done.stdout
    assert rows(ca) == {server: "revoked (keyCompromise)", ra: "valid"}
    shown = ok("ca", "show", ca, server).stdout
    assert "status           revoked (keyCompromise)" in shown
    assert "by cli:" in shown and "invalid since 2025-03-01T12:00:00+00:00" in shown
    assert ok("ca", "list", ca, "--status", "revoked").stdout.count("\n") == 2
    # The former name lists the same.
    assert "revoked (keyCompromise)" in ok("ca", "issued", ca).stdout

    kept = revoked_rows(ca)
    one_line(
        est("ca", "revoke", ca, server, "--reason", "superseded"),
        4,
        f"certificate {server} is already revoked (keyCompromise",
    )
    one_line(est("ca", "revoke", ca, "abcdef"), 3, "no certificate with serial abcdef")
    one_line(est("ca", "revoke", ca, "xyz"), 2, "is not hexadecimal")
    one_line(
        est("ca", "revoke", ca, ra, "--reason", "cACompromise"), 2, "cACompromise is not accepted"
    )
    one_line(est("ca", "revoke", ca, ra, "--reason", "certificateHold"), 2, "no holds")
    one_line(est("ca", "revoke", ca, ra, "--reason", "stolen"), 2, "expected one of")
    one_line(est("ca", "revoke", ca, ra, "--invalidity-date", "yesterday"), 2, "ISO 8601")
    one_line(est("ca", "revoke", ca, ra, "--invalidity-date", "2999-01-01"), 1, "future")
    one_line(est("ca", "revoke", ca), 2, "SERIAL or --cert FILE")
    one_line(est("ca", "revoke", ca, ra, "--cert", tmp_path / "ra.pem"), 2, "one of them")
    assert revoked_rows(ca) == kept
    assert rows(ca)[ra] == "valid"


def test_revoke_by_certificate_file(ca: Path, tmp_path: Path) -> None:
    ra = x509.load_pem_x509_certificates((tmp_path / "ra.pem").read_bytes())[0]
    der = tmp_path / "ra.der"
    der.write_bytes(ra.public_bytes(serialization.Encoding.DER))
    ok("ca", "revoke", ca, "--cert", der, "--reason", "cessationOfOperation")
    assert rows(ca)[format(ra.serial_number, "x")] == "revoked (cessationOfOperation)"
    one_line(est("ca", "revoke", ca, "--cert", tmp_path / "ra.pem"), 4, "already revoked")

    # A certificate of another CA, even with a serial this one issued: not this CA's.
    ok("ca", "init", tmp_path / "other", "--hostname", "127.0.0.1")
    one_line(
        est("ca", "revoke", ca, "--cert", tmp_path / "other" / "server.pem"),
        3,
        "was not issued by this CA",
    )
    one_line(est("ca", "revoke", ca, "--cert", tmp_path / "nowhere.pem"), 1, "nowhere.pem")
    (tmp_path / "junk.pem").write_text("junk")
    one_line(est("ca", "revoke", ca, "--cert", tmp_path / "junk.pem"), 1, "not a PEM or DER")
    assert len(revoked_rows(ca)) == 1


def test_crl_files_pem_der_numbered_per_scope(ca: Path, tmp_path: Path) -> None:
    server = ok("ca", "list", ca).stdout.splitlines()[1].split()[0]
    ok("ca", "revoke", ca, server, "--reason", "superseded")
    done = ok("ca", "crl", ca, "--out", tmp_path / "a.pem", "--next-update", "12h")
    assert "wrote CRL number 1 (all labels, 1 revoked" in done.stdout
    first = x509.load_pem_x509_crl((tmp_path / "a.pem").read_bytes())
    ok("ca", "crl", ca, "--out", tmp_path / "b.der")
    second = x509.load_der_x509_crl((tmp_path / "b.der").read_bytes())
    ok("ca", "crl", ca, "--out", tmp_path / "c.crl", "--label", "tenant-a")
    labelled = x509.load_der_x509_crl((tmp_path / "c.crl").read_bytes())

    def number(crl: x509.CertificateRevocationList) -> int:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    assert (number(first), number(second), number(labelled)) == (1, 2, 1)
    # --next-update 12h, after a thisUpdate backdated 5 minutes for clock skew.
    assert first.next_update_utc - first.last_update_utc == dt.timedelta(hours=12, minutes=5)
    assert [e.serial_number for e in second] == [int(server, 16)]
    assert len(labelled) == 0
    one_line(
        est("ca", "crl", ca, "--out", tmp_path / "x.pem", "--next-update", "9y"),
        2,
        "expected a duration",
    )
    one_line(est("ca", "crl", ca, "--out", tmp_path / "no" / "x.pem"), 1, "does not exist")


def test_issue_ocsp_and_init_with_a_responder(ca: Path, tmp_path: Path) -> None:
    done = ok("ca", "issue-ocsp", ca, "--validity-days", "7")
    assert "id-kp-OCSPSigning" in done.stdout
    assert (ca / "ocsp.key").stat().st_mode & 0o777 == 0o600
    first = x509.load_pem_x509_certificate((ca / "ocsp.pem").read_bytes())
    ok("ca", "issue-ocsp", ca)  # a new one replaces it
    second = x509.load_pem_x509_certificate((ca / "ocsp.pem").read_bytes())
    assert second.serial_number != first.serial_number
    assert {format(c.serial_number, "x") for c in (first, second)} <= set(rows(ca))

    made = ok("ca", "init", tmp_path / "with", "--hostname", "127.0.0.1", "--ocsp-responder")
    assert "OCSP responder" in made.stdout
    assert (tmp_path / "with" / "ocsp.key").stat().st_mode & 0o777 == 0o600


def test_the_previous_release_store_revokes_after_its_upgrade(tmp_path: Path) -> None:
    """A CA directory whose store was written before revocation (tests/data)."""
    ca = tmp_path / "ca"
    ca.mkdir()
    shutil.copyfile(DATA / "store-v2.sqlite3", ca / "est.sqlite3")
    (ca / "est.sqlite3").chmod(0o600)
    shutil.copyfile(DATA / "store-v2-ca.pem", ca / "ca.pem")
    before = rows(ca)  # opening it upgrades it
    assert len(before) == 5 and set(before.values()) == {"valid"}
    device = next(
        line.split()[0] for line in ok("ca", "list", ca).stdout.splitlines() if "tenant-a" in line
    )
    ok("ca", "revoke", ca, device, "--reason", "keyCompromise")
    assert rows(ca)[device] == "revoked (keyCompromise)"
    with sqlite3.connect(ca / "est.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
