"""Manual approval: pending requests, decisions from another process, idempotent answers."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_ca_support import enroll_request, make_csr, name, new_ca, user_peer

from estcoap.ca import Store, StoreError, UnknownRequest
from estcoap.cli import main
from estcoap.codec import keypackage
from estcoap.codec.pkcs10 import add_attributes, build_csr, parse_csr
from estcoap.service import (
    Certificates,
    Forbidden,
    KeyAndCertificate,
    KeyFormat,
    Peer,
    Pending,
    Transport,
    Unauthenticated,
)


@pytest.fixture
async def ca(tmp_path, store_url):
    """A manual-approval CA, once on SQLite and once on PostgreSQL (conftest.store_url)."""
    service = new_ca(tmp_path, store_url, approval="manual", retry_after=7, labels=["iot"])
    yield service
    service.close()


def _decide(ca, request_id, decision):
    # A separate connection, as `estcoap pending approve` uses while the server runs.
    with Store.open(ca.paths.store_location(), create=False) as store:
        getattr(store, decision)(request_id)


def _issued_count(ca):
    return len(ca.store.issued_list())


async def test_approve_then_issue_once(ca):
    request = enroll_request(make_csr(subject=name("waiting")), user_peer("carol"), label="iot")
    assert await ca.enroll(request) == Pending(7)
    assert await ca.enroll(request) == Pending(7)  # repeated: still pending, no new row
    (record,) = ca.store.pending_list()
    assert (record.state, record.operation, record.label) == ("pending", "enroll", "iot")
    assert (record.subject, record.requester) == ("CN=waiting", "user:carol")
    before = _issued_count(ca)

    _decide(ca, record.id, "approve")
    first = await ca.enroll(request)
    assert isinstance(first, Certificates)
    again = await ca.enroll(request)
    assert again.certificates == first.certificates  # same certificate, never a second
    assert _issued_count(ca) == before + 1
    assert ca.store.issued_for_pending(record.id).certificate == first.certificates[0]


async def test_denied_request_is_forbidden(ca):
    request = enroll_request(make_csr(), user_peer())
    await ca.enroll(request)
    (record,) = ca.store.pending_list()
    _decide(ca, record.id, "deny")
    with pytest.raises(Forbidden, match="request denied"):
        await ca.enroll(request)
    with pytest.raises(Forbidden, match="request denied"):
        await ca.enroll(request)


async def test_requests_differ_by_operation_label_and_csr(ca):
    csr = make_csr()
    await ca.enroll(enroll_request(csr, user_peer()))
    await ca.enroll(enroll_request(csr, user_peer(), label="iot"))
    await ca.serverkeygen(enroll_request(csr, user_peer()))
    await ca.enroll(enroll_request(make_csr(), user_peer()))
    records = ca.store.pending_list()
    assert len(records) == 4
    assert {(r.operation, r.label) for r in records} == {
        ("enroll", None),
        ("enroll", "iot"),
        ("serverkeygen", None),
    }


async def test_refused_requests_are_not_queued(ca):
    ca_true = x509.BasicConstraints(ca=True, path_length=None)
    with pytest.raises(Forbidden, match="CA:TRUE"):
        await ca.enroll(enroll_request(make_csr(extensions=[(ca_true, True)]), user_peer()))
    with pytest.raises(Unauthenticated):
        await ca.enroll(enroll_request(make_csr(), Peer(Transport.COAPS)))
    assert ca.store.pending_list() == []


async def test_approved_serverkeygen_gives_the_same_key_again(ca):
    request = enroll_request(make_csr(subject=name("skg")), user_peer())
    assert isinstance(await ca.serverkeygen(request), Pending)
    (record,) = ca.store.pending_list()
    _decide(ca, record.id, "approve")
    first = await ca.serverkeygen(request)
    again = await ca.serverkeygen(request)
    assert isinstance(first, KeyAndCertificate)
    assert again == first
    key = serialization.load_der_private_key(first.private_key, None)
    assert key.public_key() == first.certificates.certificates[0].public_key()


async def test_approved_encrypted_serverkeygen_seals_the_same_key_each_time(ca):
    """The record keeps the key as generated; every answer seals it for the recipient."""
    transport_key = ec.generate_private_key(ec.SECP256R1())
    recipient = keypackage.Recipient.of_public_key(transport_key.public_key())
    csr_der = add_attributes(
        build_csr(transport_key, name("skg-sealed")),
        transport_key,
        [keypackage.asymmetric_decrypt_key_id_attribute(recipient.key_id)],
    )
    request = enroll_request(parse_csr(csr_der), user_peer())
    assert isinstance(await ca.serverkeygen(request), Pending)
    (record,) = ca.store.pending_list()
    _decide(ca, record.id, "approve")
    first = await ca.serverkeygen(request)
    again = await ca.serverkeygen(request)
    assert first.key_format is again.key_format is KeyFormat.CMS_ENVELOPED
    keys = [keypackage.open_key(a.private_key, recipient_key=transport_key) for a in (first, again)]
    assert keys[0].pkcs8 == keys[1].pkcs8  # one key, sealed afresh
    key = serialization.load_der_private_key(keys[0].pkcs8, None)
    assert key.public_key() == first.certificates.certificates[0].public_key()


async def test_two_instances_racing_on_one_approval_issue_once(ca):
    other = new_ca(ca.paths.dir.parent, approval="manual")
    try:
        request = enroll_request(make_csr(), user_peer())
        await ca.enroll(request)
        (record,) = ca.store.pending_list()
        _decide(ca, record.id, "approve")
        before = _issued_count(ca)
        results = await asyncio.gather(
            *(service.enroll(request) for service in (ca, other, ca, other))
        )
        serials = {r.certificates[0].serial_number for r in results}
        assert len(serials) == 1
        assert _issued_count(ca) == before + 1
    finally:
        other.close()


def test_store_decisions_are_final(store_url):
    with Store.open(store_url) as store:
        record = store.submit_pending(
            operation="enroll",
            label=None,
            csr_der=b"0",
            csr_sha256="ab",
            subject="CN=x",
            requester="user:x",
        )
        store.deny(record.id)
        with pytest.raises(StoreError, match="already denied"):
            store.approve(record.id)
        with pytest.raises(UnknownRequest, match="no request with id 99"):
            store.deny(99)


# ---- the command line ---------------------------------------------------------


async def test_cli_list_approve_deny(ca, capsys):
    await ca.enroll(enroll_request(make_csr(subject=name("cli-1")), user_peer("dave")))
    await ca.enroll(enroll_request(make_csr(subject=name("cli-2")), user_peer("erin")))
    first, second = ca.store.pending_list()
    ca_dir = str(ca.paths.dir)

    assert main(["pending", "list", "--ca", ca_dir]) == 0
    out = capsys.readouterr().out.splitlines()
    header = ["id", "state", "operation", "label", "subject", "requester", "created"]
    assert out[0].split() == header
    assert out[1].split()[:6] == [str(first.id), "pending", "enroll", "-", "CN=cli-1", "user:dave"]

    assert main(["pending", "approve", str(first.id), "--ca", ca_dir]) == 0
    assert "approved" in capsys.readouterr().out
    assert main(["pending", "deny", str(second.id), "--ca", ca_dir]) == 0
    assert "denied" in capsys.readouterr().out
    assert [r.state for r in ca.store.pending_list()] == ["approved", "denied"]

    assert main(["pending", "list", "--ca", ca_dir, "--state", "pending"]) == 0
    assert capsys.readouterr().out.strip() == "(none)"

    assert main(["pending", "deny", ca_dir, "12345"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "estcoap pending: no request with id 12345"
    assert main(["pending", "approve", ca_dir, str(second.id)]) == 1
    assert "already denied" in capsys.readouterr().err


def test_cli_in_a_subprocess(tmp_path):
    ca_dir = tmp_path / "ca"

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "estcoap.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = run("ca", "init", str(ca_dir), "--hostname", "localhost", "--hostname", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    assert str(ca_dir / "ca.pem") in made.stdout
    again = run("ca", "init", str(ca_dir), "--hostname", "localhost")
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1
    assert "refusing to overwrite" in again.stderr

    listed = run("pending", "list", "--ca", str(ca_dir))
    assert listed.returncode == 0 and listed.stdout.strip() == "(none)"
    issued = run("ca", "issued", "--ca", str(ca_dir))
    assert issued.returncode == 0 and "CN=localhost" in issued.stdout
    unknown = run("pending", "approve", str(ca_dir), "3")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "estcoap pending: no request with id 3"
    missing = run("pending", "list", "--ca", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "estcoap ca init" in missing.stderr
    assert not (tmp_path / "nowhere").exists()


async def test_reenroll_waits_for_approval_too(ca):
    ca_auto = new_ca(ca.paths.dir.parent)  # issue the first certificate without waiting
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        first = await ca_auto.enroll(enroll_request(make_csr(key, name("re")), user_peer()))
    finally:
        ca_auto.close()
    cert = first.certificates[0]
    request = enroll_request(
        make_csr(key, cert.subject), Peer(Transport.COAPS, certificates=(cert,))
    )
    assert isinstance(await ca.reenroll(request), Pending)
    (record,) = ca.store.pending_list()
    assert record.operation == "reenroll" and record.requester == "cert:CN=re"
    _decide(ca, record.id, "approve")
    renewed = (await ca.reenroll(request)).certificates[0]
    issued = ca.store.find_issued(renewed.serial_number)
    assert (issued.kind, issued.renewed_from) == ("renew", format(cert.serial_number, "x"))
    assert issued.pending_id == record.id


async def test_approve_from_the_command_line_while_the_ca_runs(ca):
    request = enroll_request(make_csr(subject=name("via-cli")), user_peer())
    assert isinstance(await ca.enroll(request), Pending)
    (record,) = ca.store.pending_list()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "estcoap.cli",
            "pending",
            "approve",
            str(record.id),
            "--ca",
            str(ca.paths.dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"request {record.id} (enroll, CN=via-cli) approved" in done.stdout
    cert = (await ca.enroll(request)).certificates[0]
    listing = subprocess.run(
        [sys.executable, "-m", "estcoap.cli", "ca", "issued", "--ca", str(ca.paths.dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert format(cert.serial_number, "x") in listing.stdout
    assert "CN=via-cli" in listing.stdout
