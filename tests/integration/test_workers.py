"""`estcoap serve --workers 2` (estcoap.workers): two processes share the CoAPs and HTTPS
ports; a DTLS session stays on the worker that made it; a worker killed with SIGKILL is
started again while the other serves, and the devices it held retry and succeed; SIGTERM
to the parent drains both and exits 0; SIGHUP reaches both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from estcoap.ca.paths import CaPaths
from estcoap.ca.store import Store
from estcoap.client.api import EstClient, EstClientError
from estcoap.client.transport import TransportError
from estcoap.idevid import DeviceMaker
from tests.integration.serve_procs import CLI, Running, init_ca, issue_ra, relay_args, running
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(240)

DRAIN_TIMEOUT = 5
# "worker 1 pid 4242: coaps 127.0.0.1:50000 CN=... enroll label=- 2.04 12.0 ms"
REQUEST_LINE = re.compile(r"worker (\d+) pid (\d+): (coaps|https) (\S+) .* (\S+) label=")


def serve_workers(ca: Path, *args: str | Path) -> contextlib.AbstractContextManager[Running]:
    return running(
        "serve",
        "--ca",
        ca,
        "--workers",
        "2",
        "--https",
        "127.0.0.1:0",
        "--coaps",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",  # the request log lines come with the metrics hook
        "--log-level",
        "info",
        "--drain-timeout",
        str(DRAIN_TIMEOUT),
        *args,
        ready=Running.workers_serving,
        what="serve: 2 workers serving",
    )


def request_lines(served: Running) -> list[tuple[int, str, str, str]]:
    """(pid, front, peer, operation) of each request line."""
    found = []
    for line in list(served.stderr):
        match = REQUEST_LINE.search(line)
        if match:
            found.append((int(match[2]), match[3], match[4], match[5]))
    return found


def ca_and_maker(tmp_path: Path) -> tuple[Path, DeviceMaker, Path]:
    ca = init_ca(tmp_path)
    maker = DeviceMaker.create()
    trust = tmp_path / "maker.pem"
    trust.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    return ca, maker, trust


class Fleet:
    """Devices that enroll with retries: a failed attempt (a lost worker) starts again with
    a new client, so from a new source port, with the same key."""

    def __init__(self, ca: Path, maker: DeviceMaker) -> None:
        self.ca, self.maker = ca, maker
        self.certs: dict[str, x509.Certificate] = {}
        self.retries: dict[str, int] = defaultdict(int)
        self.sessions_kept = 0

    async def enroll(self, url: str, name: str, attempts: int = 6) -> None:
        idevid, id_key = self.maker.issue_idevid(name)
        key = ec.generate_private_key(ec.SECP256R1())
        for _ in range(attempts):
            try:
                async with EstClient(
                    url, trust=self.ca / "ca.pem", cert=idevid, key=id_key, timeout=4
                ) as client:
                    await client.cacerts()
                    cert = (await client.enroll(key=key, subject=f"serialNumber={name}"))[0]
                    if url.startswith("coaps"):  # a third request on the same session
                        transport = await client.transport()
                        before = await transport.tls_unique()
                        await client.cacerts()
                        assert await transport.tls_unique() == before
                        self.sessions_kept += 1
                    self.certs[name] = cert
                    return
            except (EstClientError, TransportError):
                self.retries[name] += 1
                await asyncio.sleep(0.5)
        raise AssertionError(f"{name}: no certificate after {attempts} attempts")


def check_store(ca: Path, certs: dict[str, x509.Certificate]) -> int:
    """Every row whole and signed by the CA, no serial twice, each device's certificate in
    the store exactly once; returns the number of device rows (ca init's server
    certificate is a row too)."""
    ca_cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    store = Store.open(CaPaths.of(ca).store_location(), create=False)
    try:
        rows = store.issued_list()
    finally:
        store.close()
    serials = []
    for row in rows:
        row.certificate.verify_directly_issued_by(ca_cert)
        assert int(row.serial, 16) == row.certificate.serial_number
        serials.append(row.certificate.serial_number)
    assert len(serials) == len(set(serials)), "a serial number issued twice"
    for name, cert in certs.items():
        assert serials.count(cert.serial_number) == 1, name
    devices = [r for r in rows if r.certificate.subject.rfc4514_string().startswith("2.5.4.5=")]
    return len(devices)


def test_two_workers_share_the_ports_and_a_dtls_session_stays_on_one(tmp_path: Path) -> None:
    ca, maker, trust = ca_and_maker(tmp_path)
    fleet = Fleet(ca, maker)

    with serve_workers(ca, "--trust-clients", trust) as served:
        assert len(served.pids) == 2 and set(served.urls) == {"coaps", "https"}

        async def run() -> None:
            await asyncio.gather(
                *(
                    fleet.enroll(served.urls["coaps" if i % 2 else "https"], f"dev-{i}")
                    for i in range(40)
                )
            )

        asyncio.run(run())
        wait_until(lambda: len(request_lines(served)) >= 20 * 3 + 20 * 2, 30, "the request lines")

        served.proc.send_signal(signal.SIGHUP)  # forwarded: each worker reloads
        wait_until(
            lambda: sum("reload: nothing changed" in line for line in served.stderr) >= 2,
            30,
            "both workers' reload lines",
        )
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(DRAIN_TIMEOUT + 30) == 0, served.stderr
        for pid in served.pids:  # the workers are gone with it
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    assert len(fleet.certs) == 40 and not fleet.retries
    assert fleet.sessions_kept == 20
    requests = request_lines(served)
    by_front: dict[str, set[int]] = defaultdict(set)
    pids_of_peer: dict[str, set[int]] = defaultdict(set)
    for pid, front, peer, _ in requests:
        by_front[front].add(pid)
        if front == "coaps":
            pids_of_peer[peer].add(pid)
    assert {pid for pids in by_front.values() for pid in pids} == set(served.pids), (
        "both workers served some"
    )
    # Each device's session (its source port) had all its requests on one worker.
    assert len(pids_of_peer) == 20
    assert all(len(pids) == 1 for pids in pids_of_peer.values()), pids_of_peer
    assert {pid for pids in pids_of_peer.values() for pid in pids} == set(served.pids)
    assert check_store(ca, fleet.certs) == 40
    assert not any("Traceback" in line for line in served.stderr), served.stderr


def test_a_killed_worker_is_started_again_and_its_devices_retry(tmp_path: Path) -> None:
    ca, maker, trust = ca_and_maker(tmp_path)
    fleet = Fleet(ca, maker)

    with serve_workers(ca, "--trust-clients", trust) as served:
        victim = served.pids[1]

        async def run() -> None:
            devices = [
                asyncio.create_task(
                    fleet.enroll(served.urls["coaps" if i % 2 else "https"], f"dev-{i}")
                )
                for i in range(40)
            ]
            # In the middle of the load, once the victim has answered some devices.
            await asyncio.to_thread(
                wait_until,
                lambda: sum(1 for r in request_lines(served) if r[0] == victim) >= 6,
                90,
                "the second worker's first answers",
            )
            os.kill(victim, signal.SIGKILL)
            await asyncio.gather(*devices)

        asyncio.run(run())
        wait_until(lambda: served.said("killed by signal 9"), 30, "the parent's line")
        wait_until(lambda: served.said("worker 1 started (pid"), 30, "the restart")
        restarted = [
            int(m[1])
            for line in served.stderr
            if (m := re.search(r"worker 1 started \(pid (\d+)\)", line))
        ]
        assert len(restarted) == 2 and restarted[-1] != victim
        served.pids.append(restarted[-1])
        wait_until(
            lambda: served.said(f"worker 1 (pid {restarted[-1]}) serving"), 60, "its new start"
        )

        # The new worker serves: devices reach both workers again.
        async def late() -> None:
            await asyncio.gather(
                *(
                    fleet.enroll(served.urls["coaps" if i % 2 else "https"], f"late-{i}")
                    for i in range(16)
                )
            )

        asyncio.run(late())
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(DRAIN_TIMEOUT + 30) == 0, served.stderr

    assert len(fleet.certs) == 56
    pids = {r[0] for r in request_lines(served)}
    assert restarted[-1] in pids and served.pids[0] in pids and victim in pids
    rows = check_store(ca, fleet.certs)
    # An answer lost with the worker may have left its certificate in the store: at most
    # one more row per retry, never a half-written one (check_store parsed each).
    assert 56 <= rows <= 56 + sum(fleet.retries.values())
    print(f"retries: {dict(fleet.retries)}; {rows} rows for 56 devices")


def test_a_worker_that_cannot_start_fails_the_command(tmp_path: Path) -> None:
    ca, _, _ = ca_and_maker(tmp_path)
    done = subprocess.run(
        [
            *CLI,
            "serve",
            "--ca",
            str(ca),
            "--workers",
            "2",
            "--https",
            "127.0.0.1:0",
            "--policy",
            str(tmp_path / "missing.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "missing.toml" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_gateway_with_two_workers_forwards_from_both(tmp_path: Path) -> None:
    """gateway --workers 2 in front of a serve: CoAPs devices enroll through both
    workers (each its own upstream pool), SIGTERM stops it with 0."""
    ca, maker, trust = ca_and_maker(tmp_path)
    ra = issue_ra(ca, tmp_path)
    fleet = Fleet(ca, maker)
    with serve_workers(ca, "--trust-clients", trust) as upstream:
        args = relay_args(
            "gateway",
            ca,
            upstream.urls["https"],
            ra,
            "--workers",
            "2",
            "--trust-clients",
            trust,
            "--metrics",
            "127.0.0.1:0",
            "--log-level",
            "info",
        )
        with running(*args, ready=Running.workers_serving, what="the gateway") as gateway:
            url = gateway.urls["coaps"]

            async def run() -> None:
                await asyncio.gather(*(fleet.enroll(url, f"gw-{i}") for i in range(16)))

            asyncio.run(run())
            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(DRAIN_TIMEOUT + 30) == 0, gateway.stderr
    assert len(fleet.certs) == 16
    request = re.compile(r"worker \d+ pid (\d+): gateway \S+ .* label=")
    answered = {int(m[1]) for line in gateway.stderr if (m := request.search(line))}
    assert answered == set(gateway.pids), (gateway.pids, answered)  # both workers forwarded
    assert not gateway.said("Traceback"), gateway.stderr


def test_a_cookie_made_by_one_worker_is_accepted_by_another(tmp_path: Path) -> None:
    """Forced with the port's SO_REUSEPORT group: with the parent stopped (no restarts),
    worker 0 is killed, so the first ClientHello reaches worker 1, which answers with a
    HelloVerifyRequest; worker 0 comes back, worker 1 is killed, and the ClientHello with
    the cookie reaches the new worker 0: it goes on with the handshake (to the end) instead
    of asking for a cookie again."""
    from estcoap.dtls.association import DtlsAssociation, State, check_server_name
    from estcoap.dtls.config import DtlsClientConfig
    from estcoap.dtls.contexts import client_context
    from estcoap.dtls.records import HANDSHAKE, parse_client_hello, scan_records

    ca, maker, trust = ca_and_maker(tmp_path)
    idevid, id_key = maker.issue_idevid("dev-cookie")
    (tmp_path / "dev.pem").write_bytes(idevid.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "dev.key").write_bytes(
        id_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = DtlsClientConfig.from_files(ca / "ca.pem", tmp_path / "dev.pem", tmp_path / "dev.key")

    def handshake_types(datagram: bytes) -> list[int]:
        """The handshake message types of a datagram's epoch-0 handshake records."""
        return [r[0][13] for r in scan_records(datagram) if r[1] == HANDSHAKE and r[3] == 0]

    with serve_workers(ca, "--trust-clients", trust) as served:
        port = int(served.urls["coaps"].rsplit(":", 1)[1].split("/", 1)[0])
        server = ("127.0.0.1", port)
        parent = served.proc.pid
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        try:
            os.kill(parent, signal.SIGSTOP)  # nothing is restarted while it is stopped
            os.kill(served.pids[0], signal.SIGKILL)
            wait_until(lambda: exited(served.pids[0]), 30, "worker 0 gone")
            client = DtlsAssociation.connect(
                client_context(config, check_server_name), "127.0.0.1", datagram_limit=1200
            )
            for datagram in client.datagrams_to_send():
                udp.sendto(datagram, server)
            hello_verify, _ = udp.recvfrom(4096)  # from worker 1, the only one left
            assert handshake_types(hello_verify) == [3], "a HelloVerifyRequest"
            client.receive_datagram(hello_verify)
            # (a retransmission of the first ClientHello may come first on a busy machine)
            with_cookie = [
                d
                for d in client.datagrams_to_send()
                if parse_client_hello(scan_records(d)[0][0]).cookie
            ]
            assert with_cookie

            os.kill(parent, signal.SIGCONT)
            wait_until(
                lambda: (
                    len(re.findall(r"worker 0 \(pid \d+\) serving", "".join(served.stderr))) == 2
                ),
                60,
                "worker 0 started again",
            )
            os.kill(parent, signal.SIGSTOP)
            os.kill(served.pids[1], signal.SIGKILL)  # now only the new worker 0 is left
            wait_until(lambda: exited(served.pids[1]), 30, "worker 1 gone")
            for datagram in with_cookie:
                udp.sendto(datagram, server)
            answer, _ = udp.recvfrom(4096)
            assert handshake_types(answer)[:1] == [2], "a ServerHello, not another cookie"
            for _ in range(10):  # the rest of the handshake, with the new worker 0
                client.receive_datagram(answer)
                if client.state is State.ESTABLISHED:
                    break
                for datagram in client.datagrams_to_send():
                    udp.sendto(datagram, server)
                answer, _ = udp.recvfrom(4096)
            assert client.state is State.ESTABLISHED
        finally:
            os.kill(parent, signal.SIGCONT)
            udp.close()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(DRAIN_TIMEOUT + 30) == 0, served.stderr


def exited(pid: int) -> bool:
    """The process has ended (a zombie of a stopped parent counts: its sockets are closed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
