"""Crash safety of the CA store with real processes: SIGKILL mid-burst, concurrent writers,
and a failure between signing and commit. Every row left behind must be complete."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import LocalCA, Store, init_ca
from estcoap.codec.pkcs10 import parse_csr
from estcoap.service import EnrollRequest, Peer, ServiceFailure, Transport

# A child that enrolls in bursts forever (or `count` times), printing a line per burst.
_ISSUER = textwrap.dedent(
    """
    import asyncio, sys
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from estcoap.ca import LocalCA
    from estcoap.codec.pkcs10 import parse_csr
    from estcoap.service import EnrollRequest, Peer, Transport

    ca_dir, bursts = sys.argv[1], int(sys.argv[2])
    key = ec.generate_private_key(ec.SECP256R1())

    def request(i):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dev-{i}")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
        der = csr.public_bytes(serialization.Encoding.DER)
        return EnrollRequest(parse_csr(der), Peer(Transport.HTTPS, http_user="burst"))

    async def main():
        ca = LocalCA.open(ca_dir)
        done, n = 0, 0
        while bursts < 0 or n < bursts:
            await asyncio.gather(*(ca.enroll(request(done + j)) for j in range(4)))
            done += 4
            n += 1
            print(done, flush=True)
        ca.close()

    asyncio.run(main())
    """
)


def _spawn(ca_dir, bursts):
    return subprocess.Popen(
        [sys.executable, "-c", _ISSUER, str(ca_dir), str(bursts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_every_row(store_path, ca_cert):
    """Every issued row is complete and its certificate parses and verifies."""
    db = sqlite3.connect(store_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = db.execute(
            "SELECT serial, subject, not_before, not_after, requester, operation, kind,"
            " cert_der, created FROM issued"
        ).fetchall()
    finally:
        db.close()
    for serial, subject, not_before, not_after, requester, operation, kind, der, created in rows:
        assert all((subject, not_before, not_after, requester, operation, kind, created))
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(ca_cert)
        assert int(serial, 16) == cert.serial_number
        assert cert.subject.rfc4514_string() == subject
        assert cert.not_valid_after_utc.isoformat() == not_after
    serials = [r[0] for r in rows]
    assert len(serials) == len(set(serials))
    return rows


def _request(cn: str) -> EnrollRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    der = csr.public_bytes(serialization.Encoding.DER)
    return EnrollRequest(parse_csr(der), Peer(Transport.HTTPS, http_user="admin"))


@pytest.fixture
def ca_dir(tmp_path):
    init_ca(tmp_path / "ca", ["localhost"])
    return tmp_path / "ca"


@pytest.mark.timeout(60)
def test_sigkill_in_the_middle_of_a_burst_leaves_only_complete_rows(ca_dir):
    child = _spawn(ca_dir, -1)
    try:
        issued = 0
        while issued < 24:
            line = child.stdout.readline()
            assert line, f"issuer died: {child.stderr.read()}"
            issued = int(line)
        os.kill(child.pid, signal.SIGKILL)  # no chance to finish the burst or close
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    ca = LocalCA.open(ca_dir)
    try:
        rows = _check_every_row(ca.paths.store, ca.ca_certificate)
        assert len(rows) >= 1 + 24  # init + everything the child reported as issued
        # The store still works after the crash.
        result = asyncio.run(ca.enroll(_request("after-crash")))
        assert ca.store.find_issued(result.certificates[0].serial_number) is not None
    finally:
        ca.close()


@pytest.mark.timeout(90)
def test_two_processes_issue_into_one_store_without_duplicates(ca_dir):
    children = [_spawn(ca_dir, 8) for _ in range(2)]
    for child in children:
        out, err = child.communicate(timeout=80)
        assert child.returncode == 0, err
        assert out.split()[-1] == "32"
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    rows = _check_every_row(ca_dir / "est.sqlite3", ca_cert)
    assert len(rows) == 1 + 2 * 32


def test_failure_after_signing_records_nothing_and_returns_nothing(ca_dir, monkeypatch):
    ca = LocalCA.open(ca_dir)
    try:

        def fail_before_commit(self, cur, serial):
            raise OSError("disk went away")  # after the INSERT, before COMMIT

        request = _request("doomed")
        with monkeypatch.context() as patch:
            patch.setattr(Store, "_verify_row", fail_before_commit)
            with pytest.raises(ServiceFailure, match="nothing was issued"):
                asyncio.run(ca.enroll(request))
        assert [r.operation for r in ca.store.issued_list()] == ["init"]
        # The connection is not left inside a transaction: the next request goes through.
        result = asyncio.run(ca.enroll(request))
        assert len(ca.store.issued_list()) == 2
        assert ca.store.find_issued(result.certificates[0].serial_number) is not None
    finally:
        ca.close()
