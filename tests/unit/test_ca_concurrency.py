"""Many requests at once, two CAs on one file, and serial collisions: never a duplicate."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from test_ca_support import enroll_request, make_csr, new_ca, user_peer

from estcoap.ca import local
from estcoap.service import ServiceFailure


@pytest.fixture
async def ca(tmp_path):
    service = new_ca(tmp_path)
    yield service
    service.close()


def _serials_in_file(path):
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT serial FROM issued")]


async def test_gather_of_many_enrolls(ca):
    results = await asyncio.gather(
        *(ca.enroll(enroll_request(make_csr(), user_peer(f"u{i}"))) for i in range(40))
    )
    serials = [r.certificates[0].serial_number for r in results]
    assert len(set(serials)) == 40
    stored = _serials_in_file(ca.paths.store)
    assert len(stored) == len(set(stored)) == 41  # + the server certificate
    assert {format(s, "x") for s in serials} <= set(stored)


async def test_two_instances_on_one_file(ca):
    other = new_ca(ca.paths.dir.parent)
    try:
        jobs = [
            service.enroll(enroll_request(make_csr(), user_peer()))
            for _ in range(15)
            for service in (ca, other)
        ]
        results = await asyncio.gather(*jobs)
        assert len({r.certificates[0].serial_number for r in results}) == 30
        stored = _serials_in_file(ca.paths.store)
        assert len(stored) == len(set(stored)) == 31
    finally:
        other.close()


async def test_a_taken_serial_is_redrawn(ca, monkeypatch):
    taken = int(ca.store.issued_list()[0].serial, 16)  # the server certificate's serial
    draws = iter([taken, taken, 0x1234_5678_9ABC])
    monkeypatch.setattr(local, "random_serial", lambda: next(draws))
    result = await ca.enroll(enroll_request(make_csr(), user_peer()))
    assert result.certificates[0].serial_number == 0x1234_5678_9ABC
    assert len(_serials_in_file(ca.paths.store)) == 2


async def test_gives_up_when_serials_keep_colliding(ca, monkeypatch):
    taken = int(ca.store.issued_list()[0].serial, 16)
    monkeypatch.setattr(local, "random_serial", lambda: taken)
    with pytest.raises(ServiceFailure, match="free serial"):
        await ca.enroll(enroll_request(make_csr(), user_peer()))
    assert len(_serials_in_file(ca.paths.store)) == 1
