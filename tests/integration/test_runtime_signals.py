"""Signals of a real `estcoap serve` process (estcoap.runtime): SIGTERM in the middle of
enrollments drains and exits 0 with a consistent store; SIGHUP reloads the trust anchors for
new handshakes while an established DTLS session goes on; a broken file keeps the old ones."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca.store import Store
from estcoap.client.api import EstClient, EstClientError
from estcoap.client.transport import TransportError
from estcoap.idevid import DeviceMaker
from tests.integration.serve_procs import Running, cli, init_ca, issue_ra, relay_args, running
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(180)

DRAIN_TIMEOUT = 3


def serve(*args: str | Path) -> contextlib.AbstractContextManager[Running]:
    """serve with both fronts, once both say where they serve."""
    fronts = ("--https", "127.0.0.1:0", "--coaps", "127.0.0.1:0", "--log-level", "info")
    return running("serve", *fronts, *args, ready=lambda s: len(s.urls) == 2, what="serve")


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def device(maker: DeviceMaker, name: str, url: str, ca: Path, timeout: float = 10) -> EstClient:
    idevid, key = maker.issue_idevid(name)
    return EstClient(url, trust=ca / "ca.pem", cert=idevid, key=key, timeout=timeout)


async def enroll(client: EstClient, name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (await client.enroll(key=key, subject=f"serialNumber={name}"))[0]


def test_sighup_reloads_trust_anchors_and_keeps_established_sessions(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    old_maker, new_maker = DeviceMaker.create(), DeviceMaker.create()
    trust = tmp_path / "makers.pem"
    trust.write_bytes(pem(old_maker.certificate))

    async def scenario(served: Running) -> None:
        coaps = served.urls["coaps"]
        established = device(old_maker, "dev-old", coaps, ca)
        newcomer = device(new_maker, "dev-new", coaps, ca, timeout=3)
        async with established, newcomer:
            await enroll(established, "dev-old")
            with pytest.raises((EstClientError, TransportError)):
                await enroll(newcomer, "dev-new")  # the maker is not trusted yet

            trust.write_bytes(pem(old_maker.certificate, new_maker.certificate))
            served.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_until, lambda: served.said("reload: trust anchors"), 30, "the reload line"
            )
            assert served.said("reload: trust anchors 1 -> 2 certificates")

        # A device of the new maker is accepted in a new handshake ...
        async with device(new_maker, "dev-new2", coaps, ca) as newcomer2:
            assert (await enroll(newcomer2, "dev-new2")).subject.rfc4514_string() == (
                "2.5.4.5=dev-new2"
            )
        # ... over HTTPS too (the TLS context learnt the anchor).
        async with device(new_maker, "dev-new3", served.urls["https"], ca) as over_https:
            await enroll(over_https, "dev-new3")

    async def established_goes_on(served: Running) -> None:
        coaps = served.urls["coaps"]
        async with device(old_maker, "dev-a", coaps, ca) as kept:
            await enroll(kept, "dev-a")
            transport = await kept.transport()
            before = await transport.tls_unique()
            trust.write_bytes(pem(new_maker.certificate))  # the old maker is dropped
            served.stderr.clear()
            served.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_until, lambda: served.said("reload: trust anchors"), 30, "the reload line"
            )
            # The same association sends another request after the reload: no new handshake
            # (its tls-unique, from the handshake's Finished, is the same).
            await kept.cacerts()
            assert await transport.tls_unique() == before

            # A broken anchors file keeps the old settings and says why.
            trust.write_text("not a certificate\n")
            served.stderr.clear()
            served.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_until, lambda: served.said("reload: trust anchors"), 30, "the reload error"
            )
            line = next(s for s in served.stderr if "reload: trust anchors" in s)
            assert "ERROR" in line and "not reloaded, the old ones stay" in line, line
            assert f"{trust}: not a PEM certificate file" in line, line
        async with device(new_maker, "dev-b", coaps, ca) as still_trusted:
            await enroll(still_trusted, "dev-b")  # the anchors of before the broken file

    with serve("--ca", ca, "--trust-clients", trust) as served:
        asyncio.run(scenario(served))
        asyncio.run(established_goes_on(served))
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
    assert not any("Traceback" in line for line in served.stderr), served.stderr


def test_sigterm_during_fifty_enrollments_drains_and_exits_0(tmp_path: Path) -> None:
    """40 devices (CoAPs and HTTPS) enrolling when SIGTERM comes, 10 more after it: each
    has its certificate or a clean failure it can retry, none hangs, the process exits 0
    and the store is whole."""
    ca = init_ca(tmp_path)
    maker = DeviceMaker.create()
    trust = tmp_path / "maker.pem"
    trust.write_bytes(pem(maker.certificate))
    outcomes: dict[str, object] = {}  # device name -> its certificate or its failure
    done_by: dict[str, int] = {"coaps": 0, "https": 0}

    async def one(url: str, name: str) -> None:
        try:
            async with device(maker, name, url, ca, timeout=5) as client:
                outcomes[name] = await enroll(client, name)
                done_by[url.split(":", 1)[0]] += 1
        except (EstClientError, TransportError) as exc:  # a clean failure: try again later
            outcomes[name] = exc

    async def fleet(served: Running) -> None:
        def url(i: int) -> str:
            return served.urls["coaps" if i % 2 else "https"]

        tasks = [asyncio.create_task(one(url(i), f"dev-{i}")) for i in range(40)]
        # Some have their certificate, the rest are on their way: stop the server now.
        await asyncio.to_thread(
            wait_until, lambda: min(done_by.values()) >= 3, 60, "3 enrollments over each front"
        )
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(wait_until, lambda: served.said("stopping: no new"), 30, "the stop")
        # Devices that come now find no listener, or no answer to their ClientHello.
        late = [asyncio.create_task(one(url(i), f"late-{i}")) for i in range(10)]
        # Every device ends, within the drain and its own timeouts: none hangs.
        await asyncio.wait_for(asyncio.gather(*tasks, *late), DRAIN_TIMEOUT + 30)

    with serve("--ca", ca, "--trust-clients", trust, "--drain-timeout", DRAIN_TIMEOUT) as served:
        asyncio.run(fleet(served))
        assert served.proc.wait(DRAIN_TIMEOUT + 20) == 0, served.stderr
    assert len(outcomes) == 50
    assert not any(isinstance(o, x509.Certificate) for n, o in outcomes.items() if "late" in n)
    issued = [o for o in outcomes.values() if isinstance(o, x509.Certificate)]
    failed = [o for o in outcomes.values() if not isinstance(o, x509.Certificate)]
    assert min(done_by.values()) >= 3
    assert not any("Traceback" in line for line in served.stderr), served.stderr

    # The store holds no half-written record: every issued row parses and is one the CA
    # signed; every device that got a certificate has its row; pending rows are whole.
    with contextlib.closing(sqlite3.connect(ca / "est.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = Store.open(ca / "est.sqlite3", create=False)
    try:
        ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
        rows = store.issued_list()
        for row in rows:
            cert = row.certificate
            cert.verify_directly_issued_by(ca_cert)
            assert int(row.serial, 16) == cert.serial_number
        serials = {row.certificate.serial_number for row in rows}
        assert {c.serial_number for c in issued} <= serials
        for pending in store.pending_list():
            assert pending.state in ("pending", "approved", "denied")
    finally:
        store.close()
    print(
        f"{len(issued)} issued, {len(failed)} refused cleanly while stopping:",
        sorted({str(f)[:90] for f in failed}),
    )


def test_proxy_reloads_its_users_on_sighup_and_stops_with_0(tmp_path: Path) -> None:
    """The gateway/proxy side of the runtime: users read again, the old password of a
    changed user refused at once, a clean stop."""
    ca = init_ca(tmp_path)
    ra = issue_ra(ca, tmp_path)
    users = tmp_path / "users.txt"
    cli("users", "add", users, "alice", stdin="first-pw\n")

    async def enroll_as(url: str, name: str, password: str) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        async with EstClient(
            url, trust=ca / "ca.pem", user=name, password=password, timeout=10
        ) as client:
            return (await client.enroll(key=key, subject=f"CN={name}"))[0]

    with serve("--ca", ca) as upstream:
        args = relay_args(
            "proxy", ca, upstream.urls["https"], ra, "--users-file", users, "--log-level", "info"
        )
        with running(*args, ready=lambda s: "https" in s.urls, what="the proxy") as proxy:
            url = proxy.urls["https"]
            asyncio.run(enroll_as(url, "alice", "first-pw"))
            with pytest.raises(EstClientError):
                asyncio.run(enroll_as(url, "bob", "bob-pw"))  # no such user yet

            for name, password in (("bob", "bob-pw"), ("alice", "second-pw")):
                cli("users", "add", users, name, stdin=password + "\n")
            proxy.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: proxy.said("reload: users"), 30, "the reload line")
            assert proxy.said("reload: users 1 -> 2 (+bob)"), proxy.stderr

            asyncio.run(enroll_as(url, "bob", "bob-pw"))
            asyncio.run(enroll_as(url, "alice", "second-pw"))
            with pytest.raises(EstClientError):
                asyncio.run(enroll_as(url, "alice", "first-pw"))  # the old password is gone

            proxy.proc.send_signal(signal.SIGTERM)
            assert proxy.proc.wait(30) == 0
    assert not proxy.said("Traceback"), proxy.stderr


def test_gateway_takes_a_new_maker_on_sighup_and_stops_with_0(tmp_path: Path) -> None:
    """The gateway's DTLS front learns a new trust anchor on SIGHUP, as serve's does."""
    ca = init_ca(tmp_path)
    ra = issue_ra(ca, tmp_path)
    old_maker, new_maker = DeviceMaker.create(), DeviceMaker.create()
    trust = tmp_path / "makers.pem"
    trust.write_bytes(pem(old_maker.certificate))

    with serve("--ca", ca, "--trust-clients", trust) as upstream:
        logged = ("--trust-clients", trust, "--log-level", "info")
        args = relay_args("gateway", ca, upstream.urls["https"], ra, *logged)
        with running(*args, ready=lambda s: "coaps" in s.urls, what="the gateway") as gateway:
            url = gateway.urls["coaps"]

            async def enroll_new(name: str, timeout: float) -> x509.Certificate:
                async with device(new_maker, name, url, ca, timeout=timeout) as client:
                    return await enroll(client, name)

            with pytest.raises((EstClientError, TransportError)):
                asyncio.run(enroll_new("gw-new-1", 3))  # not trusted by the gateway yet
            trust.write_bytes(pem(old_maker.certificate, new_maker.certificate))
            upstream.proc.send_signal(signal.SIGHUP)  # the CA vouches for the maker too
            gateway.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: gateway.said("reload: trust anchors"), 30, "reload")
            wait_until(lambda: upstream.said("reload: trust anchors"), 30, "upstream reload")
            assert gateway.said("reload: trust anchors 1 -> 2 certificates"), gateway.stderr
            asyncio.run(enroll_new("gw-new-2", 10))

            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(30) == 0
    assert not gateway.said("Traceback"), gateway.stderr
