"""Many requests at once, two CAs on one store, and serial collisions: never a duplicate;
on SQLite and on PostgreSQL (conftest.store_url)."""

from __future__ import annotations

import asyncio

import pytest
from test_ca_support import enroll_request, make_csr, new_ca, user_peer

from estcoap.ca import Store, local
from estcoap.service import ServiceFailure


@pytest.fixture
async def ca(tmp_path, store_url):
    service = new_ca(tmp_path, store_url)
    yield service
    service.close()


def _serials_in_store(ca):
    # Every row, read through a connection of its own (not the CA's records API).
    with Store.open(ca.paths.store_location(), create=False) as store, store._read() as cur:
        return [row[0] for row in cur.execute("SELECT serial FROM issued").fetchall()]


async def test_gather_of_many_enrolls(ca):
    results = await asyncio.gather(
        *(ca.enroll(enroll_request(make_csr(), user_peer(f"u{i}"))) for i in range(40))
    )
    serials = [r.certificates[0].serial_number for r in results]
    assert len(set(serials)) == 40
    stored = _serials_in_store(ca)
    assert len(stored) == len(set(stored)) == 41  # + the server certificate
    assert {format(s, "x") for s in serials} <= set(stored)


async def test_two_instances_on_one_store(ca):
    other = new_ca(ca.paths.dir.parent)
    try:
        jobs = [
            service.enroll(enroll_request(make_csr(), user_peer()))
            for _ in range(15)
            for service in (ca, other)
        ]
        results = await asyncio.gather(*jobs)
        assert len({r.certificates[0].serial_number for r in results}) == 30
        stored = _serials_in_store(ca)
        assert len(stored) == len(set(stored)) == 31
    finally:
        other.close()


async def test_a_taken_serial_is_redrawn(ca, monkeypatch):
    taken = int(ca.store.issued_list()[0].serial, 16)  # the server certificate's serial
    draws = iter([taken, taken, 0x1234_5678_9ABC])
    monkeypatch.setattr(local, "random_serial", lambda: next(draws))
    result = await ca.enroll(enroll_request(make_csr(), user_peer()))
    assert result.certificates[0].serial_number == 0x1234_5678_9ABC
    assert len(_serials_in_store(ca)) == 2


async def test_gives_up_when_serials_keep_colliding(ca, monkeypatch):
    taken = int(ca.store.issued_list()[0].serial, 16)
    monkeypatch.setattr(local, "random_serial", lambda: taken)
    with pytest.raises(ServiceFailure, match="free serial"):
        await ca.enroll(enroll_request(make_csr(), user_peer()))
    assert len(_serials_in_store(ca)) == 1
