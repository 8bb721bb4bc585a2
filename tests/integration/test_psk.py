"""Certificate-less first enrollment over PSK DTLS (issue 15), over real UDP on loopback:
aiocoap's tinydtls transports on both sides, LocalCA behind the server's resource tree.

A device with a one-time bootstrap key enrolls for the subject its key is bound to; the
key is then spent (a second handshake with it fails), a wrong key fails the handshake, a
CSR for another subject is refused 4.03 without spending the key, and the certificate it
got re-enrolls over certificate DTLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import LocalCA
from estcoap.ca.policy import IssuancePolicy
from estcoap.client import EstClient
from estcoap.client.api import EstClientError
from estcoap.coap.psk import CoapsPskServer, start_coaps_psk_server
from estcoap.coap.server import start_coaps_server
from tests.conftest import require
from tests.integration.coaps_fixtures import Deployment, make_deployment

require("DTLSSocket", "PSK DTLS runs on DTLSSocket (the psk extra)")

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
OTHER_KEY = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")


@dataclass
class PskSite:
    server: CoapsPskServer
    ca: LocalCA
    deployment: Deployment

    def client(self, identity: str, key: bytes = KEY) -> EstClient:
        return EstClient(self.server.url, psk=(identity, key), timeout=20)


@contextlib.asynccontextmanager
async def psk_site(root: Path, policy: IssuancePolicy | None = None) -> AsyncIterator[PskSite]:
    deployment = make_deployment(root)
    ca = LocalCA.open(deployment.paths.dir, policy=policy)
    server = await start_coaps_psk_server(ca, ("127.0.0.1", 0), psk_keys=ca.store.psk_usable_key)
    try:
        yield PskSite(server, ca, deployment)
    finally:
        await server.close()
        ca.close()


async def collect_garbage() -> None:
    """A full collection once the loop has let go of what the last exchange held: what
    only the client refers to must survive it."""
    await asyncio.sleep(0)
    gc.collect()


def name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


async def test_a_bootstrap_key_enrolls_once_for_its_subject(tmp_path: Path) -> None:
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="serialNumber=sn-1,CN=dev-1")
        async with site.client("dev-1") as est:
            provisioned = await est.provision()  # the subject from the CSR template
        bound = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "dev-1"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, "sn-1"),
            ]
        )
        assert provisioned.certificate.subject == bound
        assert provisioned.certificate.issuer == site.ca.ca_certificate.subject
        assert provisioned.ca_certificates == [site.ca.ca_certificate]
        record = site.ca.store.find_issued(provisioned.certificate.serial_number)
        assert record is not None and record.requester == "psk:dev-1"
        assert site.ca.store.psk_get("dev-1").uses_left == 0  # type: ignore[union-attr]

        # Spent: tinydtls finds no key for the identity, so the handshake fails.
        async with site.client("dev-1") as est:
            with pytest.raises(EstClientError, match="handshake refused for identity 'dev-1'"):
                await est.cacerts()


async def test_a_wrong_or_unknown_key_fails_the_handshake(tmp_path: Path) -> None:
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
        # An unknown identity: the server has no key, tinydtls answers with an alert.
        async with site.client("nobody") as est:
            with pytest.raises(EstClientError, match="handshake refused for identity 'nobody'"):
                await est.cacerts()
        # A wrong key: the server cannot verify the client's Finished and drops it, so the
        # client hears nothing (bounded here by a short timeout: no answer is the point).
        async with EstClient(site.server.url, psk=("dev-1", OTHER_KEY), timeout=4) as est:
            with pytest.raises(EstClientError, match="handshake as 'dev-1' did not complete"):
                await est.cacerts()
        assert site.ca.store.psk_get("dev-1").uses_left == 1  # type: ignore[union-attr]
        async with site.client("dev-1") as est:  # the right key still works
            assert await est.cacerts() == [site.ca.ca_certificate]


async def test_an_expired_key_fails_the_handshake(tmp_path: Path) -> None:
    async with psk_site(tmp_path) as site:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        site.ca.store.psk_add("old", KEY, subject="CN=old", expires=past)
        async with site.client("old") as est:
            with pytest.raises(EstClientError, match="handshake refused"):
                await est.cacerts()


async def test_another_subject_is_refused_403_and_spends_nothing(tmp_path: Path) -> None:
    # Even an open policy (any subject for any authenticated client) keeps a PSK to its
    # subject: the key is all that identifies the device.
    async with psk_site(tmp_path, IssuancePolicy.open()) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
        key = ec.generate_private_key(ec.SECP256R1())
        async with site.client("dev-1") as est:
            with pytest.raises(EstClientError) as refused:
                await est.enroll(key=key, subject=name("dev-2"))
            assert refused.value.status == "4.03"
            assert "subject must be CN=dev-1" in refused.value.diagnostic
            assert site.ca.store.psk_get("dev-1").uses_left == 1  # type: ignore[union-attr]
            # On the same association, the bound subject is issued.
            chain = await est.enroll(key=key, subject=name("dev-1"))
        assert chain[0].subject == name("dev-1")


async def test_a_key_removed_after_the_handshake_is_refused_403(tmp_path: Path) -> None:
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
        async with site.client("dev-1") as est:
            await est.cacerts()  # handshake done while the key was there
            # Between calls nothing but the client refers to its association; a collection
            # must not end it (a new handshake would be refused: the key is gone).
            await collect_garbage()
            site.ca.store.psk_remove("dev-1")
            with pytest.raises(EstClientError) as refused:
                await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject=name("dev-1"))
        assert refused.value.status == "4.03"
        assert "was removed" in refused.value.diagnostic


async def test_racing_requests_spend_a_one_time_key_once(tmp_path: Path) -> None:
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
        clients = [site.client("dev-1"), site.client("dev-1")]
        try:
            for est in clients:
                await est.cacerts()  # both handshakes done while the key had its use
            await collect_garbage()  # and kept, whenever a collection runs
            outcomes = await asyncio.gather(
                *(
                    est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject=name("dev-1"))
                    for est in clients
                ),
                return_exceptions=True,
            )
        finally:
            for est in clients:
                await est.close()
        issued = [o for o in outcomes if isinstance(o, list)]
        refused = [o for o in outcomes if isinstance(o, EstClientError)]
        assert len(issued) == 1 and len(refused) == 1, outcomes
        # The loser is answered on its association: 4.03, not a refused new handshake.
        assert refused[0].status == "4.03", repr(refused[0])
        assert "no use left" in refused[0].diagnostic or "used up" in refused[0].diagnostic
        psk_issued = [r for r in site.ca.store.issued_list() if r.requester == "psk:dev-1"]
        assert len(psk_issued) == 1


async def test_a_psk_certificate_reenrolls_over_certificate_dtls(tmp_path: Path) -> None:
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1", uses=1)
        async with site.client("dev-1") as est:
            first = await est.provision()
        paths = site.deployment.paths
        cert_server = await start_coaps_server(
            site.ca, [("127.0.0.1", 0)], cert_chain=paths.server_cert, key=paths.server_key
        )
        try:
            async with EstClient(
                cert_server.url,
                trust=paths.ca_cert,
                cert=first.certificate,
                key=first.private_key,
                timeout=20,
            ) as est:
                renewed = await est.reenroll()
        finally:
            await cert_server.close()
        assert renewed[0].subject == first.certificate.subject
        record = site.ca.store.find_issued(renewed[0].serial_number)
        assert record is not None
        assert record.renewed_from == format(first.certificate.serial_number, "x")
        assert record.requester == "cert:CN=dev-1"


async def test_a_psk_device_gets_no_proof_of_possession_demand(tmp_path: Path) -> None:
    """--require-pop cannot hold on a channel without tls-unique: the PSK device is not
    asked for it (the key, spent with the certificate, stands in), and enrolls."""
    deployment = make_deployment(tmp_path)
    ca = LocalCA.open(deployment.paths.dir, require_pop=True)
    server = await start_coaps_psk_server(ca, ("127.0.0.1", 0), psk_keys=ca.store.psk_usable_key)
    try:
        ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
        async with EstClient(server.url, psk=("dev-1", KEY), timeout=20) as est:
            provisioned = await est.provision()
        assert provisioned.certificate.subject == name("dev-1")
    finally:
        await server.close()
        ca.close()


async def tinydtls_handshake(
    server: tuple[str, int], local_port: int, identity: bytes, *, close_notify: bool
) -> bool:
    """A PSK handshake from a given local port with tinydtls directly (DTLSSocket), ended
    with close_notify or left as a device that reboots does; True when it completed."""
    from DTLSSocket import dtls

    loop = asyncio.get_running_loop()
    connected: asyncio.Future[bool] = loop.create_future()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            session.handleMessage(connection, data)

    transport, _ = await loop.create_datagram_endpoint(
        Protocol, local_addr=("127.0.0.1", local_port), remote_addr=server
    )

    def event(level: int, code: int) -> int:
        if code == 0x01DE and not connected.done():  # DTLS_EVENT_CONNECTED
            connected.set_result(True)
        return 0

    session = dtls.DTLS(
        read=lambda sender, data: len(data),
        write=lambda recipient, data: transport.sendto(data) or len(data),
        event=event,
        pskId=identity,
        pskStore={identity: KEY},
    )
    connection = session.connect("::1", 1234)
    try:
        async with asyncio.timeout(10):  # a bound, not a measurement: silence is the failure
            await connected
        if close_notify:
            session.close(connection)
            await asyncio.sleep(0.2)  # let it go out before the socket closes
        return True
    except TimeoutError:
        return False
    finally:
        transport.close()
        await asyncio.sleep(0)  # the socket closes on the loop's next turn: the port is free


@pytest.mark.parametrize("close_notify", [True, False])
async def test_a_new_handshake_from_a_known_port_works(tmp_path: Path, close_notify: bool) -> None:
    """A device that reboots (no close_notify) or a port the OS gives another client gets
    a new handshake (RFC 6347 s4.2.8); a close_notify frees the association at once."""
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1", uses=3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = ("127.0.0.1", site.server.port)
        for _ in range(2):  # the same port twice
            assert await tinydtls_handshake(server, port, b"dev-1", close_notify=close_notify)
            await asyncio.sleep(0.1)  # the server reads the close_notify, if any
            assert site.server.associations == (0 if close_notify else 1)


async def test_associations_are_bounded(tmp_path: Path) -> None:
    """Each source address gets tinydtls state before any cookie: at most max_associations
    are held, the least recently active evicted first."""
    deployment = make_deployment(tmp_path)
    ca = LocalCA.open(deployment.paths.dir)
    ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
    server = await start_coaps_psk_server(
        ca, ("127.0.0.1", 0), psk_keys=ca.store.psk_usable_key, max_associations=2
    )
    try:
        for _ in range(4):  # four source ports, no close_notify
            assert await tinydtls_handshake(
                ("127.0.0.1", server.port), 0, b"dev-1", close_notify=False
            )
            assert server.associations <= 2
        assert server.associations == 2
        async with EstClient(server.url, psk=("dev-1", KEY), timeout=20) as est:
            assert await est.cacerts() == [ca.ca_certificate]
    finally:
        await server.close()
        ca.close()


async def test_serverkeygen_over_psk_follows_the_policy(tmp_path: Path) -> None:
    """skg is allowed to a PSK device when the policy allows it (the default), for its bound
    subject, spending its key; a policy that keeps key generation on devices refuses it."""
    async with psk_site(tmp_path) as site:
        site.ca.store.psk_add("dev-1", KEY, subject="CN=dev-1")
        async with site.client("dev-1") as est:
            key, chain = await est.serverkeygen(subject=name("dev-1"))
        assert chain[0].subject == name("dev-1")
        assert chain[0].public_key().public_numbers() == key.public_key().public_numbers()
        assert site.ca.store.psk_get("dev-1").uses_left == 0  # type: ignore[union-attr]

    no_keygen = IssuancePolicy.from_mapping({"serverkeygen": False})
    async with psk_site(tmp_path / "again", no_keygen) as site:
        site.ca.store.psk_add("dev-2", KEY, subject="CN=dev-2")
        async with site.client("dev-2") as est:
            with pytest.raises(EstClientError) as refused:
                await est.serverkeygen(subject=name("dev-2"))
        assert refused.value.status == "4.03"
        assert "serverkeygen is not granted to psk:dev-2" in refused.value.diagnostic
        assert site.ca.store.psk_get("dev-2").uses_left == 1  # type: ignore[union-attr]
