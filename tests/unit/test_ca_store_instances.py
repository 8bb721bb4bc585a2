"""Two CA instances on one PostgreSQL database (issue 17): what one decides or records the
other sees at once, a repeated request gets the same certificate from either, serials stay
unique when two processes issue at once, and a one-time PSK pays for one certificate."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest
from cryptography import x509
from test_ca_support import enroll_request, make_csr, name, new_ca, user_peer

from estcoap.ca import LocalCA, Store
from estcoap.service import Certificates, Forbidden, Peer, Pending, Transport

PSK = bytes(range(16))


@pytest.fixture
async def pair(tmp_path: Path, pg_url: str):
    """Two LocalCA objects (two instances: each with its own pool) on one database."""
    first = new_ca(tmp_path, pg_url, approval="manual", retry_after=5)
    second = new_ca(tmp_path, approval="manual", retry_after=5)  # finds it in store.url
    yield first, second
    first.close()
    second.close()


def _operator(ca: LocalCA) -> Store:
    """The CLI's own connection (`estcoap pending approve` on a third host)."""
    return Store.open(ca.paths.store_location(), create=False)


async def test_an_approval_is_seen_by_the_instance_the_device_polls(pair) -> None:
    first, second = pair
    request = enroll_request(make_csr(subject=name("poller")), user_peer("pat"))
    assert await first.enroll(request) == Pending(5)
    assert await second.enroll(request) == Pending(5)  # the same request, not a new one
    (record,) = second.store.pending_list()
    with _operator(first) as operator:
        operator.approve(record.id, decided_by="cli:olga")
    answer = await second.enroll(request)
    assert isinstance(answer, Certificates)
    # The same certificate, whichever instance the repeated request reaches.
    again = [await ca.enroll(request) for ca in (first, second, first)]
    serials = {a.certificates[0].serial_number for a in [answer, *again]}
    assert serials == {answer.certificates[0].serial_number}
    assert len([r for r in first.store.issued_list() if r.pending_id == record.id]) == 1


async def test_a_denial_on_one_instance_is_final_on_the_other(pair) -> None:
    first, second = pair
    request = enroll_request(make_csr(subject=name("refused")), user_peer("pat"))
    await first.enroll(request)
    (record,) = first.store.pending_list()
    second.store.deny(record.id, decided_by="cli:olga")
    with pytest.raises(Forbidden):
        await first.enroll(request)


async def test_a_revocation_on_one_instance_is_seen_by_the_other(pair) -> None:
    first, second = pair
    first.approval = second.approval = "auto"
    answer = await first.enroll(enroll_request(make_csr(), user_peer()))
    cert = answer.certificates[0]
    assert second.revocation_of(cert) is None  # its cache is now current
    first.store.revoke(
        cert.serial_number,
        reason=x509.ReasonFlags.key_compromise,
        invalidity_date=None,
        revoked_by="cli:olga",
    )
    seen = second.revocation_of(cert)
    assert seen is not None and seen.reason == "keyCompromise"


async def test_a_one_time_psk_pays_for_one_certificate_across_instances(pair) -> None:
    first, second = pair
    first.approval = second.approval = "auto"
    first.store.psk_add("boot-1", PSK, subject="CN=boot-1")
    peer = Peer(Transport.COAPS, psk_identity="boot-1")
    requests = [enroll_request(make_csr(subject=name("boot-1")), peer) for _ in range(2)]
    results = await asyncio.gather(
        first.enroll(requests[0]), second.enroll(requests[1]), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Certificates", "Forbidden"]
    assert first.store.psk_get("boot-1").uses_left == 0  # type: ignore[union-attr]
    assert [r.requester for r in second.store.issued_list()].count("psk:boot-1") == 1


def _issue_many(ca_dir: str, count: int, start: multiprocessing.synchronize.Event) -> None:
    ca = LocalCA.open(ca_dir)
    try:
        start.wait(60)

        async def run() -> None:
            await asyncio.gather(
                *(ca.enroll(enroll_request(make_csr(), user_peer(f"p{i}"))) for i in range(count))
            )

        asyncio.run(run())
    finally:
        ca.close()


def test_two_processes_issuing_at_once_never_share_a_serial(tmp_path: Path, pg_url: str) -> None:
    new_ca(tmp_path, pg_url).close()
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=_issue_many, args=(str(tmp_path / "ca"), 25, start))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with Store.open(pg_url, create=False) as store:
        serials = [r.serial for r in store.issued_list()]
        audit = [r for r in store.audit_list() if r.event == "issued"]
    assert len(serials) == len(set(serials)) == 51  # + the server certificate
    assert len(audit) == 51
