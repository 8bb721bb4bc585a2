"""Every EST operation over real TLS on loopback: EstClient -> HTTPS front -> LocalCA."""

from __future__ import annotations

import asyncio
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.client import EstClient, EstClientError, EstPendingTimeout, generate_key
from estcoap.client.https_transport import retry_after_seconds
from estcoap.codec.csrattrs import requested_key
from tests.integration.https_fixtures import (
    PASSWORD,
    USER,
    running,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)


def _spki(obj) -> bytes:  # type: ignore[no-untyped-def]
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def test_cacerts_csrattrs_enroll_serverkeygen(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            cas = await est.cacerts()
            assert cas == [env.ca.ca_certificate]

            attrs = await est.csrattrs()
            assert requested_key(attrs).kind == "ec"

            key = generate_key()
            sans = [x509.DNSName("dev1.example")]
            chain = await est.enroll(key=key, subject="CN=dev1,O=Acme", sans=sans)
            leaf = chain[0]
            assert leaf.subject.rfc4514_string() == "CN=dev1,O=Acme"
            assert _spki(leaf) == _spki(key)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert list(san) == sans
            leaf.verify_directly_issued_by(env.ca.ca_certificate)
            assert env.ca.store.find_issued(leaf.serial_number) is not None

            new_key, skg_chain = await est.serverkeygen(subject="CN=skg1")
            assert isinstance(new_key, ec.EllipticCurvePrivateKey)
            assert _spki(skg_chain[0]) == _spki(new_key)
            assert skg_chain[0].subject.rfc4514_string() == "CN=skg1"

            transport = await est.transport()
            # All of it on one kept-alive connection (auth challenge answered in place).
            assert transport.connections_made == 1  # type: ignore[attr-defined]


async def test_reenroll_renew_and_rekey_with_client_certificate(ca_dir) -> None:
    async with running(ca_dir) as env:
        key = generate_key()
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            first = (await est.enroll(key=key, subject="CN=dev2"))[0]

        async with EstClient(env.url, trust=env.paths.ca_cert, cert=first, key=key) as est:
            renewed = (await est.reenroll())[0]
            assert renewed.subject == first.subject and _spki(renewed) == _spki(first)
            assert renewed.serial_number != first.serial_number

        # Only the newest certificate of a renewal chain renews again (LocalCA's rule).
        async with EstClient(env.url, trust=env.paths.ca_cert, cert=renewed, key=key) as est:
            new_key = generate_key()
            rekeyed = (await est.reenroll(key=new_key))[0]
            assert rekeyed.subject == first.subject and _spki(rekeyed) == _spki(new_key)

        store = env.ca.store
        assert store.find_issued(renewed.serial_number).kind == "renew"
        assert store.find_issued(rekeyed.serial_number).kind == "rekey"
        assert store.find_issued(renewed.serial_number).requester.startswith("cert:")


async def test_provision_in_one_call(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            result = await est.provision("CN=prov1")
        assert result.certificate.subject.rfc4514_string() == "CN=prov1"
        assert _spki(result.certificate) == _spki(result.private_key)
        assert result.ca_certificates == [env.ca.ca_certificate]


async def test_label_path(ca_dir) -> None:
    async with running(ca_dir, labels=("iot",)) as env:
        url = env.url + "/iot"
        async with EstClient(url, trust=env.paths.ca_cert, user=USER, password=PASSWORD) as est:
            chain = await est.enroll(key=generate_key(), subject="CN=labelled")
        assert env.ca.store.find_issued(chain[0].serial_number).label == "iot"


async def test_manual_approval_pending_then_identical_request_succeeds(ca_dir) -> None:
    async with running(ca_dir, approval="manual", retry_after=1) as env:
        waits: list[int] = []
        async with EstClient(
            env.url,
            trust=env.paths.ca_cert,
            user=USER,
            password=PASSWORD,
            on_pending=waits.append,
            max_pending_wait=30,
        ) as est:
            task = asyncio.create_task(est.enroll(key=generate_key(), subject="CN=waiting"))
            # The client repeats the request after each Retry-After (1 s): two pending
            # answers mean one identical repeat while the request was still pending.
            await wait_for(lambda: len(waits) >= 2, timeout=15, what="a repeated request")
            pending = env.ca.store.pending_list(state="pending")
            assert len(pending) == 1 and not task.done()
            assert len(env.ca.store.pending_list()) == 1  # the repeat made no new request
            env.ca.store.approve(pending[0].id)
            chain = await asyncio.wait_for(task, 10)
        assert chain[0].subject.rfc4514_string() == "CN=waiting"
        assert waits and all(w == 1 for w in waits)


async def test_pending_wait_is_bounded(ca_dir) -> None:
    async with running(ca_dir, approval="manual", retry_after=1) as env:
        async with EstClient(
            env.url,
            trust=env.paths.ca_cert,
            user=USER,
            password=PASSWORD,
            max_pending_wait=30,
            max_pending_attempts=2,
        ) as est:
            with pytest.raises(EstPendingTimeout, match="still pending"):
                await est.enroll(key=generate_key(), subject="CN=never")


async def test_bootstrap_with_pinned_fingerprint(ca_dir) -> None:
    async with running(ca_dir) as env:
        good = env.ca.ca_certificate.fingerprint(hashes.SHA256()).hex(":")
        async with EstClient(env.url, bootstrap=True, fingerprint=good) as est:
            assert await est.cacerts() == [env.ca.ca_certificate]
            assert est.trust == [env.ca.ca_certificate]  # kept as the explicit anchors
        async with EstClient(env.url, bootstrap=True) as est:
            await est.cacerts()
            assert est.bootstrap_fingerprint == good.replace(":", "")
        async with EstClient(env.url, bootstrap=True, fingerprint="00" * 32) as est:
            with pytest.raises(EstClientError, match="pinned SHA-256 fingerprint"):
                await est.cacerts()


async def test_untrusted_server_is_refused_without_bootstrap(ca_dir, tmp_path) -> None:
    from estcoap.ca import init_ca

    other = init_ca(tmp_path / "other", ["127.0.0.1"])
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=other.ca_cert) as est:
            with pytest.raises(EstClientError, match="not trusted"):
                await est.cacerts()


async def test_keep_alive_and_tcp_nodelay(ca_dir) -> None:
    async with running(ca_dir) as env:
        async with EstClient(env.url, trust=env.paths.ca_cert) as est:
            for _ in range(5):
                await est.cacerts()
            assert (await est.transport()).connections_made == 1  # type: ignore[attr-defined]
            handlers = env.server.runner.server.connections  # type: ignore[union-attr]
            assert len(handlers) == 1
            sock = handlers[0].transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_retry_after_forms() -> None:
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412450.0) == 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0
