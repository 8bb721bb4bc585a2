"""Rules on who gets an answer: pending requests bound to their requester, caps on the
pending queue, and the renewal rule (only the newest certificate of a chain renews)."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from test_ca_support import cert_peer, enroll_request, make_csr, name, new_ca, user_peer

from estcoap.ca import Store
from estcoap.ca.local import requester_id
from estcoap.service import Certificates, Forbidden, KeyAndCertificate, Pending


def _approve_all(ca) -> None:
    with Store.open(ca.paths.store_location(), create=False) as operator:
        for record in operator.pending_list("pending"):
            operator.approve(record.id)


# ---- a pending request and its answer belong to whoever made it ----------------------


async def test_replayed_serverkeygen_csr_gets_no_key(tmp_path, store_url):
    ca = new_ca(tmp_path, store_url, approval="manual")
    try:
        request = enroll_request(make_csr(subject=name("alice-dev")), user_peer("alice"))
        replay = enroll_request(request.csr, user_peer("mallory"))
        assert isinstance(await ca.serverkeygen(request), Pending)
        with pytest.raises(Forbidden, match="another requester") as before:
            await ca.serverkeygen(replay)
        assert "alice" not in str(before.value) and "pending" not in str(before.value)
        _approve_all(ca)
        with pytest.raises(Forbidden, match="another requester"):
            await ca.serverkeygen(replay)
        answer = await ca.serverkeygen(request)
        assert isinstance(answer, KeyAndCertificate)
        # Also after alice was served, while her key is kept for her repeats.
        with pytest.raises(Forbidden, match="another requester"):
            await ca.serverkeygen(replay)
        assert len(ca.store.pending_list()) == 1  # the replay queued nothing
    finally:
        ca.close()


async def test_replayed_enroll_csr_from_another_device_gets_nothing(tmp_path, store_url):
    """Two certificates with the same subject (two device makers may both issue
    CN=device-1) are two requesters: the request is bound to the certificate."""
    ca = new_ca(tmp_path, store_url)
    one = await ca.enroll(enroll_request(make_csr(subject=name("device-1")), user_peer()))
    two = await ca.enroll(enroll_request(make_csr(subject=name("device-1")), user_peer()))
    ca.close()
    manual = new_ca(tmp_path, store_url, approval="manual")
    try:
        device_a = cert_peer(one.certificates[0])
        device_b = cert_peer(two.certificates[0])
        assert device_a.describe() == device_b.describe()  # the same text...
        assert requester_id(device_a) != requester_id(device_b)  # ...not the same identity
        csr = make_csr(subject=name("device-1"))
        assert isinstance(await manual.enroll(enroll_request(csr, device_a)), Pending)
        _approve_all(manual)
        with pytest.raises(Forbidden, match="another requester"):
            await manual.enroll(enroll_request(csr, device_b))
        assert isinstance(await manual.enroll(enroll_request(csr, device_a)), Certificates)
    finally:
        manual.close()


# ---- caps on the pending queue -------------------------------------------------------


async def test_pending_requests_are_capped_per_requester(tmp_path, store_url):
    ca = new_ca(tmp_path, store_url, approval="manual", max_pending_per_requester=3)
    try:
        mine = [enroll_request(make_csr(subject=name(f"q{i}")), user_peer("bob")) for i in range(3)]
        for request in mine:
            assert isinstance(await ca.enroll(request), Pending)
        with pytest.raises(Forbidden, match=r"3 requests of this requester .*at most 3"):
            await ca.enroll(enroll_request(make_csr(subject=name("q3")), user_peer("bob")))
        # A queued request asked again is not a new one; another requester has its own cap.
        assert isinstance(await ca.enroll(mine[0]), Pending)
        assert isinstance(await ca.enroll(enroll_request(make_csr(), user_peer("eve"))), Pending)
        assert len(ca.store.pending_list()) == 4
        # Decided requests no longer count.
        _approve_all(ca)
        assert isinstance(
            await ca.enroll(enroll_request(make_csr(subject=name("q4")), user_peer("bob"))),
            Pending,
        )
    finally:
        ca.close()


async def test_pending_requests_are_capped_in_total(tmp_path, store_url):
    ca = new_ca(tmp_path, store_url, approval="manual", max_pending=4)
    try:
        for i in range(4):
            await ca.enroll(enroll_request(make_csr(), user_peer(f"user{i}")))
        with pytest.raises(Forbidden, match=r"queue .* is full \(4, at most 4\)"):
            await ca.enroll(enroll_request(make_csr(), user_peer("user9")))
        assert len(ca.store.pending_list()) == 4
    finally:
        ca.close()


async def test_a_burst_from_one_requester_queues_at_most_the_cap(tmp_path, store_url):
    ca = new_ca(tmp_path, store_url, approval="manual")  # the default cap
    try:
        requests = [enroll_request(make_csr(), user_peer("flood")) for _ in range(60)]
        results = await asyncio.gather(*(ca.enroll(r) for r in requests), return_exceptions=True)
        assert sum(isinstance(r, Pending) for r in results) == ca.max_pending_per_requester == 10
        assert all(isinstance(r, Pending | Forbidden) for r in results)
        assert len(ca.store.pending_list()) == 10
    finally:
        ca.close()


# ---- the renewal rule ------------------------------------------------------------------


async def _device_certificate(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    first = await ca.enroll(enroll_request(make_csr(key, name("renewing")), user_peer()))
    return first.certificates[0], key


async def test_a_renewed_certificate_cannot_renew_again(tmp_path, store_url):
    ca = new_ca(tmp_path, store_url)
    try:
        cert, key = await _device_certificate(ca)
        first_csr = make_csr(key, cert.subject)
        renewed = (await ca.reenroll(enroll_request(first_csr, cert_peer(cert)))).certificates[0]
        successor = format(renewed.serial_number, "x")

        # The same request again (its answer was lost): the same certificate, nothing new.
        count = len(ca.store.issued_list())
        again = await ca.reenroll(enroll_request(first_csr, cert_peer(cert)))
        assert again.certificates == (renewed,)
        assert len(ca.store.issued_list()) == count

        # A retry that re-signed its CSR for the same key is a repeat too.
        resigned = make_csr(key, cert.subject)
        assert resigned.sha256 != first_csr.sha256
        again = await ca.reenroll(enroll_request(resigned, cert_peer(cert)))
        assert again.certificates == (renewed,)

        # Another renewal with the old certificate (a rekey): refused, told what to use.
        new_key = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(Forbidden) as refused:
            await ca.reenroll(enroll_request(make_csr(new_key, cert.subject), cert_peer(cert)))
        assert str(refused.value) == (
            f"certificate {cert.serial_number:x} was already renewed by serial {successor}; "
            "re-enroll with that certificate"
        )
        assert len(ca.store.issued_list()) == count

        # The newest certificate renews.
        third = await ca.reenroll(enroll_request(make_csr(key, cert.subject), cert_peer(renewed)))
        assert ca.store.find_issued(third.certificates[0].serial_number).renewed_from == successor
    finally:
        ca.close()


async def test_racing_renewals_of_one_certificate_issue_one(tmp_path, store_url):
    ca = new_ca(tmp_path, store_url, durable_commits=True)  # worker threads: the race is real
    try:
        cert, key = await _device_certificate(ca)
        requests = [  # rekeys, each with its own key: only one may win
            enroll_request(make_csr(subject=cert.subject), cert_peer(cert)) for _ in range(6)
        ]
        results = await asyncio.gather(*(ca.reenroll(r) for r in requests), return_exceptions=True)
        issued = [r for r in results if isinstance(r, Certificates)]
        assert len(issued) == 1
        assert all(isinstance(r, Forbidden) for r in results if r not in issued)
        successors = [r for r in ca.store.issued_list() if r.renewed_from is not None]
        assert len(successors) == 1
    finally:
        ca.close()


async def test_approved_renewals_follow_the_rule_too(tmp_path, store_url):
    auto = new_ca(tmp_path, store_url)
    try:
        cert, key = await _device_certificate(auto)
    finally:
        auto.close()
    ca = new_ca(tmp_path, store_url, approval="manual")
    try:
        one = enroll_request(make_csr(key, cert.subject), cert_peer(cert))
        two = enroll_request(make_csr(subject=cert.subject), cert_peer(cert))  # a rekey
        assert isinstance(await ca.reenroll(one), Pending)
        assert isinstance(await ca.reenroll(two), Pending)
        _approve_all(ca)
        renewed = await ca.reenroll(one)
        with pytest.raises(Forbidden, match="already renewed"):
            await ca.reenroll(two)
        assert await ca.reenroll(one) == renewed
    finally:
        ca.close()
