"""Two `estcoap serve` instances (127.0.0.2, 127.0.0.3) sharing one PostgreSQL database and
one CA directory, behind nginx's stream module on 127.0.0.1 (UDP for CoAPs hashed on the
client's address and port, TCP for HTTPS): the recipe of docs/scaling.md, run as written.

200 devices enroll through the balancer over CoAPs and HTTPS while one instance is killed
with SIGKILL: every device ends with its certificate (those the dead one held retry and
land on the other), each certificate is in the store once, no serial repeats, both
instances served some. A request that waits for manual approval on one instance is
approved with the CLI against the database and picked up on the other."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca.create import init_ca
from estcoap.client.api import EstClient, EstPendingTimeout
from estcoap.idevid import DeviceMaker
from tests.conftest import missing, require
from tests.integration.test_workers import Fleet, check_store
from tests.polling import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

CLI = [sys.executable, "-m", "estcoap.cli"]
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
HOSTS = ("127.0.0.2", "127.0.0.3")
DEVICES = 200


def free_port(host: str, kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Instance:
    host: str
    proc: subprocess.Popen[str]
    stderr: list[str] = field(default_factory=list)

    def requests(self) -> int:
        return sum(1 for line in self.stderr if re.search(r" (coaps|https) \S+ .* label=", line))


@contextlib.contextmanager
def instances(ca: Path, coaps: int, https: int, *args: str) -> Iterator[list[Instance]]:
    """One `serve` per host of HOSTS, each on its own address, same ports, same CA dir."""
    started: list[Instance] = []
    try:
        for host in HOSTS:
            proc = subprocess.Popen(
                [
                    *CLI,
                    "serve",
                    "--ca",
                    str(ca),
                    "--coaps",
                    f"{host}:{coaps}",
                    "--https",
                    f"{host}:{https}",
                    "--metrics",
                    f"{host}:0",
                    "--log-level",
                    "info",
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            instance = Instance(host, proc)
            threading.Thread(
                target=lambda i=instance: i.stderr.extend(iter(i.proc.stderr.readline, "")),
                daemon=True,
            ).start()
            started.append(instance)
        for instance in started:  # started together, then each waited for
            for _ in range(3):  # https, coaps, metrics
                line = instance.proc.stdout.readline()  # type: ignore[union-attr]
                assert line.startswith("serving"), line + "".join(instance.stderr)
        yield started
    finally:
        for instance in started:
            if instance.proc.poll() is None:
                instance.proc.send_signal(signal.SIGKILL)
            instance.proc.wait(30)


NGINX_CONF = """\
load_module {module};
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 2048; }}
stream {{
    # CoAPs: one client address and port stays on one instance (its DTLS association);
    # a failed instance is skipped for 10 s after one error (ICMP port unreachable).
    upstream coaps {{
        hash $remote_addr$remote_port consistent;
        server {a}:{coaps} max_fails=1 fail_timeout=10s;
        server {b}:{coaps} max_fails=1 fail_timeout=10s;
    }}
    upstream https {{
        hash $remote_addr$remote_port consistent;
        server {a}:{https} max_fails=1 fail_timeout=10s;
        server {b}:{https} max_fails=1 fail_timeout=10s;
    }}
    server {{
        listen 127.0.0.1:{front_coaps} udp;
        proxy_pass coaps;
        proxy_timeout 20s;
    }}
    server {{
        listen 127.0.0.1:{front_https};
        proxy_pass https;
        proxy_connect_timeout 2s;
    }}
}}
"""


@contextlib.contextmanager
def nginx(workdir: Path, coaps: int, https: int) -> Iterator[tuple[int, int]]:
    """nginx in the foreground with its own config, pid and logs in workdir."""
    binary = require("nginx", "the balancer test runs Debian's nginx (nginx-light)")
    if not STREAM_MODULE.exists():
        missing(str(STREAM_MODULE), "the balancer test needs nginx's stream module")
    front_coaps = free_port("127.0.0.1", socket.SOCK_DGRAM)
    front_https = free_port("127.0.0.1", socket.SOCK_STREAM)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            module=STREAM_MODULE,
            dir=workdir,
            a=HOSTS[0],
            b=HOSTS[1],
            coaps=coaps,
            https=https,
            front_coaps=front_coaps,
            front_https=front_https,
        )
    )
    proc = subprocess.Popen(
        [str(binary), "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", front_https)) == 0

        wait_until(lambda: listening() or proc.poll() is not None, 30, "nginx listening")
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        yield front_coaps, front_https
    finally:
        # Fast shutdown: a graceful one (SIGQUIT) waits for the UDP sessions' proxy_timeout
        # (20 s), longer than the wait below, and nothing here tests it.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def make_ca(tmp_path: Path, store_url: str) -> tuple[Path, DeviceMaker, Path]:
    ca = tmp_path / "ca"
    # The clients reach the instances as 127.0.0.1 (nginx) or by their own address.
    init_ca(ca, ["127.0.0.1", *HOSTS], store_url=store_url)
    maker = DeviceMaker.create()
    trust = tmp_path / "maker.pem"
    trust.write_bytes(maker.certificate.public_bytes(serialization.Encoding.PEM))
    return ca, maker, trust


def test_two_instances_behind_nginx_share_one_postgresql(tmp_path: Path, pg_url: str) -> None:
    ca, maker, trust = make_ca(tmp_path, pg_url)
    fleet = Fleet(ca, maker)
    coaps = free_port(HOSTS[0], socket.SOCK_DGRAM)
    https = free_port(HOSTS[0], socket.SOCK_STREAM)

    with (
        instances(ca, coaps, https, "--trust-clients", str(trust)) as pair,
        nginx(tmp_path / "nginx", coaps, https) as (front_coaps, front_https),
    ):
        urls = {
            "coaps": f"coaps://127.0.0.1:{front_coaps}",
            "https": f"https://127.0.0.1:{front_https}",
        }
        victim = pair[1]

        async def run() -> None:
            limit = asyncio.Semaphore(24)  # devices in flight at once

            async def device(i: int) -> None:
                async with limit:
                    await fleet.enroll(urls["coaps" if i % 2 else "https"], f"dev-{i}", 8)

            tasks = [asyncio.create_task(device(i)) for i in range(DEVICES)]
            # In the middle of the load, once the victim has answered some devices.
            await asyncio.to_thread(
                wait_until, lambda: victim.requests() >= 30, 120, "the second instance's answers"
            )
            victim.proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)

        asyncio.run(run())
        served = [instance.requests() for instance in pair]

    assert len(fleet.certs) == DEVICES
    assert all(served), f"requests per instance: {served}"
    rows = check_store(ca, fleet.certs)  # once each, no serial twice, every row whole
    assert DEVICES <= rows <= DEVICES + sum(fleet.retries.values())
    print(f"requests per instance {served}; {sum(fleet.retries.values())} retries; {rows} rows")


def test_an_approval_made_with_the_cli_is_seen_by_the_other_instance(
    tmp_path: Path, pg_url: str
) -> None:
    ca, maker, trust = make_ca(tmp_path, pg_url)
    coaps = free_port(HOSTS[0], socket.SOCK_DGRAM)
    https = free_port(HOSTS[0], socket.SOCK_STREAM)
    idevid, id_key = maker.issue_idevid("dev-wait")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "dev-wait")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )

    async def ask(host: str, attempts: int) -> x509.Certificate:
        async with EstClient(
            f"https://{host}:{https}",
            trust=ca / "ca.pem",
            cert=idevid,
            key=id_key,
            timeout=10,
            max_pending_attempts=attempts,
        ) as client:
            return (await client.enroll(csr))[0]

    with instances(
        ca,
        coaps,
        https,
        "--trust-clients",
        str(trust),
        "--approval",
        "manual",
        "--retry-after",
        "1",
    ):
        with pytest.raises(EstPendingTimeout):
            asyncio.run(ask(HOSTS[0], 0))  # instance A queues it
        listed = subprocess.run(
            [*CLI, "pending", "list", str(ca), "--state", "pending"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        request_id = re.search(r"^\s*(\d+)\s.*dev-wait", listed.stdout, re.M)
        assert request_id, listed.stdout
        approved = subprocess.run(
            [*CLI, "pending", "approve", str(ca), request_id[1]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert approved.returncode == 0, approved.stderr
        cert = asyncio.run(ask(HOSTS[1], 3))  # the same request, polled on instance B
    assert cert.subject.rfc4514_string() == "2.5.4.5=dev-wait"
    assert check_store(ca, {"dev-wait": cert}) == 1
