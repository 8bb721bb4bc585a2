"""Duplicate detection over DTLS (RFC 7252 s4.5): a retransmitted CON request is answered
with the first response and never processed twice; remembered Message IDs expire in
batches (estcoap.dtls.message_manager), never before their EXCHANGE_LIFETIME."""

from __future__ import annotations

import asyncio

import aiocoap
import aiocoap.resource as resource
import pytest
from aiocoap.numbers.constants import TransportTuning
from aiocoap.tokenmanager import TokenManager

from estcoap.dtls import create_server_context
from estcoap.dtls.message_manager import BatchedExpiryMessageManager
from tests.integration.dtls_fixtures import (
    RawClient,
    client_config,
    server_config,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(30)


class Counter(resource.Resource):
    """POST: how many times it ran, so a second run shows."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.runs += 1
        return aiocoap.Message(code=aiocoap.CHANGED, payload=f"run {self.runs}".encode())


def _con(mid: int, token: bytes) -> bytes:
    message = aiocoap.Message(code=aiocoap.POST, payload=b"x", uri_path=("count",))
    message.mtype, message.mid, message.token = aiocoap.CON, mid, token
    return message.encode()


async def _answer(raw: RawClient) -> aiocoap.Message:
    return aiocoap.Message.decode(await asyncio.wait_for(raw.inbox.get(), 5))


async def test_a_retransmitted_request_gets_the_first_answer_and_runs_once(pki) -> None:
    counter = Counter()
    site = resource.Site()
    site.add_resource(["count"], counter)
    context, transport = await create_server_context(site, [("127.0.0.1", 0)], server_config(pki))
    raw = RawClient(client_config(pki), ("127.0.0.1", transport.bound_addresses[0][1]))
    try:
        await raw.open()
        await raw.handshake()
        for _ in range(3):  # the first send, then two retransmissions (same MID)
            raw.association.send(_con(0x4242, b"tok1"))
            raw.flush()
            answer = await _answer(raw)
            assert answer.mtype == aiocoap.ACK and answer.mid == 0x4242
            assert answer.payload == b"run 1"
        assert counter.runs == 1
        raw.association.send(_con(0x4243, b"tok2"))  # a new request runs
        raw.flush()
        assert (await _answer(raw)).payload == b"run 2"
    finally:
        raw.close()
        await context.shutdown()


class _ShortLived(TransportTuning):
    EXCHANGE_LIFETIME = 0.3


async def test_remembered_ids_expire_in_batches_but_never_early() -> None:
    # Only the duplicate-detection state is exercised: a real token manager, no transport.
    context = aiocoap.Context(loop=asyncio.get_running_loop())
    manager = BatchedExpiryMessageManager(TokenManager(context))
    start = manager.loop.time()
    for mid in range(3):
        message = aiocoap.Message(code=aiocoap.POST, transport_tuning=_ShortLived())
        message.remote, message.mid = object(), mid
        assert manager._deduplicate_message(message) is False
    assert len(manager._recent_messages) == 3
    assert len(manager._expiring) <= 2  # a batch per second: one, or two across a tick
    while manager._recent_messages:
        await asyncio.sleep(0.05)
        assert manager.loop.time() - start < 2.5, "entries outlived their batch"
    assert manager.loop.time() - start >= 0.3  # not before their lifetime
    assert manager._sweep_timer is None and not manager._expiring


async def test_past_the_limit_the_oldest_are_forgotten_first(caplog) -> None:
    context = aiocoap.Context(loop=asyncio.get_running_loop())
    manager = BatchedExpiryMessageManager(TokenManager(context), limit=5)
    remote = object()
    for mid in range(8):
        message = aiocoap.Message(code=aiocoap.POST)
        message.remote, message.mid = remote, mid
        assert manager._deduplicate_message(message) is False
    assert sorted(mid for _, mid in manager._recent_messages) == [3, 4, 5, 6, 7]
    assert sum(len(keys) for _, keys in manager._expiring) == 5
    assert "forgetting the oldest early" in caplog.text
    manager._sweep_timer.cancel()
    with pytest.raises(ValueError, match="positive"):
        BatchedExpiryMessageManager(TokenManager(context), limit=0)


async def test_one_busy_session_forgets_its_own_oldest_not_the_others() -> None:
    context = aiocoap.Context(loop=asyncio.get_running_loop())
    manager = BatchedExpiryMessageManager(TokenManager(context), limit=100, per_remote_limit=3)
    busy, quiet = object(), object()
    for remote, mids in ((quiet, range(2)), (busy, range(10, 15))):
        for mid in mids:
            message = aiocoap.Message(code=aiocoap.POST, transport_tuning=_ShortLived())
            message.remote, message.mid = remote, mid
            manager._deduplicate_message(message)
    remembered = sorted((remote is busy, mid) for remote, mid in manager._recent_messages)
    assert remembered == [(False, 0), (False, 1), (True, 12), (True, 13), (True, 14)]
    while manager._recent_messages:  # everything expires, the per-session books too
        await asyncio.sleep(0.05)
    assert manager._by_remote == {} and not manager._expiring


async def test_a_session_that_ends_takes_its_remembered_requests_with_it(pki) -> None:
    # The key is the session's remote, which a retransmission can only come back on: once
    # the session ends, its requests (and their responses) are dead weight for 247 s.
    site = resource.Site()
    site.add_resource(["count"], Counter())
    context, transport = await create_server_context(site, [("127.0.0.1", 0)], server_config(pki))
    manager = transport._mman
    server = ("127.0.0.1", transport.bound_addresses[0][1])
    ending, staying = RawClient(client_config(pki), server), RawClient(client_config(pki), server)
    try:
        for mid, raw in ((0x10, ending), (0x20, staying)):
            await raw.open()
            await raw.handshake()
            raw.association.send(_con(mid, bytes([mid])))
            raw.flush()
            assert (await _answer(raw)).code == aiocoap.CHANGED
        assert len(manager._recent_messages) == 2
        ending.association.close()  # close_notify
        ending.flush()
        await wait_for(
            lambda: len(manager._recent_messages) == 1, what="the ended session forgotten"
        )
        [(remote, mid)] = manager._recent_messages
        assert mid == 0x20 and manager._recent_messages[(remote, mid)] is not None  # its answer
        assert list(manager._by_remote) == [remote]
        assert sum(len(batch) for _, batch in manager._expiring) == 1
        staying.association.send(_con(0x20, b"\x20"))  # a retransmission is still answered
        staying.flush()
        assert (await _answer(staying)).payload == b"run 2"
    finally:
        ending.close()
        staying.close()
        await context.shutdown()


async def test_forgetting_a_remote_leaves_the_others_and_their_expiry() -> None:
    context = aiocoap.Context(loop=asyncio.get_running_loop())
    manager = BatchedExpiryMessageManager(TokenManager(context))
    gone, kept = object(), object()
    for remote, mids in ((gone, range(3)), (kept, range(10, 12))):
        for mid in mids:
            message = aiocoap.Message(code=aiocoap.POST, transport_tuning=_ShortLived())
            message.remote, message.mid = remote, mid
            manager._deduplicate_message(message)
    manager.forget_remote(gone)
    manager.forget_remote(object())  # a remote with nothing remembered: nothing happens
    assert sorted(mid for _, mid in manager._recent_messages) == [10, 11]
    assert list(manager._by_remote) == [kept]
    while manager._recent_messages:  # the others still expire on time
        await asyncio.sleep(0.05)
    assert manager._by_remote == {} and not manager._expiring
